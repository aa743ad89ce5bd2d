"""ImageDataset, load_dataset (Fashion-MNIST, MNIST, embedded samples, image folders) and class_index."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from guidekit.data import idx
from guidekit.errors import GuidekitError, check, shown

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]
DATASETS = ("fashion-mnist", "mnist", "samples")
SPLITS = ("train", "test")
SAMPLE_FILES = ("samples-images-idx3-ubyte.gz", "samples-labels-idx1-ubyte.gz")
RESIZE_CHUNK = 4096


@dataclass
class ImageDataset:
    """uint8 images (N, C, H, W) at model resolution, optional int64 labels and class names."""

    pixels: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    name: str
    #: how load_dataset read it ({"dataset": name or absolute folder, "split", "data": absolute IDX folder or None}),
    #: recorded by training so that --resume reads the same data; None when built in memory
    source: dict | None = field(default=None, compare=False)

    def __post_init__(self):
        """Check shapes and dtypes so that a bad dataset fails here, not deep inside training."""
        p = self.pixels
        check(p.dtype == torch.uint8 and p.dim() == 4, f"{self.name}: pixels must be uint8 (N, C, H, W), "
              f"got {p.dtype} {tuple(p.shape)}")
        check(p.shape[1] in (1, 3), f"{self.name}: pixels need 1 or 3 channels, got {p.shape[1]}")
        if self.labels is None:
            return
        n = len(self.class_names or [])
        check(n > 0, f"{self.name}: labels given without class_names; pass the class names or labels=None")
        check(self.labels.dtype == torch.int64 and tuple(self.labels.shape) == (p.shape[0],),
              f"{self.name}: labels must be int64 of shape ({p.shape[0]},), "
              f"got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels):
            lo, hi = int(self.labels.min()), int(self.labels.max())
            check(lo >= 0 and hi < n, f"{self.name}: labels range {lo}..{hi} but there are {n} classes")

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def images(self, index) -> torch.Tensor:
        """Images at index (int, slice or LongTensor) as float32 in [-1, 1]."""
        return self.pixels[index].to(torch.float32) / 127.5 - 1.0

    @property
    def num_classes(self) -> int:
        """Number of classes, 0 for an unconditional dataset."""
        return 0 if self.labels is None else len(self.class_names)

    @property
    def channels(self) -> int:
        return self.pixels.shape[1]

    @property
    def resolution(self) -> int:
        return self.pixels.shape[-1]

    def fingerprint(self) -> str:
        """12 hex digits of SHA-256 of the pixels, labels and class names: equal data, equal fingerprint."""
        import hashlib

        h = hashlib.sha256(f"{tuple(self.pixels.shape)}:{self.class_names}".encode())
        h.update(self.pixels.contiguous().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:12]

    def subset(self, index) -> ImageDataset:
        """A new dataset with the items at index (int, slice, list or LongTensor)."""
        if isinstance(index, int):
            index = [index]
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.int64)
        labels = None if self.labels is None else self.labels[index]
        return ImageDataset(self.pixels[index], labels, self.class_names, self.name, self.source)


def _normalize(text: str) -> str:
    """Case-folded letters and digits of any script, nothing else ("Ankle boot" -> "ankleboot", "Hosé" -> "hosé")."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def class_index(names: list[str] | None, value: str | int) -> int:
    """Class index from an index ("3"), a case-insensitive name ("trouser") or an unambiguous prefix."""
    check(bool(names), f"class {value!r} given but the dataset is unconditional (no classes): drop the class")
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d{1,18}", text):
        i = int(text)
        check(0 <= i < len(names), f"class index {i} is out of range: use 0..{len(names) - 1} ({listing})")
        return i
    key = _normalize(text)
    check(text != "", f"class {value!r} is empty: use an index or a name ({listing})")
    check(key != "", f"class {shown(repr(text), 60)} has no letters or digits: use an index or a name ({listing})")
    exact = [i for i, n in enumerate(names) if _normalize(n) == key]
    if exact:
        return exact[0]
    matches = [i for i, n in enumerate(names) if _normalize(n).startswith(key)]
    check(len(matches) < 2, f"class {shown(repr(text), 60)} is ambiguous: it could be "
          f"{', '.join(names[i] for i in matches)}; type more of the name ({listing})")
    check(len(matches) == 1, f"unknown class {shown(repr(text), 60)}: use an index or a name ({listing})")
    return matches[0]


def to_resolution(pixels: torch.Tensor, resolution: int) -> torch.Tensor:
    """Pad 28x28 to 32x32 with background 0, keep an equal size, else resize (bilinear, antialiased)."""
    h, w = pixels.shape[-2:]
    if (h, w) == (resolution, resolution):
        return pixels
    if (h, w) == (28, 28) and resolution == 32:
        return F.pad(pixels, (2, 2, 2, 2), value=0)
    out = []
    for chunk in pixels.split(RESIZE_CHUNK):
        x = F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out) if out else pixels.new_zeros((0, pixels.shape[1], resolution, resolution))


