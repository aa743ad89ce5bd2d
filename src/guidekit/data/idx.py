"""Read and write IDX files (the MNIST / Fashion-MNIST format) and locate Fashion-MNIST on disk."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from guidekit.errors import GuidekitError, check

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"

# Where Debian's dataset-fashion-mnist package installs the files (read at call time, so tests can patch it).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "GUIDEKIT_DATA"
#: Set (to anything) to look nowhere but --data and $GUIDEKIT_DATA: the suite as a machine without the dataset sees it.
HIDE_SYSTEM_ENV = "GUIDEKIT_HIDE_SYSTEM_DATA"
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FOLDER_HINT = (
    f"pass `--data DIR` (or set {ENV_VAR}=DIR) for a folder holding the four IDX files "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
    "(each may be gzipped with a .gz suffix)"
)
HOW_TO_GET = f"install Fashion-MNIST with `apt-get install dataset-fashion-mnist`, or {FOLDER_HINT}"
#: The value of --data (or $GUIDEKIT_DATA) that stands for the 500 Fashion-MNIST images embedded in guidekit.
SAMPLES = "samples"
SAMPLES_HINT = (f"or use the 500 Fashion-MNIST images embedded in guidekit (50 per class): --data {SAMPLES} (or "
                f"{ENV_VAR}={SAMPLES})")


def wants_samples(data_dir) -> bool:
    """Whether --data (else $GUIDEKIT_DATA) names the embedded sample set rather than a folder."""
    value = os.environ.get(ENV_VAR) if data_dir is None else data_dir
    return isinstance(value, str) and value == SAMPLES
DEFAULT_FIX = "replace it with a complete copy"


def read_idx(path: str | os.PathLike, fix: str = DEFAULT_FIX) -> np.ndarray:
    """Read an IDX file (gzipped or raw, detected by magic bytes) into a native-endian numpy array."""
    path = Path(path)
    check(path.is_file(), f"IDX file {path} does not exist or is not a file: {fix}")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GuidekitError(f"cannot read IDX file {path} ({err}): check its permissions or {fix}") from err
    cut_short = False
    if data[:2] == GZIP_MAGIC:
        data, cut_short = _gunzip(path, data, fix)
        check(not (cut_short and len(data) < 4), f"IDX file {path}: the gzip stream ends early (only {len(data)} "
                                                 f"bytes decompress), the file is truncated; {fix}")
    check(len(data) >= 4, f"IDX file {path} has only {len(data)} bytes, too short for an IDX header: {fix}")
    zero, code, ndim = data[:2], data[2], data[3]
    check(
        zero == b"\x00\x00" and code in IDX_DTYPES and ndim >= 1,
        f"{path} is not an IDX file: bad magic number 0x{data[:4].hex()} (expected 0x0000, a type code "
        f"in {sorted(hex(c) for c in IDX_DTYPES)} and a dimension count >= 1); {fix}",
    )
    header = 4 + 4 * ndim
    check(
        len(data) >= header,
        f"IDX file {path} is truncated inside its header ({len(data)} of {header} bytes): {fix}",
    )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    what = "pixels" if ndim >= 3 else "values"
    if found < expected:
        raise GuidekitError(
            f"IDX file {path} with shape {dims}: expected {expected} bytes of {what}, found {found}: "
            f"the file is truncated; {fix}"
        )
    check(not cut_short, f"IDX file {path}: the gzip stream ends early, the file is truncated; {fix}")
    if found > expected:
        raise GuidekitError(
            f"IDX file {path} with shape {dims}: expected {expected} bytes of {what}, found {found}: "
            f"{found - expected} extra bytes, the file is corrupt; {fix}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _gunzip(path: Path, data: bytes, fix: str) -> tuple[bytes, bool]:
    """Decompress gzip data; returns (bytes, truncated) so a cut file reports how much is missing."""
    stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = stream.decompress(data)
        if stream.eof and stream.unused_data:  # several gzip members, rare but legal
            out = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise GuidekitError(f"IDX file {path} is a corrupt gzip file ({err}); {fix}") from err
    return out, not stream.eof


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file, gzipped (reproducibly, mtime 0) if the path ends with .gz."""
    path = Path(path)
    array = np.asarray(array)
    check(array.dtype == np.uint8, f"write_idx({path}) needs a uint8 array, got {array.dtype}: convert it first")
    check(1 <= array.ndim <= 255, f"write_idx({path}) needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array).tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def idx_file(folder: Path, name: str) -> Path | None:
    """Return folder/name.gz or folder/name, whichever exists (gzipped first), else None."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def missing_files(folder: Path) -> list[str]:
    """Names of the four IDX files that are absent from folder (raw or .gz)."""
    names = [n for pair in IDX_NAMES.values() for n in pair]
    return [n for n in names if idx_file(folder, n) is None]


def _problem(folder: Path) -> str | None:
    """Why folder is unusable as an IDX data folder, or None if it holds all four files."""
    if not folder.is_dir():
        return "missing directory" if not folder.exists() else "not a directory"
    missing = missing_files(folder)
    return f"missing file(s) {', '.join(missing)} (raw or .gz)" if missing else None


def find_idx_dir(data_dir: str | os.PathLike | None = None, system: bool = True) -> Path:
    """Find the folder with the four IDX files: data_dir, else $GUIDEKIT_DATA, else (if system) Debian's."""
    how_to = HOW_TO_GET if system else FOLDER_HINT
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        problem = _problem(folder)
        check(problem is None, f"--data {folder}: {problem}; to fix, {how_to}")
        return folder
    looked = ["--data DIR: not given"]
    env = os.environ.get(ENV_VAR)
    candidates = [(f"${ENV_VAR}", Path(env).expanduser())] if env else []
    if not env:
        looked.append(f"${ENV_VAR}: not set")
    if system and not os.environ.get(HIDE_SYSTEM_ENV):
        candidates.append(("Debian dataset-fashion-mnist", DEBIAN_FASHION_MNIST))
    elif system:
        looked.append(f"Debian dataset-fashion-mnist: hidden by ${HIDE_SYSTEM_ENV}")
    for label, folder in candidates:
        problem = _problem(folder)
        if problem is None:
            return folder
        looked.append(f"{label} ({folder}): {problem}")
    raise GuidekitError("no IDX data found; looked at:\n  " + "\n  ".join(looked) + f"\nTo fix, {how_to}"
                        + (f"; {SAMPLES_HINT}." if system else "."))
