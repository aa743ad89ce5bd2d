"""Static thresholding of x̂0 to the data range (Ho et al. 2020's clipped sampler), as a denoiser transform."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.diffusion.parameterization import eps_to_x0, x0_to_eps
from guidekit.diffusion.schedule import NoiseSchedule


class X0Transform:
    """Denoiser → denoiser that changes the implied x̂0 (`x0(x̂0)`, in subclasses) and recomputes ε from it and x_t."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule):
        self.denoiser, self.schedule = denoiser, schedule

    def reset(self) -> None:
        reset_state(self.denoiser)

    def x0(self, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        eps = self.denoiser(x, t, cond)
        ab = self.schedule.alpha_bar(t.detach().cpu())
        return x0_to_eps(x, self.x0(eps_to_x0(x, eps, ab)), ab)


class ClipX0(X0Transform):
    """Denoiser → denoiser whose implied x̂0 is clamped to [lo, hi]; ε recomputed from the clamped x̂0."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, lo: float = -1.0, hi: float = 1.0):
        super().__init__(denoiser, schedule)
        self.lo, self.hi = lo, hi

    def x0(self, x0):
        return x0.clamp(self.lo, self.hi)
