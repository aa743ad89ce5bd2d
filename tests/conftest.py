"""Shared pytest fixtures."""

import os

import numpy as np
import pytest
import torch

from guidekit.data import idx


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory):
    """One empty reference-feature cache for the session: no test leans on features cached on this machine."""
    return tmp_path_factory.mktemp("guidekit-cache")


@pytest.fixture(autouse=True)
def fresh_machine(request, monkeypatch, feature_cache):
    """Every test sees a fresh machine, whatever this one has: Debian's Fashion-MNIST hidden (only tests marked
    system_data read it), no $GUIDEKIT_DATA, an empty feature cache (tests may point GUIDEKIT_CACHE elsewhere)."""
    if request.node.get_closest_marker("system_data") is None:
        monkeypatch.setenv(idx.HIDE_SYSTEM_ENV, "1")
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.setenv("GUIDEKIT_CACHE", str(feature_cache))


def pytest_collection_modifyitems(config, items):
    """Skip, with the reason, gpu tests without CUDA and system_data tests without the installed dataset (or with
    $GUIDEKIT_HIDE_SYSTEM_DATA set: the suite as a machine without it sees it)."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    hidden = os.environ.get(idx.HIDE_SYSTEM_ENV)
    no_data = pytest.mark.skip(reason=f"${idx.HIDE_SYSTEM_ENV} is set" if hidden else
                               "needs Debian's dataset-fashion-mnist (make data)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "system_data" in item.keywords and (hidden or idx.missing_files(idx.DEBIAN_FASHION_MNIST)):
            item.add_marker(no_data)


# The suite is full of small tensors: one intra-op thread avoids thread-pool overhead that costs more than it
# saves (4x on the golden sampler tests) and keeps the run steady on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """Point the Debian lookup at a fake, empty path and unset $GUIDEKIT_DATA; returns the fake path."""
    fake = tmp_path / "no-debian-install"
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", fake)
    monkeypatch.delenv(idx.ENV_VAR, raising=False)
    monkeypatch.delenv(idx.HIDE_SYSTEM_ENV, raising=False)  # the lookup runs, and finds the fake path (or not)
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
