"""Image tensors in [−1, 1] to PNG files and labelled grids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw


def to_pil(x: torch.Tensor) -> Image.Image:
    """One (C, H, W) image in [−1, 1] as an 8-bit PIL image (L or RGB)."""
    a = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a, "L" if a.shape[2] == 1 else "RGB")


def grid(images: torch.Tensor, ncol: int, pad: int = 2, scale: int = 1) -> Image.Image:
    """A grid of (N, C, H, W) images, ncol per row, on a white background, each scaled up by `scale`."""
    n, c, h, w = images.shape
    nrow = -(-n // ncol)
    canvas = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = images[i]
    img = to_pil(canvas)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


# glyphs Pillow's default font draws as an empty box, and what is drawn instead
PLAIN = str.maketrans({"×": "x", "∅": "null", "→": "->", "—": "-", "–": "-", "²": "^2", "³": "^3", "≤": "<=",
                       "≥": ">=", "ε": "eps", "ᾱ": "alpha_bar", "≈": "~"})


def labelled(img: Image.Image, title: str | None = None, rows: Sequence[str] = (), cell: int = 0,
             margin: int = 90, max_chars: int = 14) -> Image.Image:
    """Add a title above and row labels (cut to max_chars) to the left of a grid image (cell = row pitch in pixels)."""
    top = 18 if title else 0
    left = margin if rows else 0
    out = Image.new("RGB", (img.width + left, img.height + top), "white")
    out.paste(img.convert("RGB"), (left, top))
    draw = ImageDraw.Draw(out)
    if title:
        draw.text((left + 2, 3), title.translate(PLAIN), fill="black")
    for i, name in enumerate(rows):
        draw.text((3, top + i * cell + cell // 2 - 5), name.translate(PLAIN)[:max_chars], fill="black")
    return out


def save_png(img: Image.Image, path: Path) -> None:
    img.save(path, format="PNG")

