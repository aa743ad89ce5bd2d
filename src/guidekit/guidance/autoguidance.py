"""Autoguidance (Karras et al. 2024): D = D_bad + (1+w)·(D_good − D_bad), the bad model a weaker version of the good."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.guidance.cfg import ClassifierFreeGuidance, positive_cond


class Autoguidance(ClassifierFreeGuidance):
    """Denoiser → denoiser: ε̂ = ε_good(x, c) + w·(ε_good(x, c) − ε_bad(x, c)); w = 0 is the good model alone.

    Both see the same condition; the bad model is a smaller or less-trained model of the same conditioning (an
    earlier checkpoint of the run). `bad_keys` drops cond entries the bad model does not read (a ControlNet hint).
    Rules and intervals apply as in CFG, with ε_bad in the place of ε(x, ∅)."""

    def __init__(self, good: Denoiser, bad: Denoiser, w: float, rule=None, interval=None, bad_drops=("hint",)):
        super().__init__(good, w, rule, interval)
        self.bad, self.bad_drops = bad, tuple(bad_drops)

    def reset(self) -> None:
        super().reset()
        reset_state(self.bad)

    def pair(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        cond = positive_cond(cond)
        return self.denoiser(x, t, cond), self.bad(x, t, {k: v for k, v in cond.items() if k not in self.bad_drops})
