"""Read a user's condition image (a drawn sketch, a mask, a photo) as a float tensor in [0, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from guidekit.data.dataset import to_resolution
from guidekit.errors import GuidekitError, check


def _decode(path: Path, what: str = "condition image") -> Image.Image:
    """Open and fully decode an image, naming the file when it is not an image or is truncated."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise GuidekitError(f"cannot read {what} {path} ({err}): the file is truncated, corrupt or "
                            "not an image; pass a PNG, JPEG, BMP or WebP file") from err


def load_condition_image(path: str | os.PathLike, size: int = 32, channels: int = 1,
                         what: str = "condition image") -> torch.Tensor:
    """Any image file as (1, channels, size, size) float32 in [0, 1].

    Transparent pixels become black (the background), a non-square image is padded with black to a square
    (keeping its aspect ratio), 28x28 is padded to 32x32 like Fashion-MNIST, other sizes are resized bilinearly.
    """
    check(isinstance(size, int) and not isinstance(size, bool) and 4 <= size <= 4096,
          f"size {size!r} is not valid: use an integer from 4 to 4096, e.g. 32")
    check(channels in (1, 3), f"channels {channels!r} is not valid: use 1 (gray) or 3 (RGB)")
    path = Path(path).expanduser()
    check(path.exists(), f"{what} {path} does not exist: check the path")
    check(path.is_file(), f"{what} {path} is not a file: pass an image file")
    image = _decode(path, what)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8).reshape(image.height, image.width, -1))
    pixels = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W) uint8
    h, w = pixels.shape[-2:]
    if h != w:
        top, left = (max(h, w) - h) // 2, (max(h, w) - w) // 2
        pixels = F.pad(pixels, (left, max(h, w) - w - left, top, max(h, w) - h - top), value=0)
    return to_resolution(pixels, size).float() / 255.0
