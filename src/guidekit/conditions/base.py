"""Condition base class: ControlNet hints (Zhang et al. 2023) from images, and adherence scores for samples."""

from __future__ import annotations

import kornia
import torch

from guidekit.errors import check

RANGE_SLACK = 0.1  # inputs may overshoot their range by this much (unclamped model outputs); values are clamped
MIN_SIZE = 8


def to_gray01(x: torch.Tensor, what: str) -> torch.Tensor:
    """Check a (B, 1 or 3, H, W) float image batch in [-1, 1] and return it as float32 gray in [0, 1]."""
    check(isinstance(x, torch.Tensor), f"{what} must be a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    check(x.dim() == 4, f"{what} must have 4 dimensions (B, C, H, W), got shape {tuple(x.shape)}; "
          "add a batch dimension with x.unsqueeze(0)")
    check(x.is_floating_point(), f"{what} must be float in [-1, 1], got {x.dtype}; map uint8 pixels with "
          "x.float() / 127.5 - 1")
    b, c, h, w = x.shape
    check(b > 0, f"{what} is an empty batch (shape {tuple(x.shape)}): pass at least one image")
    check(c in (1, 3), f"{what} has {c} channels (shape {tuple(x.shape)}): pass gray (1) or RGB (3) images")
    check(h >= MIN_SIZE and w >= MIN_SIZE, f"{what} is {h}x{w}: conditions need images of at least "
          f"{MIN_SIZE}x{MIN_SIZE}")
    x = x.detach().float()
    check(bool(torch.isfinite(x).all()), f"{what} contains NaN or infinite values: check the model outputs")
    lo, hi = float(x.min()), float(x.max())
    check(lo >= -1 - RANGE_SLACK and hi <= 1 + RANGE_SLACK, f"{what} values span {lo:.3g}..{hi:.3g} but must "
          "lie in [-1, 1]: map [0, 1] images with 2 * x - 1 and uint8 pixels with x / 127.5 - 1")
    x = ((x + 1) / 2).clamp(0, 1)
    return kornia.color.rgb_to_grayscale(x) if c == 3 else x


def check_hint(hint: torch.Tensor, samples: torch.Tensor, channels: int) -> torch.Tensor:
    """Check a (B or 1, channels, H, W) hint in [0, 1] against samples (B, C, H, W); return it float32, expanded."""
    check(isinstance(hint, torch.Tensor), f"hint must be a torch.Tensor, got {type(hint).__name__}")
    b, _, h, w = samples.shape
    want = f"(B, {channels}, H, W) = ({b}, {channels}, {h}, {w}) or batch 1"
    check(hint.dim() == 4 and hint.is_floating_point(), f"hint must be a float tensor {want}, got "
          f"{hint.dtype} {tuple(hint.shape)}; pass the hint the condition returned")
    check(hint.shape[0] in (1, b) and tuple(hint.shape[1:]) == (channels, h, w), f"hint shape "
          f"{tuple(hint.shape)} does not match samples {tuple(samples.shape)}: expected {want}")
    hint = hint.detach().float().to(samples.device)
    check(bool(torch.isfinite(hint).all()), "hint contains NaN or infinite values: re-extract it")
    lo, hi = float(hint.min()), float(hint.max())
    check(lo >= -RANGE_SLACK and hi <= 1 + RANGE_SLACK, f"hint values span {lo:.3g}..{hi:.3g} but hints "
          "lie in [0, 1]: pass the condition's output, not an image in [-1, 1] (map those with (x + 1) / 2)")
    return hint.clamp(0, 1).expand(b, -1, -1, -1)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by a (2 radius + 1)² square: pixels within `radius` (chessboard distance) of the mask."""
    if radius == 0:
        return mask
    kernel = torch.ones(2 * radius + 1, 2 * radius + 1, device=mask.device)
    return kornia.morphology.dilation(mask.float(), kernel) > 0.5


def _ratio(hits: torch.Tensor, total: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """hits / total, or 1 when both maps are empty and 0 when only the other one has pixels."""
    return torch.where(total > 0, hits / total.clamp(min=1), (other == 0).float())


def edge_scores(pred: torch.Tensor, true: torch.Tensor, tolerance: int) -> dict[str, torch.Tensor]:
    """Per-image edge precision, recall and F1 of binary maps, a match being a pixel within `tolerance`."""
    pred, true = pred.bool(), true.bool()
    n_pred, n_true = pred.sum((1, 2, 3)).float(), true.sum((1, 2, 3)).float()
    precision = _ratio((pred & dilate(true, tolerance)).sum((1, 2, 3)).float(), n_pred, n_true)
    recall = _ratio((true & dilate(pred, tolerance)).sum((1, 2, 3)).float(), n_true, n_pred)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    return {"edge_f1": f1, "edge_precision": precision, "edge_recall": recall}


class Condition:
    """A ControlNet condition (Zhang et al. 2023): image → hint, and how well samples follow a hint."""

    name: str = ""
    channels: int = 1
    higher_is_better: dict[str, bool] = {}

    def __call__(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x0 (B, C, H, W) in [-1, 1] → hint (B, channels, H, W) float32 in [0, 1]."""
        return self.extract(to_gray01(x0, "x0"), generator).float()

    def adherence(self, hint: torch.Tensor, samples: torch.Tensor) -> dict[str, torch.Tensor]:
        """Re-extract the condition from samples (B, C, H, W in [-1, 1]); per-image (B,) scores against hint."""
        if isinstance(samples, torch.Tensor) and samples.is_floating_point():
            samples = samples.clamp(-1, 1)  # sampler outputs overshoot [-1, 1] a little; saved images are clamped too
        gray = to_gray01(samples, "samples")
        return self.compare(check_hint(hint, gray, self.channels), gray)

    def extract(self, gray: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Hint from gray images (B, 1, H, W) in [0, 1]."""
        raise NotImplementedError

    def compare(self, hint: torch.Tensor, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores of gray samples (B, 1, H, W) in [0, 1] against a checked hint of the same shape."""
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def number(value, what: str, lo: float, hi: float, integer: bool = False):
    """Check an option is a (whole) number in [lo, hi] and return it."""
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and lo <= value <= hi
    check(ok, f"{what}={value!r} is not valid: use {'an integer' if integer else 'a number'} from {lo} to {hi}")
    return value
