"""Guides for SDEdit (Meng et al. 2022): stroke paintings made from images, and user drawings read from files."""

from __future__ import annotations

import os

import kornia
import torch
import torch.nn.functional as F

from guidekit.errors import check


def stroke_painting(x: torch.Tensor, levels: int = 5, cell: int = 4, sigma: float = 0.5) -> torch.Tensor:
    """A crude painting of x (B, C, H, W) in [−1, 1] (SDEdit's stroke inputs): blur, coarsen, quantize into flat blobs.

    Gaussian blur (sigma) → area-average down by `cell` → bilinear back up → `levels` flat grey levels evenly spaced
    over [−1, 1] (so the black background stays −1). Deterministic.
    """
    check(isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point(),
          f"stroke_painting needs a float tensor (B, C, H, W) in [-1, 1], got "
          f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    check(isinstance(levels, int) and 2 <= levels <= 256, f"levels = {levels!r}: use an integer from 2 to 256, e.g. 4")
    h, w = x.shape[-2:]
    check(isinstance(cell, int) and cell >= 1 and h % cell == 0 and w % cell == 0,
          f"cell = {cell!r} must be a positive integer dividing the image size {h}x{w}, e.g. 4 for 32x32")
    check(sigma >= 0, f"sigma = {sigma} must be >= 0 (0 = no blur)")
    x = x.float().clamp(-1, 1)
    if sigma > 0:
        k = 2 * int(3 * sigma) + 1
        x = kornia.filters.gaussian_blur2d(x, (k, k), (sigma, sigma), border_type="replicate")
    if cell > 1:
        x = F.interpolate(F.avg_pool2d(x, cell), size=(h, w), mode="bilinear", align_corners=False)
    q = levels - 1
    return ((x + 1) / 2 * q).round().clamp(0, q) / q * 2 - 1


def load_guide(path: str | os.PathLike, size: int = 32, invert: bool = False) -> torch.Tensor:
    """A user's drawing as a (1, 1, size, size) guide in [−1, 1]: gray, RGB or transparent (→ black) image files.

    invert=True turns a dark drawing on white paper into Fashion-MNIST's light garment on black.
    """
    from guidekit.conditions.load import load_condition_image

    gray = load_condition_image(path, size, 1, what="guide image")
    return (1 - gray if invert else gray) * 2 - 1
