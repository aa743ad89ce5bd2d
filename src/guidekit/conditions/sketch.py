"""Scribble hints, after ControlNet's synthesized user sketches (Zhang et al. 2023), scored by edge F1."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F

from guidekit.conditions.base import Condition, edge_scores, number
from guidekit.conditions.canny import Canny

FIELD = 4  # the jitter's random displacements live on a FIELD x FIELD grid, smoothly upsampled


def thin(mask: torch.Tensor) -> torch.Tensor:
    """Morphological thinning (Zhang-Suen) of a binary (B, 1, H, W) map to 1-pixel, connected strokes."""
    m = mask.float()
    h, w = m.shape[-2:]
    changed = True
    while changed:
        changed = False
        for first in (True, False):
            p = F.pad(m, (1, 1, 1, 1))
            # neighbours clockwise from north: N, NE, E, SE, S, SW, W, NW
            n = [p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                 for dy, dx in ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]
            count = sum(n)
            crossings = sum((n[i] < n[(i + 1) % 8]).float() for i in range(8))
            north, east, south, west = n[0], n[2], n[4], n[6]
            side = north * east * south + east * south * west if first else north * east * west + north * south * west
            drop = (m > 0) & (count >= 2) & (count <= 6) & (crossings == 1) & (side == 0)
            if bool(drop.any()):
                m = m.masked_fill(drop, 0.0)
                changed = True
    return m


class Sketch(Condition):
    """Canny edges merged by a `merge`-pixel dilation, thinned to strokes, moved by a smooth random field, dilated.

    The jitter (up to `jitter` pixels per axis) is drawn from `generator`, so a seeded generator gives the same
    sketch; adherence re-extracts the sketch without jitter and scores edge F1 within `tolerance` pixels
    (keep tolerance >= jitter so a hint scores F1 = 1 against its own image).
    """

    name = "sketch"
    higher_is_better = {"edge_f1": True, "edge_precision": True, "edge_recall": True}

    def __init__(self, low_threshold: float = 0.15, high_threshold: float = 0.3, merge: int = 3,
                 jitter: float = 1.0, stroke_width: int = 2, tolerance: int = 2):
        self._canny = Canny(low_threshold, high_threshold)
        self.low_threshold, self.high_threshold = low_threshold, high_threshold
        self.merge = number(merge, "merge", 1, 7, integer=True)
        self.jitter = number(jitter, "jitter", 0.0, 4.0)
        self.stroke_width = number(stroke_width, "stroke_width", 1, 5, integer=True)
        self.tolerance = number(tolerance, "tolerance", 0, 8, integer=True)

    def extract(self, gray: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Strokes (B, 1, H, W) of 0 and 1."""
        return self.strokes(gray, generator, self.jitter)

    def strokes(self, gray: torch.Tensor, generator: torch.Generator | None, jitter: float) -> torch.Tensor:
        """Thinned, merged edges, moved by up to `jitter` pixels, dilated to stroke_width."""
        lines = self._canny.extract(gray)
        if self.merge > 1:
            lines = kornia.morphology.dilation(lines, torch.ones(self.merge, self.merge, device=lines.device))
        lines = thin(lines)
        if jitter > 0:
            lines = self._displace(lines, generator, jitter)
        if self.stroke_width > 1:
            kernel = torch.ones(self.stroke_width, self.stroke_width, device=lines.device)
            lines = kornia.morphology.dilation(lines, kernel)
        return lines

    def _displace(self, lines: torch.Tensor, generator: torch.Generator | None, jitter: float) -> torch.Tensor:
        """Move each stroke pixel by a smooth random field in [-jitter, jitter] pixels, rounded (none is lost)."""
        b, _, h, w = lines.shape
        device = generator.device if generator is not None else lines.device
        coarse = torch.rand(b, 2, FIELD, FIELD, generator=generator, device=device).to(lines.device)
        field = F.interpolate((2 * coarse - 1) * jitter, size=(h, w), mode="bilinear", align_corners=True)
        n, c, y, x = (lines > 0.5).nonzero(as_tuple=True)
        new_y = (y + field[n, 0, y, x]).round().long().clamp(0, h - 1)
        new_x = (x + field[n, 1, y, x]).round().long().clamp(0, w - 1)
        out = torch.zeros_like(lines)
        out[n, c, new_y, new_x] = 1.0
        return out

    def compare(self, hint: torch.Tensor, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        """Edge precision / recall / F1 of the samples' unjittered sketch against the hint (hint > 0.5)."""
        return edge_scores(self.strokes(gray, None, 0.0) > 0.5, hint > 0.5, self.tolerance)
