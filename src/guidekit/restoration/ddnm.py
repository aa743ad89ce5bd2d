"""DDNM (Wang et al. 2023): the range-null space decomposition x̂0 ← A†y + (I − A†A)x̂0 at every step, and DDNM+,
which for noisy y (σ_y > 0) corrects only as much as the step's own noise can hide (its eq. 17–19)."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import Denoiser
from guidekit.diffusion.parameterization import eps_to_x0
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.guidance.clip import X0Transform
from guidekit.restoration.operators import Operator
from guidekit.sampling.steps import Step


class DDNM(X0Transform):
    """Denoiser → denoiser whose x̂0 is A†y + (I − A†A)x̂0 (ε re-derived from x_t), so it drives any sampler."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, op: Operator, y: torch.Tensor):
        super().__init__(denoiser, schedule)
        self.op, self.y = op, y

    def x0(self, x0):
        return x0 - self.op.pinv(self.op(x0) - self.y.to(device=x0.device, dtype=x0.dtype))


class DDNMPlus(Step):
    """DDNM+ on DDIM(η)'s step x_s = a·x̂0 + c·x_t + σ·n (η = 1: DDPM's posterior): in the spectral coordinate i of
    A (singular value s_i, where A†y carries noise σ_y/s_i) the correction is scaled by λ_i = min(1, σ/(a·σ_y/s_i))
    and the added noise there shrinks to γ_i = σ² − (a·λ_i·σ_y/s_i)²; σ_y = 0 is DDNM on that step exactly."""

    def __init__(self, schedule: NoiseSchedule, op: Operator, y: torch.Tensor, sigma_y: float, eta: float = 1.0):
        super().__init__(schedule)
        check(0 < eta <= 1, f"DDNM+ hides y's noise in the step's own noise, so it needs a stochastic step: "
                            f"--sampler ddpm, or ddim with --eta in (0, 1], got eta {eta} (or --sigma-y 0: y taken as exact, DDNM)")
        self.op, self.y, self.sigma_y, self.eta = op, y, sigma_y, eta

    def __call__(self, eps_fn, x, t, s, noise):
        ab_t, ab_s = self.ab(t), self.ab(s)
        x0 = eps_to_x0(x, eps_fn(x, t), ab_t)
        sigma = self.eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        c = max(1 - ab_s - sigma ** 2, 0.0) ** 0.5 / (1 - ab_t) ** 0.5
        a = ab_s ** 0.5 - c * ab_t ** 0.5  # x̂0's coefficient in the step
        y = self.y.to(device=x.device, dtype=x0.dtype)
        noise_of = lambda sv: a * self.sigma_y / sv  # noqa: E731  the noise A†y's coordinate brings into x_s
        lam = lambda sv: torch.where(noise_of(sv) <= sigma, torch.ones_like(sv), sigma / noise_of(sv))  # noqa: E731
        x0 = x0 - self.op.in_range(self.op.pinv(self.op(x0) - y), lam)
        x_s = a * x0 + c * x
        if sigma > 0:
            n = noise.randn_like(x).to(x0.dtype)
            gamma = lambda sv: (sigma ** 2 - (a * lam(sv) * self.sigma_y / sv) ** 2).clamp(min=0).sqrt()  # noqa
            x_s = x_s + sigma * (n - self.op.project(n)) + self.op.in_range(n, gamma)
        return x_s, x0
