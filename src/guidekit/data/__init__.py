"""Datasets for guidekit: Fashion-MNIST / MNIST IDX files, the embedded sample set and image folders."""

from guidekit.data.dataset import FASHION_MNIST_CLASSES, ImageDataset, class_index, load_dataset, load_or_samples
from guidekit.data.idx import find_idx_dir, read_idx, write_idx

__all__ = [
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "class_index",
    "find_idx_dir",
    "load_dataset",
    "load_or_samples",
    "read_idx",
    "write_idx",
]
