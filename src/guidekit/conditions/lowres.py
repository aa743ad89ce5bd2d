"""Low-resolution hints (a tile-style spatial condition for ControlNet, Zhang et al. 2023), scored by RMSE."""

from __future__ import annotations

import kornia
import torch

from guidekit.conditions.base import Condition, number
from guidekit.errors import check


class LowRes(Condition):
    """Area-average down by `factor` (32 → 8), nearest-neighbour back up to the image size, in [0, 1].

    Nearest upsampling keeps exactly the low-res pixels as blocks (nothing is invented), so the hint is its own
    low-res and the full-size RMSE equals the RMSE at low resolution.
    """

    name = "lowres"
    higher_is_better = {"l2": False}

    def __init__(self, factor: int = 4):
        self.factor = number(factor, "factor", 1, 64, integer=True)

    def extract(self, gray: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Blocky low-res image (B, 1, H, W) in [0, 1]."""
        h, w = gray.shape[-2:]
        f = self.factor
        check(h % f == 0 and w % f == 0, f"lowres needs image sides divisible by factor={f}, got {h}x{w}: "
              "pick a factor that divides the resolution (e.g. 4 for 32x32)")
        small = kornia.geometry.transform.resize(gray, (h // f, w // f), interpolation="area")
        return kornia.geometry.transform.resize(small, (h, w), interpolation="nearest")

    def compare(self, hint: torch.Tensor, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        """Root mean squared difference (in [0, 1] units) of the samples' low-res and the hint."""
        return {"l2": (self.extract(gray) - hint).square().mean((1, 2, 3)).sqrt()}
