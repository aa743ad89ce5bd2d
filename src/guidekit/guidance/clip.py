"""Static thresholding of x̂0 to the data range (Ho et al. 2020's clipped sampler), as a denoiser transform."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.diffusion.parameterization import eps_to_x0, x0_to_eps
from guidekit.diffusion.schedule import NoiseSchedule


class ClipX0:
    """Denoiser → denoiser whose implied x̂0 is clamped to [lo, hi]; ε recomputed from the clamped x̂0."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, lo: float = -1.0, hi: float = 1.0):
        self.denoiser, self.schedule, self.lo, self.hi = denoiser, schedule, lo, hi

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        eps = self.denoiser(x, t, cond)
        ab = self.schedule.alpha_bar(t.detach().cpu())
        return x0_to_eps(x, eps_to_x0(x, eps, ab).clamp(self.lo, self.hi), ab)
