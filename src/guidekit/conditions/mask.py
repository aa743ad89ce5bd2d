"""Silhouette-mask hints, a two-class segmentation condition as in ControlNet (Zhang et al. 2023), scored by IoU."""

from __future__ import annotations

import kornia
import torch

from guidekit.conditions.base import Condition, number


class Mask(Condition):
    """Garment vs background: blur, threshold the intensity in [0, 1], close small holes; adherence is IoU.

    Fashion-MNIST's background is exactly 0, so a low threshold (0.05, about 13/255) keeps dark garments whole.
    """

    name = "mask"
    higher_is_better = {"iou": True}

    def __init__(self, threshold: float = 0.05, sigma: float = 0.7, close: int = 3):
        self.threshold = number(threshold, "threshold", 0.0, 1.0)
        self.sigma = number(sigma, "sigma", 0.0, 5.0)
        self.close = number(close, "close", 1, 15, integer=True)

    def extract(self, gray: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask (B, 1, H, W) of 0 and 1."""
        if self.sigma > 0:
            gray = kornia.filters.gaussian_blur2d(gray, 3, (self.sigma, self.sigma))
        mask = (gray > self.threshold).float()
        if self.close > 1:
            mask = kornia.morphology.closing(mask, torch.ones(self.close, self.close, device=mask.device))
        return mask

    def compare(self, hint: torch.Tensor, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intersection over union of the samples' masks and the hint's (hint > 0.5); 1 when both are empty."""
        pred, true = self.extract(gray) > 0.5, hint > 0.5
        inter = (pred & true).sum((1, 2, 3)).float()
        union = (pred | true).sum((1, 2, 3)).float()
        return {"iou": torch.where(union > 0, inter / union.clamp(min=1), 1.0)}
