"""Image-folder datasets: one subfolder per class, or flat images for an unconditional model."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from guidekit.data.dataset import ImageDataset
from guidekit.errors import GuidekitError, check
from guidekit.imageio import GRAY_MODES, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LAYOUT_HELP = (
    "use either one subfolder per class (folder/cat/*.png, folder/dog/*.png) "
    "or only image files directly in the folder (unconditional)"
)


def _visible(folder: Path) -> list[Path]:
    """Entries of folder, sorted by name, without hidden files such as .DS_Store."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _images_in(folder: Path) -> list[Path]:
    """Image files directly inside folder, sorted by name."""
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _short(paths: list[Path], limit: int = 3) -> str:
    """A few names from paths, for error messages."""
    names = [p.name for p in paths[:limit]]
    return ", ".join(names) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def scan_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Image paths, per-image class indices and class names (None, None for flat folders)."""
    check(root.exists(), f"image folder {root} does not exist: check the path")
    check(root.is_dir(), f"{root} is not a folder: pass a folder of images (or of class subfolders)")
    entries = _visible(root)
    subdirs = [p for p in entries if p.is_dir()]
    flat = _images_in(root)
    check(not (subdirs and flat), f"image folder {root} mixes image files ({_short(flat)}) and class "
          f"subfolders ({_short(subdirs)}): {LAYOUT_HELP}")
    if flat:
        return flat, None, None
    suffixes = ", ".join(IMAGE_SUFFIXES)
    check(bool(subdirs), f"image folder {root} has no images ({suffixes}) and no class subfolders: "
          f"{LAYOUT_HELP}")
    paths, labels = [], []
    for label, sub in enumerate(subdirs):
        found = _images_in(sub)
        check(bool(found), f"class subfolder {sub} has no images ({suffixes}): add images or remove it")
        paths += found
        labels += [label] * len(found)
    return paths, labels, [p.name for p in subdirs]


def _mode(path: Path) -> str:
    """Pixel mode from the header only (cheap), naming the file if it is not an image."""
    try:
        with Image.open(path) as image:
            return image.mode
    except (OSError, SyntaxError, ValueError) as err:
        raise GuidekitError(f"cannot read image {path} ({err}): replace or delete it") from err


def fit(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to resolution (bicubic, antialiased), then center-crop a square."""
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def load_folder(path: str | os.PathLike, resolution: int = 32, channels: int | None = None) -> ImageDataset:
    """Load every image in a folder (class subfolders or flat) as uint8 (N, C, resolution, resolution)."""
    root = Path(path).expanduser()
    paths, labels, names = scan_folder(root)
    check(channels in (None, 1, 3), f"channels {channels!r} is not valid: use 1 (gray), 3 (RGB) or None (auto)")
    check(isinstance(resolution, int) and resolution >= 1, f"resolution {resolution!r} is not valid: use e.g. 32")
    if channels is None:
        channels = 1 if all(_mode(p) in GRAY_MODES for p in paths) else 3  # 16-bit and float gray count as gray
    pixels = np.empty((len(paths), resolution, resolution, channels), dtype=np.uint8)
    cropped = []
    for i, p in enumerate(paths):
        a = read_image(p, channels, "image", "replace or delete it")  # 16-bit/float scaled, transparency on black
        if a.shape[0] != a.shape[1]:
            cropped.append(f"{p.name} {a.shape[1]}x{a.shape[0]}")
        image = Image.fromarray(a[..., 0] if channels == 1 else a, "L" if channels == 1 else "RGB")
        pixels[i] = np.asarray(fit(image, resolution)).reshape(resolution, resolution, channels)
    if cropped:
        warnings.warn(f"{len(cropped)} of {len(paths)} images in {root} are not square (e.g. {cropped[0]}): each was "
                      f"center-cropped to a square, losing its sides (never squashed); crop them square yourself "
                      f"to choose what is kept", UserWarning, stacklevel=2)
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    label_tensor = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    return ImageDataset(tensor, label_tensor, names, root.name or str(root))
