"""Tests for guidekit.data: IDX files, data discovery, datasets, image folders, samples, class names."""

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.data import FASHION_MNIST_CLASSES, ImageDataset, class_index, find_idx_dir, idx, load_dataset
from guidekit.data import read_idx, write_idx
from guidekit.errors import GuidekitError

@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4), (2, 1, 3, 3)])
def test_idx_roundtrip(tmp_path, name, shape):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape and np.array_equal(out, array)


def test_gzip_detected_by_magic_not_extension(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz = write_idx(tmp_path / "x.gz", array).rename(tmp_path / "plain-name")
    raw = write_idx(tmp_path / "raw", array).rename(tmp_path / "raw.gz")
    assert np.array_equal(read_idx(gz), array) and np.array_equal(read_idx(raw), array)


def test_truncated_idx_names_file_and_sizes(tmp_path):
    path = write_idx(tmp_path / "imgs", np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(GuidekitError, match="expected 7840 bytes of pixels, found 984") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_truncated_gzip_and_extra_bytes(tmp_path):
    gz = write_idx(tmp_path / "imgs.gz", np.random.default_rng(0).integers(0, 256, (10, 8, 8), np.uint8))
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(GuidekitError, match="expected 640 bytes of pixels, found .*truncated") as err:
        read_idx(gz)
    assert str(gz) in str(err.value)
    full = write_idx(tmp_path / "full.gz", np.zeros((3, 4), np.uint8)).read_bytes()
    gz.write_bytes(full[:-4])
    with pytest.raises(GuidekitError, match="gzip stream ends early"):
        read_idx(gz)
    gz.write_bytes(full[:-8] + b"\xff" * 8)
    with pytest.raises(GuidekitError, match="corrupt gzip"):
        read_idx(gz)
    raw = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    raw.write_bytes(raw.read_bytes() + b"junk")
    with pytest.raises(GuidekitError, match="4 extra bytes"):
        read_idx(raw)


@pytest.mark.parametrize("header", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03"])
def test_bad_magic(tmp_path, header):
    path = tmp_path / "bad"
    path.write_bytes(header + b"\x00" * 8)
    with pytest.raises(GuidekitError, match="bad magic|too short") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    with pytest.raises(GuidekitError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(GuidekitError, match="uint8"):
        write_idx(tmp_path / "f", np.zeros(3, np.float32))


def test_missing_data_lists_every_place(no_system_data, monkeypatch, tmp_path):
    monkeypatch.setenv("GUIDEKIT_DATA", str(tmp_path / "env-dir"))
    with pytest.raises(GuidekitError) as err:
        find_idx_dir()
    msg = str(err.value)
    for part in ("--data DIR", "GUIDEKIT_DATA", str(tmp_path / "env-dir"), str(no_system_data),
                 "missing directory", "apt-get install dataset-fashion-mnist"):
        assert part in msg
    no_system_data.mkdir()
    with pytest.raises(GuidekitError, match="missing file.*train-images-idx3-ubyte"):
        find_idx_dir()


def test_env_then_debian(no_system_data, monkeypatch, make_idx_dir):
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", make_idx_dir("debian"))
    assert find_idx_dir() == idx.DEBIAN_FASHION_MNIST
    labels = idx.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(GuidekitError, match="apt-get install --reinstall dataset-fashion-mnist"):
        load_dataset("fashion-mnist", split="test")
    env = make_idx_dir("env")
    monkeypatch.setenv("GUIDEKIT_DATA", str(env))
    assert find_idx_dir() == env


def test_explicit_data_dir_wins_and_never_falls_back(no_system_data, monkeypatch, make_idx_dir, tmp_path):
    monkeypatch.setenv("GUIDEKIT_DATA", str(make_idx_dir("env")))
    explicit = make_idx_dir("explicit")
    assert find_idx_dir(explicit) == explicit
    (explicit / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(GuidekitError, match="t10k-labels-idx1-ubyte") as err:
        find_idx_dir(explicit)
    assert str(explicit) in str(err.value)
    with pytest.raises(GuidekitError, match="missing directory"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "typo")


def test_fashion_mnist_padding_and_labels(no_system_data, make_idx_dir):
    folder = make_idx_dir()
    ds = load_dataset("fashion-mnist", data_dir=folder, resolution=32)
    assert len(ds) == 20 and ds.pixels.shape == (20, 1, 32, 32) and ds.pixels.dtype == torch.uint8
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.num_classes == 10 and ds.name == "fashion-mnist-train"
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [i % 10 for i in range(20)]
    x = ds.images(slice(None))
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    ring = torch.ones(32, 32, dtype=torch.bool)
    ring[2:30, 2:30] = False
    assert (x[:, :, ring] == -1).all()
    raw = read_idx(folder / "train-images-idx3-ubyte.gz")
    assert torch.equal(ds.pixels[:, 0, 2:30, 2:30], torch.from_numpy(raw))


def test_test_split_resize_and_channels(no_system_data, make_idx_dir):
    folder = make_idx_dir()
    test = load_dataset("fashion-mnist", split="test", data_dir=folder, resolution=28)
    assert len(test) == 10 and test.resolution == 28 and test.name == "fashion-mnist-test"
    small = load_dataset("fashion-mnist", data_dir=folder, resolution=16, channels=3)
    assert small.pixels.shape == (20, 3, 16, 16) and small.channels == 3
    assert torch.equal(small.pixels[:, 0], small.pixels[:, 2])


def test_mnist_needs_explicit_folder(no_system_data, monkeypatch, make_idx_dir):
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST", make_idx_dir("debian"))
    with pytest.raises(GuidekitError, match="--data DIR"):
        load_dataset("mnist")
    monkeypatch.setenv("GUIDEKIT_DATA", str(make_idx_dir("digits")))
    ds = load_dataset("MNIST")
    assert ds.class_names == [str(d) for d in range(10)] and ds.name == "mnist-train"


def test_mismatched_image_and_label_counts(no_system_data, make_idx_dir):
    folder = make_idx_dir()
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(GuidekitError, match="20 images but 7 labels"):
        load_dataset("fashion-mnist", data_dir=folder)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spec": "cifar10"}, "fashion-mnist, mnist, samples"),
        ({"split": "val"}, "train, test"),
        ({"resolution": 0}, "resolution 0"),
        ({"channels": 2}, "1 \\(gray\\), 3 \\(RGB\\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(GuidekitError, match=match):
        load_dataset(**kwargs)


def test_image_dataset_indexing_and_subset():
    pixels = torch.arange(4 * 8 * 8, dtype=torch.int64).reshape(4, 1, 8, 8).remainder(256).to(torch.uint8)
    ds = ImageDataset(pixels, torch.tensor([0, 1, 1, 0]), ["a", "b"], "toy")
    assert ds.images(0).shape == (1, 8, 8) and ds.images(torch.tensor([3, 1])).shape == (2, 1, 8, 8)
    assert ds.images(0)[0, 0, 0] == -1.0 and ds.images(slice(0, 2)).shape == (2, 1, 8, 8)
    sub = ds.subset(torch.tensor([1, 2]))
    assert len(sub) == 2 and sub.labels.tolist() == [1, 1] and sub.class_names == ["a", "b"]
    assert len(ds.subset(3)) == 1 and len(ds.subset(slice(1, None))) == 3
    flat = ImageDataset(pixels, None, None, "toy")
    assert flat.num_classes == 0 and flat.subset([0, 1]).labels is None
    with pytest.raises(GuidekitError, match="labels range 0..5"):
        ImageDataset(pixels, torch.tensor([0, 1, 5, 0]), ["a", "b"], "toy")
    with pytest.raises(GuidekitError, match="uint8"):
        ImageDataset(pixels.float(), None, None, "toy")


def test_embedded_samples():
    ds = load_dataset("samples")
    assert len(ds) == 500 and ds.num_classes == 10 and ds.pixels.shape == (500, 1, 32, 32)
    assert ds.labels.bincount().tolist() == [50] * 10 and ds.class_names == FASHION_MNIST_CLASSES
    assert ds.images(slice(None)).abs().max() <= 1


def test_class_index():
    names = FASHION_MNIST_CLASSES
    assert class_index(names, "3") == 3 and class_index(names, 8) == 8
    assert class_index(names, "trouser") == 1 and class_index(names, "ankle") == 9
    assert class_index(names, "ANKLE BOOT") == 9 and class_index(names, "t-shirt") == 0
    assert class_index(names, "shirt") == 6  # exact name beats a longer match
    with pytest.raises(GuidekitError, match="ambiguous.*Sandal, Shirt, Sneaker"):
        class_index(names, "s")
    with pytest.raises(GuidekitError, match="unknown class 'hat'.*9=Ankle boot"):
        class_index(names, "hat")
    with pytest.raises(GuidekitError, match="out of range: use 0..9"):
        class_index(names, "10")
    with pytest.raises(GuidekitError, match="unconditional"):
        class_index(None, "3")


def save(path, size=(20, 20), mode="L", color=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_folder_with_class_subfolders(tmp_path):
    save(tmp_path / "dog" / "a.png")
    save(tmp_path / "dog" / "b.jpg", (40, 30))
    save(tmp_path / "cat" / "c.bmp", (10, 16), color=0)
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(tmp_path), resolution=8)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.pixels.shape == (3, 1, 8, 8) and ds.channels == 1 and ds.num_classes == 2
    assert (ds.pixels[0] == 0).all() and (ds.pixels[1] == 128).all()


def test_flat_folder_rgb_and_channels(tmp_path):
    save(tmp_path / "a.png", (30, 60), "RGB", (255, 0, 0))
    save(tmp_path / "b.webp", (16, 16), "L", 50)
    ds = load_dataset(tmp_path, resolution=16)
    assert ds.labels is None and ds.class_names is None and ds.num_classes == 0
    assert ds.pixels.shape == (2, 3, 16, 16)
    assert ds.pixels[0, :, 8, 8].tolist() == [255, 0, 0] and (ds.pixels[1] == 50).all()
    gray = load_dataset(tmp_path, resolution=16, channels=1)
    assert gray.pixels.shape == (2, 1, 16, 16)


def test_folder_center_crop(tmp_path):
    image = Image.new("L", (60, 20), 0)
    image.paste(255, (20, 0, 40, 20))  # white middle third
    image.save(tmp_path / "wide.png")
    ds = load_dataset(tmp_path, resolution=10)
    assert ds.pixels.shape == (1, 1, 10, 10) and ds.pixels.float().mean() > 240


def test_folder_errors(tmp_path):
    with pytest.raises(GuidekitError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GuidekitError, match="has no images"):
        load_dataset(str(empty))
    mixed = tmp_path / "mixed"
    save(mixed / "a.png")
    save(mixed / "cls" / "b.png")
    with pytest.raises(GuidekitError, match="mixes image files \\(a.png\\) and class subfolders \\(cls\\)"):
        load_dataset(str(mixed))
    classes = tmp_path / "classes"
    save(classes / "x" / "a.png")
    (classes / "y").mkdir()
    with pytest.raises(GuidekitError, match="class subfolder .*y has no images"):
        load_dataset(str(classes))


def test_folder_truncated_image_names_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(tmp_path / "ok.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes((tmp_path / "ok.png").read_bytes()[:300])
    with pytest.raises(GuidekitError, match="broken.png"):
        load_dataset(str(tmp_path))
    bad.write_bytes(b"not an image at all")
    with pytest.raises(GuidekitError, match="broken.png"):
        load_dataset(str(tmp_path), channels=3)


@pytest.mark.system_data
def test_real_fashion_mnist_sizes():
    folder = idx.DEBIAN_FASHION_MNIST
    assert read_idx(idx.idx_file(folder, "train-labels-idx1-ubyte")).shape == (60000,)
    test = load_dataset("fashion-mnist", split="test", data_dir=folder)
    assert len(test) == 10000 and test.pixels.shape == (10000, 1, 32, 32)
    assert test.labels.bincount().tolist() == [1000] * 10
    train = read_idx(idx.idx_file(folder, "train-images-idx3-ubyte"))
    assert train.shape == (60000, 28, 28)
