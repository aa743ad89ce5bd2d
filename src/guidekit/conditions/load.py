"""Read a user's condition image (a drawn sketch, a mask, a photo) as a float tensor in [0, 1]."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from guidekit.data.dataset import to_resolution
from guidekit.errors import check
from guidekit.imageio import pad_square, read_image


def load_condition_image(path: str | os.PathLike, size: int = 32, channels: int = 1,
                         what: str = "condition image") -> torch.Tensor:
    """Any image file as (1, channels, size, size) float32 in [0, 1].

    16-bit and float files are scaled by their real range (guidekit.imageio), transparent pixels become black (the
    background), a non-square image is padded with black to a square (keeping its aspect ratio, with a warning),
    28x28 is padded to 32x32 like Fashion-MNIST, other sizes are resized bilinearly.
    """
    check(isinstance(size, int) and not isinstance(size, bool) and 4 <= size <= 4096,
          f"size {size!r} is not valid: use an integer from 4 to 4096, e.g. 32")
    check(channels in (1, 3), f"channels {channels!r} is not valid: use 1 (gray) or 3 (RGB)")
    path = Path(path).expanduser()
    check(path.exists(), f"{what} {path} does not exist: check the path")
    check(path.is_file(), f"{what} {path} is not a file: pass an image file")
    pixels = torch.from_numpy(pad_square(read_image(path, channels, what), f"{what} {path}"))
    return to_resolution(pixels.permute(2, 0, 1).unsqueeze(0), size).float() / 255.0
