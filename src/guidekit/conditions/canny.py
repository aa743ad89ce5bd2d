"""Canny edge hints, ControlNet's canny condition (Zhang et al. 2023), scored by edge F1."""

from __future__ import annotations

import math

import kornia
import torch

from guidekit.conditions.base import Condition, edge_scores, number
from guidekit.errors import check


class Canny(Condition):
    """Binary Canny edges (kornia) of the gray image in [0, 1]; adherence is edge F1 with a pixel tolerance.

    Thresholds are on kornia's unnormalised Sobel magnitude after a Gaussian blur (a unit step reaches about
    2.6): low 0.15 / high 0.3 keep the outlines of even the darkest garments plus strong interior seams.
    """

    name = "canny"
    higher_is_better = {"edge_f1": True, "edge_precision": True, "edge_recall": True}

    def __init__(self, low_threshold: float = 0.15, high_threshold: float = 0.3, sigma: float = 1.0,
                 tolerance: int = 1):
        self.low_threshold = number(low_threshold, "low_threshold", 1e-3, 100.0)
        self.high_threshold = number(high_threshold, "high_threshold", 1e-3, 100.0)
        check(low_threshold <= high_threshold, f"low_threshold={low_threshold} is above high_threshold="
              f"{high_threshold}: the low (weak-edge) threshold must be at most the high one")
        self.sigma = number(sigma, "sigma", 0.1, 5.0)
        self.tolerance = number(tolerance, "tolerance", 0, 8, integer=True)

    def extract(self, gray: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Edges (B, 1, H, W) of 0 and 1."""
        size = 2 * math.ceil(2 * self.sigma) + 1
        _, edges = kornia.filters.canny(gray, self.low_threshold, self.high_threshold, kernel_size=size,
                                        sigma=(self.sigma, self.sigma))
        return edges

    def compare(self, hint: torch.Tensor, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        """Edge precision / recall / F1 of the samples' edges against the hint's (hint > 0.5)."""
        return edge_scores(self.extract(gray) > 0.5, hint > 0.5, self.tolerance)
