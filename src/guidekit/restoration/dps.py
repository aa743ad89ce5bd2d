"""DPS (Chung et al. 2023, diffusion posterior sampling): after the sampler's step, x_s ← x_s − ζ·∇_{x_t}‖y − A(x̂0(x_t))‖,
which is the paper's ζ_i·∇‖y − A(x̂0)‖² with ζ_i = ζ / (2‖y − A(x̂0)‖); MCG (Chung et al. 2022) is this step followed
by the projection onto the noised measurement (restoration.projection)."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.parameterization import eps_to_x0
from guidekit.errors import check
from guidekit.restoration.operators import Operator
from guidekit.sampling.steps import Step


class DPS(Step):
    """Any sampler step plus DPS's gradient step; the network runs once per step, with a backward pass through it."""

    def __init__(self, inner: Step, op: Operator, y: torch.Tensor, zeta: float = 1.0):
        super().__init__(inner.schedule)
        check(math.isfinite(zeta) and zeta > 0, f"DPS's step size zeta must be > 0 (e.g. 1), got {zeta}")
        self.inner, self.op, self.y, self.zeta = inner, op, y, zeta

    def reset(self) -> None:
        self.inner.reset()

    def __call__(self, eps_fn, x, t, s, noise):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = eps_fn(x_in, t)
            x0 = eps_to_x0(x_in, eps, self.ab(t))
            y = self.y.to(device=x.device, dtype=x0.dtype)
            residual = (y - self.op(x0)).flatten(1).norm(dim=1)  # per image: images never depend on their batch
            (grad,) = torch.autograd.grad(residual.sum(), x_in)
        eps = eps.detach()
        x_s, x0 = self.inner(lambda _x, _t: eps, x, t, s, noise)
        return x_s - self.zeta * grad.to(x_s.dtype), x0
