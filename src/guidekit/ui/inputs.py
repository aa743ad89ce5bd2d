"""User images for the web UI, without gradio: size limits, uploads, and arrays → model tensors and masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from guidekit.data.dataset import to_resolution
from guidekit.errors import GuidekitError, check

MAX_BYTES = 2_000_000  # an uploaded file
MAX_SIDE = 1024  # width and height of any image the UI accepts


def check_file(path: str | os.PathLike, what: str = "upload") -> Path:
    """An existing file of at most MAX_BYTES."""
    path = Path(path)
    check(path.is_file(), f"the {what} {path.name} is missing: upload it again")
    size = path.stat().st_size
    check(size <= MAX_BYTES, f"the {what} is {size / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:g} MB: "
                             f"shrink or crop it (the models work at 32x32 anyway)")
    return path


def read_upload(path: str | os.PathLike, what: str = "upload") -> np.ndarray:
    """An image file (≤ MAX_BYTES, ≤ MAX_SIDE² checked before decoding) as a uint8 (H, W) or (H, W, 3|4) array;
    16-bit and float pixels scaled by their real range (guidekit.imageio.eight_bit)."""
    from guidekit.imageio import eight_bit

    path = check_file(path, what)
    try:
        with Image.open(path) as img:
            w, h = img.size
            check(w <= MAX_SIDE and h <= MAX_SIDE, f"the {what} is {w}x{h} pixels; the limit is "
                                                   f"{MAX_SIDE}x{MAX_SIDE}: resize it first")
            img.load()
            img = eight_bit(img, f"the {what}")
            mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info else "RGB"
            img = img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else mode)
            return np.array(img, dtype=np.uint8)
    except GuidekitError:
        raise
    except Image.DecompressionBombError:
        raise GuidekitError(f"the {what} is far larger than {MAX_SIDE}x{MAX_SIDE} pixels: resize it first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise GuidekitError(f"cannot read the {what} as an image ({e}); upload a PNG, JPEG, BMP or WebP") from e


def check_array(a, what: str) -> np.ndarray:
    """A 2-D (H, W) or 3-D (H, W, 1|3|4) numeric array of at most MAX_SIDE x MAX_SIDE, finite."""
    check(isinstance(a, np.ndarray), f"the {what} must be a numpy array, got {type(a).__name__}")
    check(a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)),
          f"the {what} must be (H, W) or (H, W, 1|3|4), got shape {a.shape}")
    h, w = a.shape[:2]
    check(h >= 1 and w >= 1, f"the {what} is empty (shape {a.shape})")
    check(h <= MAX_SIDE and w <= MAX_SIDE, f"the {what} is {w}x{h} pixels; the limit is {MAX_SIDE}x{MAX_SIDE}")
    check(a.dtype == bool or np.issubdtype(a.dtype, np.number), f"the {what} has dtype {a.dtype}: pass pixels")
    check(bool(np.isfinite(a).all()), f"the {what} contains NaN or infinite values")
    return a


def unit(a: np.ndarray, what: str) -> np.ndarray:
    """Pixels as float32 in [0, 1]: uint8 / 255, bool as 0/1, floats checked to lie in [0, 1]."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    check(lo >= 0.0 and hi <= 1.0, f"the {what} spans {lo:.3g}..{hi:.3g}: pass uint8 pixels or floats in [0, 1]")
    return a


def channels_last(a: np.ndarray, what: str, channels: int) -> np.ndarray:
    """(H, W, channels) float32 in [0, 1]; transparent pixels become black (the background), RGB → gray by luma."""
    x = unit(check_array(a, what), what)
    x = x[..., None] if x.ndim == 2 else x
    if x.shape[2] == 4:
        x = x[..., :3] * x[..., 3:]
    if channels == 1 and x.shape[2] == 3:
        x = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None]
    if channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return x


def fit(x: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, C) in [0, 1] → (1, C, size, size) in [0, 1]: padded with black to a square, resized like a data set."""
    h, w = x.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, x.shape[2]), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = x
    pixels = torch.from_numpy(np.round(square * 255)).to(torch.uint8).permute(2, 0, 1)[None]
    return to_resolution(pixels, size).float() / 255.0


def model_image(a: np.ndarray, size: int, channels: int, what: str = "image", invert: bool = False) -> torch.Tensor:
    """A user image as a (1, channels, size, size) model input in [−1, 1]; invert = dark drawing on white paper."""
    x = channels_last(a, what, channels)
    return fit(1 - x if invert else x, size) * 2 - 1  # inverted before padding: the padding stays black


def thumbnail(a: np.ndarray, size: int) -> np.ndarray:
    """An uploaded image at model resolution: uint8 (size, size), or (size, size, 3) when it has colour."""
    a = check_array(a, "upload")
    rgb = a.ndim == 3 and a.shape[2] >= 3 and not (np.array_equal(a[..., 0], a[..., 1]) and
                                                   np.array_equal(a[..., 1], a[..., 2]))
    x = fit(channels_last(a, "upload", 3 if rgb else 1), size)
    return to_uint8(x * 2 - 1)[0]


def known_mask(a: np.ndarray, size: int) -> torch.Tensor:
    """A (1, 1, size, size) 0/1 mask from an array with 1 / white = KNOWN; a cell is known if mostly known."""
    x = channels_last(a, "mask", 1)
    return (fit(x, size) >= 0.5).float()


def mask_from_paint(layers: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray | None:
    """Painted RGBA layers (any stroke = regenerate) → uint8 mask of `shape`, 255 = known; None if nothing painted."""
    painted = np.zeros(shape, dtype=bool)
    for layer in layers:
        if layer is None:
            continue
        check_array(layer, "painted layer")
        check(layer.shape[:2] == shape, f"a painted layer is {layer.shape[1]}x{layer.shape[0]} but the image is "
                                        f"{shape[1]}x{shape[0]}: paint on the loaded image")
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else np.ones(shape)
        painted |= alpha > 0
    return None if not painted.any() else np.where(painted, 0, 255).astype(np.uint8)


def need(array, what: str, how: str) -> np.ndarray:
    """The array, or a clear error saying what to draw or upload."""
    check(array is not None, f"{what} is missing: {how}")
    return array


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [−1, 1] → uint8 (N, H, W) for gray, (N, H, W, 3) for RGB."""
    a = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return a[..., 0] if a.shape[3] == 1 else a


def tile(images: np.ndarray, scale: int = 1, columns: int = 4, pad: int = 2) -> np.ndarray:
    """uint8 images (N, H, W[, 3]) → one uint8 picture: the image itself when N = 1, else a grid on white; × scale."""
    n, h, w = images.shape[:3]
    if n == 1:
        out = images[0]
    else:
        cols = min(columns, n)
        rows = -(-n // cols)
        out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]), 255, dtype=np.uint8)
        for i in range(n):
            r, c = divmod(i, cols)
            out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    return np.repeat(np.repeat(out, scale, axis=0), scale, axis=1) if scale > 1 else out
