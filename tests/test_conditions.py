"""Tests for guidekit.conditions: ControlNet hint extractors, adherence scores and condition images."""

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.conditions import CONDITIONS, Condition, get_condition, load_condition_image
from guidekit.conditions.base import edge_scores
from guidekit.conditions.sketch import thin
from guidekit.data import load_dataset
from guidekit.errors import GuidekitError

SCORE_KEYS = {
    "canny": {"edge_f1", "edge_precision", "edge_recall"},
    "sketch": {"edge_f1", "edge_precision", "edge_recall"},
    "mask": {"iou"},
    "lowres": {"l2"},
}


@pytest.fixture(scope="module")
def images():
    """64 embedded Fashion-MNIST samples in [-1, 1], (64, 1, 32, 32)."""
    return load_dataset("samples").images(slice(0, 64))


def square(size=32, lo=10, hi=22):
    """A white filled square [lo, hi) on black, (1, 1, size, size) in [-1, 1]."""
    x = -torch.ones(1, 1, size, size)
    x[..., lo:hi, lo:hi] = 1.0
    return x


def hint_of(name, x, seed=0):
    return get_condition(name)(x, torch.Generator().manual_seed(seed))


def test_registry():
    assert CONDITIONS == ("canny", "sketch", "mask", "lowres")
    for name in CONDITIONS:
        c = get_condition(name)
        assert isinstance(c, Condition) and c.name == name and c.channels == 1
        assert set(c.higher_is_better) == SCORE_KEYS[name]
    assert get_condition(" Canny ").name == "canny"
    assert get_condition("lowres").higher_is_better == {"l2": False}


@pytest.mark.parametrize("name", CONDITIONS)
def test_hint_shape_range_dtype(name, images):
    hint = hint_of(name, images[:16])
    assert hint.shape == (16, 1, 32, 32) and hint.dtype == torch.float32
    assert hint.min() >= 0 and hint.max() <= 1 and hint.max() > 0
    rgb = hint_of(name, images[:4].expand(-1, 3, -1, -1))  # RGB input is read as gray
    assert rgb.shape == (4, 1, 32, 32) and torch.allclose(rgb, hint[:4], atol=1e-5)
    if name != "lowres":
        assert set(hint.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", CONDITIONS)
def test_adherence_perfect_on_source_and_worse_when_shuffled(name, images):
    c = get_condition(name)
    hint = hint_of(name, images)
    own = c.adherence(hint, images)
    assert set(own) == SCORE_KEYS[name]
    assert all(v.shape == (64,) and v.dtype == torch.float32 for v in own.values())
    shuffled = c.adherence(hint, images.roll(1, dims=0))
    if name == "lowres":
        assert own["l2"].max() < 1e-6
        assert shuffled["l2"].mean() > 0.15
    else:
        main = "iou" if name == "mask" else "edge_f1"
        assert torch.all(own[main] == 1.0)
        assert shuffled[main].mean() < 0.8 and shuffled[main].min() < 0.5
    if name != "mask":
        assert all(torch.all(v == 1.0) for k, v in own.items() if k.startswith("edge"))


def test_adherence_broadcasts_a_single_hint(images):
    c = get_condition("mask")
    hint = c(images[:1])
    scores = c.adherence(hint, images[:1].expand(3, -1, -1, -1))
    assert torch.all(scores["iou"] == 1.0) and scores["iou"].shape == (3,)
    blank = -torch.ones(2, 1, 32, 32)  # both maps empty: a perfect match, not a division by zero
    assert torch.all(c.adherence(c(blank), blank)["iou"] == 1.0)
    assert torch.all(get_condition("canny").adherence(torch.zeros(2, 1, 32, 32), blank)["edge_f1"] == 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_other_float_dtypes_give_float32_hints(dtype, images):
    for name in CONDITIONS:
        hint = hint_of(name, images[:4].to(dtype))
        assert hint.dtype == torch.float32
        assert torch.allclose(hint, hint_of(name, images[:4]), atol=1e-3)


def test_canny_square_edges_on_border_only():
    edges = get_condition("canny")(square())[0, 0] > 0.5
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[10:22, 10:22] = True
    near = torch.zeros(32, 32, dtype=torch.bool)  # within one pixel of the square's boundary
    near[9:23, 9:23] = True
    near[12:20, 12:20] = False
    assert edges.any() and not (edges & ~near).any()
    for side in (edges[9:12, 12:20], edges[20:23, 12:20], edges[12:20, 9:12], edges[12:20, 20:23]):
        assert side.sum() >= 8  # each side of the square is traced along its whole length


def test_canny_flat_images_have_no_edges():
    for value in (-1.0, 0.3, 1.0):
        assert get_condition("canny")(torch.full((2, 1, 32, 32), value)).sum() == 0


def test_edge_scores_tolerance_and_empty_maps():
    a = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    a[..., 8, 2:14] = True
    b = a.roll(1, dims=2)  # the same line one pixel lower
    assert edge_scores(b, a, 1)["edge_f1"].item() == 1.0
    assert edge_scores(b, a, 0)["edge_f1"].item() == 0.0
    empty = torch.zeros_like(a)
    assert edge_scores(empty, empty, 1)["edge_f1"].item() == 1.0
    s = edge_scores(empty, a, 1)
    assert s["edge_f1"].item() == 0.0 and s["edge_recall"].item() == 0.0


def test_sketch_deterministic_per_seed(images):
    x = images[:8]
    one, again, other = hint_of("sketch", x, 1), hint_of("sketch", x, 1), hint_of("sketch", x, 2)
    assert torch.equal(one, again)
    assert not torch.equal(one, other)
    plain = get_condition("sketch", jitter=0)
    assert torch.equal(plain(x), plain(x)) and not torch.equal(plain(x), one)


def test_thin_makes_one_pixel_strokes():
    band = torch.zeros(1, 1, 16, 16)
    band[..., 6:9, 2:14] = 1  # a bar 3 pixels thick
    line = thin(band)
    assert line.sum() > 0 and torch.all(line.sum(dim=2) <= 1)  # at most one pixel per column
    assert torch.all(line <= band)


def test_mask_fills_small_holes():
    x = square(lo=8, hi=24)
    x[..., 15, 15] = -1.0  # a one-pixel hole
    m = get_condition("mask")(x)[0, 0]
    assert m[15, 15] == 1 and m[8:24, 8:24].all() and m.sum() < 20 * 20


def test_lowres_is_blocky_area_average():
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    hint = get_condition("lowres")(x)
    blocks = ((x + 1) / 2).reshape(2, 1, 8, 4, 8, 4).mean((3, 5))
    assert torch.allclose(hint, blocks.repeat_interleave(4, 2).repeat_interleave(4, 3), atol=1e-6)
    with pytest.raises(GuidekitError, match="divisible by factor=4"):
        get_condition("lowres")(torch.zeros(1, 1, 30, 30))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 1, 32, 32)), "must be a torch.Tensor"),
    (torch.zeros(1, 32, 32), "4 dimensions"),
    (torch.zeros(1, 1, 32, 32, dtype=torch.uint8), "must be float"),
    (torch.zeros(1, 2, 32, 32), "2 channels"),
    (torch.full((1, 1, 32, 32), 255.0), "must lie in \\[-1, 1\\]"),
    (torch.full((1, 1, 32, 32), float("nan")), "NaN"),
    (torch.zeros(0, 1, 32, 32), "empty batch"),
])
def test_bad_images_are_rejected(bad, match):
    with pytest.raises(GuidekitError, match=match):
        get_condition("canny")(bad)


