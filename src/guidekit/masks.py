"""Inpainting masks, one convention everywhere: m = 1 where the pixel is KNOWN (kept), 0 where it is generated."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from guidekit.errors import check


def check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Check a (B or 1, 1, H, W) 0/1 mask for images x (1 = known, RePaint's m); return it as float on x's device."""
    check(isinstance(mask, torch.Tensor), f"mask must be a tensor, got {type(mask).__name__}")
    shape, want = tuple(mask.shape), (x.shape[0], 1, *x.shape[-2:])
    check(mask.ndim == 4, f"mask must be 4-D (B or 1, 1, H, W), got shape {shape}; add dims with mask[None, None]")
    check(mask.shape[1] == 1, f"mask must have 1 channel (shared by all image channels), got shape {shape}")
    check(mask.shape[-2:] == x.shape[-2:], f"mask is {shape[-2]}x{shape[-1]} but the images are "
          f"{x.shape[-2]}x{x.shape[-1]}; resize the mask to {want[2]}x{want[3]}")
    check(mask.shape[0] in (1, x.shape[0]), f"mask batch {shape[0]} must be 1 or the number of images {x.shape[0]}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    m = mask.to(device=x.device, dtype=dtype)
    bad = m[(m != 0) & (m != 1)]
    check(len(bad) == 0, f"mask must hold only 0 (generate) and 1 (known), got {len(bad)} other values such as "
          f"{bad[:3].tolist()}; threshold it, e.g. (mask > 0.5).float()")
    full, empty = (m.flatten(1) == 1).all(1), (m.flatten(1) == 0).all(1)
    check(not bool(full.any()), f"mask {int(full.int().argmax())} is all ones: it keeps everything: nothing to "
                                f"inpaint; mark the pixels to generate with 0")
    check(not bool(empty.any()), f"mask {int(empty.int().argmax())} is all zeros: it keeps nothing: this is plain "
                                 f"sampling, drop the mask")
    return m


MASK_KINDS = ("wide", "narrow", "every-second-line", "half", "expand", "sr2")
# Brush strokes, in the spirit of the LaMa masks (Suvorov et al. 2022) that RePaint tests on as "wide" and "narrow":
# each stroke starts at a random point and heading; at each vertex it turns by up to ±90° and runs a random length
# (clipped to the image), drawn as a line of the stroke's width with round joints. Per kind: (strokes min, max),
# (vertices min, max), (width min, max) and (segment length min, max), widths and lengths as fractions of the side.
# At 32x32: wide = 2-4 strokes 6-10 px wide (about 60% known on average), narrow = 3-6 strokes 2-3 px wide
# (about 77% known).
STROKES = {"wide": ((2, 4), (2, 4), (0.18, 0.3), (0.25, 0.5)),
           "narrow": ((3, 6), (3, 6), (0.05, 0.09), (0.15, 0.4))}


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(lo, hi + 1, (), generator=generator))


def brush_strokes(kind: str, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One (size, size) mask whose random polyline strokes are unknown (LaMa-style, as in RePaint's test masks)."""
    (s0, s1), (v0, v1), (w0, w1), (l0, l1) = STROKES[kind]
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for _ in range(_randint(s0, s1, generator)):
        width = max(1, round(_uniform(w0, w1, generator) * size))
        x, y = _uniform(0, size - 1, generator), _uniform(0, size - 1, generator)
        angle = _uniform(0, 2 * math.pi, generator)
        for _ in range(_randint(v0, v1, generator)):
            angle += _uniform(-math.pi / 2, math.pi / 2, generator)  # a wandering brush, as in LaMa
            length = _uniform(l0, l1, generator) * size
            nx = min(max(x + length * math.cos(angle), 0), size - 1)
            ny = min(max(y + length * math.sin(angle), 0), size - 1)
            draw.line([(x, y), (nx, ny)], fill=0, width=width)
            r = width / 2  # round joints
            draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=0)
            x, y = nx, ny
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)


def _one_mask(kind: str, size: int, generator: torch.Generator | None) -> torch.Tensor:
    m = torch.zeros(size, size)
    if kind in STROKES:
        return brush_strokes(kind, size, generator)
    if kind == "every-second-line":
        m[0::2] = 1  # even rows known
    elif kind == "half":
        if bool(torch.rand((), generator=generator) < 0.5):
            m[:, : size // 2] = 1  # left half known
        else:
            m[: size // 2] = 1  # top half known
    elif kind == "expand":
        a, b = size // 4, size - size // 4
        m[a:b, a:b] = 1  # outpainting: only the centre (half the side) known
    else:  # sr2: x2 super-resolution, every second pixel in both directions known
        m[0::2, 0::2] = 1
    return m


def make_mask(kind: str, size: int = 32, batch: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (batch, 1, size, size) mask of one of RePaint's six types (Lugmayr et al. 2022); 1 = known."""
    check(kind in MASK_KINDS, f"unknown mask kind {kind!r}: use one of {', '.join(MASK_KINDS)} or a PNG file")
    check(isinstance(size, int) and size >= 4, f"mask size must be an integer >= 4, got {size!r}")
    check(isinstance(batch, int) and batch >= 1, f"mask batch must be an integer >= 1, got {batch!r}")
    masks = []
    for _ in range(batch):
        m = _one_mask(kind, size, generator)
        while kind in STROKES and (m.all() or not m.any()):  # a stroke mask must leave something to inpaint
            m = _one_mask(kind, size, generator)
        masks.append(m)
    return torch.stack(masks)[:, None]


def load_mask(path, size: int = 32) -> torch.Tensor:
    """A (1, 1, size, size) mask from an image file: white (>= 128) = known, black = to inpaint; resized nearest.

    Read by guidekit.imageio (16-bit/float scaled, transparency on black = inpaint); a non-square mask is padded
    with white (known), matching the image's padded background, never squashed."""
    from guidekit.imageio import pad_square, read_image

    path = Path(path)
    check(path.is_file(), f"mask file {path} {'is a folder' if path.is_dir() else 'does not exist'}; give a PNG "
                          f"(white = known, black = inpaint) or one of {', '.join(MASK_KINDS)}")
    a = read_image(path, 1, "mask", "give a PNG, white = known")
    img = Image.fromarray(pad_square(a, f"mask {path}", 255, "white (known)")[..., 0], "L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.NEAREST)
    return torch.from_numpy((np.asarray(img, dtype=np.uint8) >= 128).astype(np.float32))[None, None]


def mask_from_arg(text: str, size: int = 32, batch: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """--mask KIND|FILE: a generated mask of that kind, else a mask image file."""
    if text in MASK_KINDS:
        return make_mask(text, size, batch, generator)
    return load_mask(text, size)
