"""Regenerate the embedded 500-image Fashion-MNIST sample set (first 50 train images of each class)."""

import argparse
from pathlib import Path

import numpy as np

from guidekit.data.dataset import SAMPLE_FILES
from guidekit.data.idx import DEBIAN_FASHION_MNIST, find_idx_dir, idx_file, read_idx, write_idx

PER_CLASS = 50
OUT = Path(__file__).resolve().parents[1] / "src" / "guidekit" / "data" / "samples"


def main() -> None:
    """Pick the first PER_CLASS images of every class, in file order, and write two gzipped IDX files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", default=str(DEBIAN_FASHION_MNIST), help="folder with the Fashion-MNIST IDX files"
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    args = parser.parse_args()
    folder = find_idx_dir(args.data)
    images = read_idx(idx_file(folder, "train-images-idx3-ubyte"))
    labels = read_idx(idx_file(folder, "train-labels-idx1-ubyte"))
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)]))
    args.out.mkdir(parents=True, exist_ok=True)
    write_idx(args.out / SAMPLE_FILES[0], images[keep])
    write_idx(args.out / SAMPLE_FILES[1], labels[keep])
    print(f"wrote {len(keep)} images from {folder} to {args.out}")


if __name__ == "__main__":
    main()