def test_bad_hints_are_rejected(images):
    c = get_condition("canny")
    hint = c(images[:4])
    with pytest.raises(GuidekitError, match="does not match samples"):
        c.adherence(hint, images[:3])
    with pytest.raises(GuidekitError, match="does not match samples"):
        c.adherence(hint[:, :, :16], images[:4])
    with pytest.raises(GuidekitError, match="hints lie in \\[0, 1\\]"):
        c.adherence(hint * 2 - 1, images[:4])
    with pytest.raises(GuidekitError, match="samples has 2 channels"):
        c.adherence(hint, torch.zeros(4, 2, 32, 32))


def test_bad_names_and_options():
    with pytest.raises(GuidekitError, match="unknown condition 'depth': use one of canny, sketch, mask, lowres"):
        get_condition("depth")
    with pytest.raises(GuidekitError, match="unknown option\\(s\\) \\['thresh'\\].*valid options"):
        get_condition("mask", thresh=0.2)
    with pytest.raises(GuidekitError, match="low_threshold=0.9 is above high_threshold"):
        get_condition("canny", low_threshold=0.9, high_threshold=0.5)
    with pytest.raises(GuidekitError, match="tolerance=-1 is not valid"):
        get_condition("sketch", tolerance=-1)


def test_load_condition_image_gray_and_rgb(tmp_path):
    gray = np.zeros((28, 28), dtype=np.uint8)
    gray[5:20, 5:20] = 255
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    x = load_condition_image(tmp_path / "gray.png")
    assert x.shape == (1, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1 and x[0, 0, 7:22, 7:22].eq(1).all()  # 28 -> 32 by padding
    rgb = np.zeros((64, 40, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    y = load_condition_image(str(tmp_path / "rgb.png"), size=16, channels=3)
    assert y.shape == (1, 3, 16, 16) and 0 <= y.min() and y.max() <= 1
    assert y[0, 0, :, 8].gt(0.9).all() and y[0, 1:].max() < 0.05  # red, padded with black at the sides
    z = load_condition_image(tmp_path / "rgb.png")
    assert z.shape == (1, 1, 32, 32)
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:16, :, 3] = 255  # top half opaque white, bottom half transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    a = load_condition_image(tmp_path / "rgba.png")
    assert a[0, 0, :16].eq(1).all() and a[0, 0, 16:].eq(0).all()  # transparent pixels become background


def test_load_condition_image_errors(tmp_path):
    with pytest.raises(GuidekitError, match="does not exist"):
        load_condition_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(GuidekitError, match="not an image"):
        load_condition_image(tmp_path / "notes.png")
    Image.fromarray(np.full((32, 32), 200, dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(GuidekitError, match="truncated"):
        load_condition_image(tmp_path / "cut.png")
    with pytest.raises(GuidekitError, match="channels 2"):
        load_condition_image(tmp_path / "ok.png", channels=2)
    with pytest.raises(GuidekitError, match="not a file"):
        load_condition_image(tmp_path)