def _from_arrays(images: np.ndarray, labels: np.ndarray, names: list[str], where: str) -> tuple:
    """Validate raw IDX arrays and turn them into (uint8 N,1,H,W, int64 N) tensors."""
    check(images.ndim == 3 and images.dtype == np.uint8,
          f"{where}: images must be uint8 with 3 dimensions (N, H, W), got {images.dtype} {images.shape}; "
          "point --data at a folder with the image and label IDX files")
    check(labels.ndim == 1, f"{where}: labels must have 1 dimension, got shape {labels.shape}")
    check(len(images) == len(labels), f"{where}: {len(images)} images but {len(labels)} labels; "
          "the files come from different sets, replace them with a matching pair")
    if len(labels):
        check(int(labels.min()) >= 0 and int(labels.max()) < len(names),
              f"{where}: labels range {labels.min()}..{labels.max()}, expected 0..{len(names) - 1}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _load_idx(spec: str, split: str, data_dir) -> tuple:
    """Read one split of Fashion-MNIST / MNIST from the folder find_idx_dir picks."""
    folder = idx.find_idx_dir(data_dir, system=(spec == "fashion-mnist"))
    if folder == idx.DEBIAN_FASHION_MNIST:
        fix = "re-install with `apt-get install --reinstall dataset-fashion-mnist`"
    else:
        fix = f"replace it with a fresh download of the {spec} files"
    paths = [idx.idx_file(folder, n) for n in idx.IDX_NAMES[split]]
    images, labels = (idx.read_idx(p, fix) for p in paths)
    names = FASHION_MNIST_CLASSES if spec == "fashion-mnist" else MNIST_CLASSES
    return *_from_arrays(images, labels, names, f"{paths[0]} / {paths[1]}"), names


def _load_samples() -> tuple:
    """Read the 500-image Fashion-MNIST sample set shipped inside the package."""
    root = resources.files("guidekit.data") / "samples"
    arrays = []
    for name in SAMPLE_FILES:
        with resources.as_file(root / name) as path:
            arrays.append(idx.read_idx(path, "re-install guidekit or run scripts/make_samples.py"))
    return *_from_arrays(*arrays, FASHION_MNIST_CLASSES, "embedded samples"), FASHION_MNIST_CLASSES


def _looks_like_path(spec: str) -> bool:
    """Whether spec names a folder rather than a dataset."""
    return os.sep in spec or "/" in spec or spec.startswith((".", "~")) or Path(spec).exists()


def load_dataset(
    spec: str | os.PathLike = "samples",
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    resolution: int = 32,
    channels: int | None = None,
) -> ImageDataset:
    """Load "fashion-mnist", "mnist", "samples" or an image folder as uint8 images at resolution.

    28x28 digits/clothes are padded to 32x32 with the background (0 -> -1.0); other resolutions are
    resized bilinearly with antialiasing. split ("train"/"test") only applies to Fashion-MNIST and MNIST;
    the sample set and image folders have a single split. channels=3 repeats gray IDX images.
    """
    choices = f"one of {', '.join(DATASETS)}, or a path to an image folder"
    is_path = isinstance(spec, os.PathLike)
    check(is_path or (isinstance(spec, str) and spec != ""), f"dataset {spec!r} is not valid: use {choices}")
    check(split in SPLITS, f"split {split!r} is not valid: use one of {', '.join(SPLITS)}")
    check(isinstance(resolution, int) and not isinstance(resolution, bool) and 4 <= resolution <= 4096,
          f"resolution {resolution!r} is not valid: use an integer from 4 to 4096, e.g. 32")
    check(channels in (None, 1, 3), f"channels {channels!r} is not valid: use 1 (gray), 3 (RGB) or None (auto)")
    key = "" if is_path else spec.lower()
    if key == "fashion-mnist" and idx.wants_samples(data_dir):
        key = "samples"  # --data samples: the embedded images stand in for both splits
    check(not (key == "mnist" and idx.wants_samples(data_dir)),
          "--data samples stands for the embedded Fashion-MNIST images, not MNIST; point --data at MNIST's IDX files")
    if key in DATASETS:
        if key == "samples":
            pixels, labels, names = _load_samples()
        else:
            pixels, labels, names = _load_idx(key, split, data_dir)
        pixels = to_resolution(pixels, resolution)
        if channels == 3:
            pixels = pixels.expand(-1, 3, -1, -1)
        name = key if key == "samples" else f"{key}-{split}"
        data = None if key == "samples" or data_dir is None else str(Path(data_dir).expanduser().resolve())
        source = {"dataset": key, "split": None if key == "samples" else split, "data": data}
        return ImageDataset(pixels.contiguous(), labels, list(names), name, source)
    check(is_path or _looks_like_path(spec), f"unknown dataset {spec!r}: use {choices}")
    from guidekit.data.folder import load_folder

    folder = load_folder(spec, resolution=resolution, channels=channels)
    folder.source = {"dataset": str(Path(spec).expanduser().resolve()), "split": None, "data": None}
    return folder


def load_or_samples(spec: str = "fashion-mnist", split: str = "test", data_dir=None, resolution: int = 32,
                    channels: int | None = None) -> ImageDataset:
    """load_dataset for picking single images (a hint, a guide, an image to inpaint): without an installed
    Fashion-MNIST (and no --data / $GUIDEKIT_DATA given) the embedded samples instead, said on stderr."""
    try:
        return load_dataset(spec, split=split, data_dir=data_dir, resolution=resolution, channels=channels)
    except GuidekitError:
        if spec != "fashion-mnist" or data_dir is not None or os.environ.get(idx.ENV_VAR):
            raise  # an explicit --data or $GUIDEKIT_DATA without the files is a mistake, not a fallback
    import sys

    print("note: Fashion-MNIST is not installed (make data, or --data DIR); using the 500 images embedded in "
          "guidekit instead (--data samples)", file=sys.stderr)
    return load_dataset("samples", resolution=resolution, channels=channels)
