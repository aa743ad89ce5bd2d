"""Read image files of any mode and bit depth as correctly scaled 8-bit pixels: the one reader of every loader.

Pillow's own convert("L") clips 16-bit and float pixels (a 16-bit mid-gray becomes white, a float TIFF in [0, 1]
black); here they are scaled by their real range first. 8-bit files take exactly the path they always took.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from guidekit.errors import GuidekitError, check

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # integer and float pixels wider than 8 bits
GRAY_MODES = ("1", "L", "LA", *WIDE_MODES)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
READ_FIX = "pass a PNG, JPEG, BMP or WebP file"


def _first(value, default: int) -> int:
    """A TIFF tag's first value (tags may hold one value per channel)."""
    value = value[0] if isinstance(value, tuple) and value else value
    return int(value) if isinstance(value, (int, float)) else default


def integer_top(image: Image.Image) -> tuple[int, str]:
    """(largest value, bit depth in words) of an integer image: 16 bits, or an 'I' TIFF's BitsPerSample and sign."""
    if image.mode != "I":
        return 65535, "16-bit"
    tags = getattr(image, "tag_v2", None) or {}
    bits, signed = _first(tags.get(258), 16), _first(tags.get(339), 1) == 2  # BitsPerSample, SampleFormat
    return (2 ** (bits - 1) - 1 if signed else 2 ** bits - 1), f"{bits}-bit {'signed' if signed else 'unsigned'}"


def float_top(a: np.ndarray, name: str) -> int:
    """255 for float pixels that lie in [0, 255] beyond 1, 1 for pixels in [0, 1]; other ranges are refused."""
    bad = int((~np.isfinite(a)).sum())
    check(bad == 0, f"{name} has {bad} NaN or infinite pixels: replace them (e.g. numpy.nan_to_num) and save again")
    lo, hi = float(a.min()), float(a.max())
    check(lo >= 0 and hi <= 255, f"{name} is a float image with values in [{lo:.4g}, {hi:.4g}]; float images must "
                                 f"lie in [0, 1] (or [0, 255]): rescale it to [0, 1], e.g. (a - a.min()) / "
                                 f"(a.max() - a.min()), and save again")
    return 1 if hi <= 1 else 255


def eight_bit(image: Image.Image, name: str) -> Image.Image:
    """image itself if its pixels are 8-bit; 16/32-bit integer or float gray scaled by its real range to 'L' / 'LA'."""
    if image.mode not in WIDE_MODES:
        return image
    a = np.asarray(image)
    if image.mode == "F":
        top, depth = float_top(a, name), "float"
    else:
        top, depth = integer_top(image)
        lo, hi = int(a.min()), int(a.max())
        check(lo >= 0 and hi <= top, f"{name} is a {depth} image with values in [{lo}, {hi}], outside 0..{top}: "
                                     f"save it as an 8- or 16-bit PNG")
    gray = np.rint(a.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    check(bool(gray.any()) or not bool(a.any()),
          f"{name} is a {depth} image whose values only reach {a.max():.6g} of its 0..{top} range, so it "
          f"reads as all black: save it with the range it uses (e.g. an 8-bit PNG) or stretch its contrast")
    key = image.info.get("transparency")
    if isinstance(key, int) and image.mode != "F":  # a 16-bit PNG's transparent gray value
        return Image.fromarray(np.dstack([gray, np.where(a == key, 0, 255).astype(np.uint8)]), "LA")
    return Image.fromarray(gray, "L")


def decode(path: str | os.PathLike, what: str = "image", fix: str = READ_FIX) -> Image.Image:
    """Open and fully decode an image file as 8-bit pixels (eight_bit), naming the file when it is unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            return eight_bit(image, f"{what} {path}").copy()
    except GuidekitError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise GuidekitError(f"cannot read {what} {path} ({err}): the file is truncated, corrupt or not an image; "
                            f"{fix}") from err


def read_image(path: str | os.PathLike, channels: int, what: str = "image", fix: str = READ_FIX) -> np.ndarray:
    """An image file as uint8 (H, W, channels), 1 = gray, 3 = RGB: any mode or bit depth, transparency on black."""
    image = decode(path, what, fix)
    try:
        if image.mode == "LAB":  # a CIELab TIFF: Pillow converts it to RGB only
            image = image.convert("RGB")
        if image.mode in ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        image = image.convert("L" if channels == 1 else "RGB")
    except ValueError as err:
        raise GuidekitError(f"cannot convert {what} {path} from Pillow mode {image.mode} ({err}): save it as an RGB "
                            f"or grayscale PNG") from err
    return np.array(image, dtype=np.uint8).reshape(image.height, image.width, channels)


def pad_square(a: np.ndarray, name: str, value: int = 0, fill: str = "black") -> np.ndarray:
    """(H, W, C) centred on a square of value (aspect ratio kept), with a warning when the image was not square."""
    h, w = a.shape[:2]
    if h == w:
        return a
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    warnings.warn(f"{name} is {w}x{h}, not square: padded with {fill} to {side}x{side} (aspect ratio kept, nothing "
                  f"cropped or squashed); crop it square yourself to fill the frame", UserWarning, stacklevel=2)
    return np.pad(a, ((top, side - h - top), (left, side - w - left), (0, 0)), constant_values=value)
