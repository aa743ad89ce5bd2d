"""Guidance interval (Kynkäänniemi et al. 2024): guide only at noise levels σ ∈ (σ_lo, σ_hi], one pass elsewhere."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check


def sigma_of(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """EDM's noise level σ = √((1 − ᾱ_t)/ᾱ_t) of timesteps t (x_t/√ᾱ_t = x0 + σ·ε)."""
    ab = schedule.alpha_bar(t.detach().cpu()).double()
    return ((1 - ab) / ab).sqrt()


class GuidanceInterval:
    """Which rows of a call to guide: those whose σ lies in (sigma_lo, sigma_hi]; the others take ε(x, c) alone,
    so the unconditional pass (half of CFG's evaluations) is skipped there."""

    def __init__(self, schedule: NoiseSchedule, sigma_lo: float, sigma_hi: float):
        check(all(isinstance(v, (int, float)) and not math.isnan(v) for v in (sigma_lo, sigma_hi))
              and 0 <= sigma_lo < sigma_hi,
              f"the guidance interval (σ_lo, σ_hi] needs 0 <= σ_lo < σ_hi (σ = √((1−ᾱ)/ᾱ); 'inf' is allowed for "
              f"σ_hi), got ({sigma_lo}, {sigma_hi}]; e.g. --guidance-interval 0.3,5")
        self.schedule, self.sigma_lo, self.sigma_hi = schedule, float(sigma_lo), float(sigma_hi)

    def active(self, t: torch.Tensor) -> torch.Tensor:
        """Boolean (B,): the rows of t inside the interval."""
        sigma = sigma_of(self.schedule, t)
        return (sigma > self.sigma_lo) & (sigma <= self.sigma_hi)
