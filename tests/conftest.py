"""Shared pytest fixtures."""

import numpy as np
import pytest
import torch

from guidekit.data import idx

# The suite is full of small tensors: one intra-op thread avoids thread-pool overhead that costs more than it
# saves (4x on the golden sampler tests) and keeps the run steady on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Hide the real Fashion-MNIST install and $GUIDEKIT_DATA; returns the fake Debian path."""
    fake = tmp_path / "no-debian-install"
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", fake)
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    return fake


@pytest.fixture
def make_idx_dir(tmp_path):
    """Factory: write a tiny 28x28 IDX data set (train gzipped, test raw) into a folder and return it."""

    def make(name="idx", n_train=20, n_test=10, classes=10):
        folder = tmp_path / name
        folder.mkdir()
        rng = np.random.default_rng(0)
        for split, n, suffix in (("train", n_train, ".gz"), ("t10k", n_test, "")):
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = (np.arange(n) % classes).astype(np.uint8)
            idx.write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images)
            idx.write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels)
        return folder

    return make
