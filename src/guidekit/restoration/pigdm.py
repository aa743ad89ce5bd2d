"""ΠGDM (Song et al. 2023, pseudo-inverse-guided diffusion): p(x0 | x_t) ≈ N(x̂0, r_t²I) with r_t² = 1 − ᾱ_t gives
∇log p(y | x_t) = (∂x̂0/∂x_t)ᵀ·Aᵀ(r_t²AAᵀ + σ_y²I)⁻¹(y − A x̂0), one vector-Jacobian product through the network;
ε̃ = ε − w·√(1 − ᾱ_t)·that (σ_y = 0: Aᵀ(AAᵀ)⁺ = A†, the paper's noiseless form)."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.diffusion.parameterization import _bcast, eps_to_x0
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.restoration.operators import Operator


class PiGDM:
    """Denoiser → denoiser adding ΠGDM's likelihood score (w = 1: the paper's weight; exact for x0 ~ N(μ, I))."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, op: Operator, y: torch.Tensor, sigma_y: float = 0.0,
                 w: float = 1.0):
        self.denoiser, self.schedule, self.op, self.y, self.sigma_y, self.w = denoiser, schedule, op, y, sigma_y, w

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        ab = _bcast(self.schedule.alpha_bar(t.detach().cpu()), x)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = self.denoiser(x_in, t, cond)
            x0 = eps_to_x0(x_in, eps, ab)
            y = self.y.to(device=x.device, dtype=x0.dtype)
            r2 = (1 - ab).to(x0.dtype)
            v = self.op.adjoint(self.op.gram_solve(y - self.op(x0.detach()), r2, self.sigma_y ** 2))
            (score,) = torch.autograd.grad((x0 * v).sum(), x_in)
        return (eps.detach() - self.w * (1 - ab).sqrt().to(eps.dtype) * score.to(eps.dtype)).detach()
