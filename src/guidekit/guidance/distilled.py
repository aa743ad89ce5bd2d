"""Guidance distillation (Meng et al. 2023): a w-conditioned student gives CFG's ε̂_w in one network pass."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.errors import check


class DistilledGuidance:
    """Denoiser → denoiser for a guidance-distilled student: hands the network w (cond["w"], one per row), so one
    pass gives the teacher's (1+w)·ε(x, c) − w·ε(x, ∅); w must lie in the range the student was trained on."""

    def __init__(self, denoiser: Denoiser, w: float, w_range: tuple[float, float]):
        lo, hi = w_range
        check(math.isfinite(w) and lo <= w <= hi,
              f"this guidance-distilled student was trained for w in [{lo:g}, {hi:g}] (guidekit distill --w-range), "
              f"got w = {w:g}; choose a w in that range or distil again with a wider --w-range")
        self.denoiser, self.w = denoiser, float(w)

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.denoiser(x, t, {**cond, "w": torch.full((x.shape[0],), self.w, device=x.device)})
