"""One image reader for every loader: 16-bit, 32-bit and float pixels by their real range, every Pillow mode, alpha on
black, wrong ranges refused, non-square images padded (or, for data sets, cropped) with a warning, never squashed."""

import json
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.cli import main
from guidekit.cli.inpaint import load_image
from guidekit.conditions import load_condition_image
from guidekit.data.folder import load_folder
from guidekit.errors import GuidekitError
from guidekit.guides import load_guide
from guidekit.masks import load_mask
from guidekit.metrics.evaluate import load_sample_dir
from guidekit.ui.inputs import read_upload


def write_png(path, a):
    """A 16-bit PNG of a uint16 (H, W, C) array, C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (Pillow cannot write
    16-bit colour PNGs; this writes the chunks of the PNG spec directly)."""
    a = np.asarray(a, dtype=np.uint16)
    a = a[..., None] if a.ndim == 2 else a
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def picture():
    """32x32 gray in [0, 1]: a dark left half (0.25), a light right half (0.75) with a white square in it."""
    x = np.full((32, 32), 0.25)
    x[:, 16:] = 0.75
    x[8:14, 20:26] = 1.0
    return x


OPAQUE = np.ones((32, 32))
TOP_CLEAR = np.where(np.arange(32)[:, None] < 8, 0.0, 1.0) * OPAQUE  # top 8 rows transparent


def kinds():
    """name -> (write(path, x) for x in [0, 1], alpha in [0, 1], suffix): one file kind per Pillow mode/depth."""
    u16 = lambda x: np.rint(x * 65535)  # noqa: E731
    rgba = lambda x, alpha: np.dstack([x, x, x, alpha])  # noqa: E731
    return {
        "png16-gray": (lambda p, x: Image.fromarray(u16(x).astype(np.uint16)).save(p), OPAQUE, ".png"),
        "png16-gray-alpha": (lambda p, x: write_png(p, u16(np.dstack([x, TOP_CLEAR]))), TOP_CLEAR, ".png"),
        "png16-rgb": (lambda p, x: write_png(p, u16(np.dstack([x, x, x]))), OPAQUE, ".png"),
        "png16-rgba": (lambda p, x: write_png(p, u16(rgba(x, TOP_CLEAR))), TOP_CLEAR, ".png"),
        "tiff-float-0-1": (lambda p, x: Image.fromarray(x.astype(np.float32)).save(p), OPAQUE, ".tif"),
        "tiff-float-0-255": (lambda p, x: Image.fromarray((x * 255).astype(np.float32)).save(p), OPAQUE, ".tif"),
        "tiff-int32": (lambda p, x: Image.fromarray(np.rint(x * (2**31 - 1)).astype(np.int32)).save(p), OPAQUE,
                       ".tif"),
        "png8-gray-alpha": (lambda p, x: Image.fromarray(np.rint(np.dstack([x, TOP_CLEAR]) * 255).astype(np.uint8),
                                                         "LA").save(p), TOP_CLEAR, ".png"),
        "png8-palette-transparent": (lambda p, x: palette(x, TOP_CLEAR).save(p), TOP_CLEAR, ".png"),
        "png8-palette": (lambda p, x: palette(x, OPAQUE).save(p), OPAQUE, ".png"),
        "tiff-cmyk": (lambda p, x: cmyk(x).save(p), OPAQUE, ".tif"),
    }


def palette(x, alpha):
    """A 'P' image of x's gray levels; where alpha is 0, a transparent white palette entry."""
    levels = np.rint(x * 255).astype(np.uint8)
    index = np.where(alpha > 0, levels, 0).astype(np.uint8)  # entry 0 = transparent when any pixel is clear
    image = Image.fromarray(index, "P")
    image.putpalette([255, 255, 255] + [v for i in range(1, 256) for v in (i, i, i)])  # x never holds level 0
    if (alpha == 0).any():
        image.info["transparency"] = 0
    return image


def cmyk(x):
    """A CMYK image whose black channel alone draws x (Pillow: R = G = B = 255 - K)."""
    k = 255 - np.rint(x * 255).astype(np.uint8)
    zero = np.zeros_like(k)
    return Image.fromarray(np.dstack([zero, zero, zero, k]), "CMYK")


def loaders():
    """name -> load(path) giving a 32x32 gray picture in [0, 1] (a mask: 0/1 for its >= 128 threshold)."""
    def folder(p):
        return load_folder(p.parent, resolution=32, channels=1).pixels[0, 0].double() / 255

    def samples(p):
        for i in range(10):
            (p.parent / f"{i}{p.suffix}").write_bytes(p.read_bytes())
        p.unlink()
        return (load_sample_dir(p.parent)[0][0, 0].double() + 1) / 2

    return {
        "condition": lambda p: load_condition_image(p)[0, 0].double(),
        "guide": lambda p: (load_guide(p)[0, 0].double() + 1) / 2,
        "inpaint-image": lambda p: (load_image(str(p), 32, 1)[0, 0].double() + 1) / 2,
        "mask": lambda p: load_mask(p, 32)[0, 0].double(),
        "sample-folder": samples,
        "image-folder": folder,
        "ui-upload": lambda p: torch.from_numpy(upload_gray(read_upload(p))),
    }


def upload_gray(a):
    """read_upload's uint8 array (gray, RGB or RGBA) as the gray picture the UI makes of it, in [0, 1]."""
    from guidekit.ui.inputs import channels_last

    return channels_last(a, "upload", 1)[..., 0].astype(np.float64)


def expected(x, alpha, loader):
    """The right picture: 8-bit levels of x, transparent pixels black; a mask thresholds at 128."""
    levels = np.rint(x * alpha * 255)
    return (levels >= 128).astype(float) if loader == "mask" else levels / 255


@pytest.mark.parametrize("loader", list(loaders()))
def test_every_loader_reads_every_mode_and_depth_as_the_right_picture(tmp_path, loader):
    x, wrong = picture(), {}
    for kind, (save, alpha, suffix) in kinds().items():
        (tmp_path / kind).mkdir()
        save(tmp_path / kind / f"image{suffix}", x)
        got = loaders()[loader](tmp_path / kind / f"image{suffix}").numpy()
        error = np.abs(got - expected(x, alpha, loader)).max() if got.shape == (32, 32) else np.inf
        if error > 1.01 / 255:
            wrong[kind] = f"{got.shape}, off by up to {error * 255:.3g}/255"
    assert wrong == {}


def test_sixteen_bit_mid_gray_is_mid_gray_and_gray_folders_stay_gray(tmp_path):
    write_png(tmp_path / "gray.png", np.full((32, 32), 32768))
    assert (load_condition_image(tmp_path / "gray.png") * 255).round().unique().tolist() == [128]  # not 255 or 0
    write_png(tmp_path / "rgb.png", np.full((32, 32, 3), [65535, 32768, 0]))
    rgb = load_condition_image(tmp_path / "rgb.png", channels=3)[0, :, 0, 0] * 255
    assert rgb.round().tolist() == [255, 128, 0]
    (tmp_path / "rgb.png").unlink()
    assert load_folder(tmp_path, resolution=32).channels == 1  # a 16-bit gray folder is gray, not RGB


def refused():
    """name -> (array written as a TIFF, words the message must hold)."""
    nan = np.full((32, 32), 0.5, np.float32)
    nan[3, 4] = np.nan
    return {
        "float-minus-one-to-one": (np.linspace(-1, 1, 1024, dtype=np.float32).reshape(32, 32),
                                   ["values in [-1, 1]", "rescale it to [0, 1]"]),
        "float-nan": (nan, ["1 NaN or infinite pixels", "nan_to_num"]),
        "float-inf": (np.full((32, 32), np.inf, np.float32), ["1024 NaN or infinite", "nan_to_num"]),
        "int32-negative": (np.full((32, 32), -5, np.int32), ["values in [-5, -5]", "outside 0..2147483647",
                                                             "8- or 16-bit PNG"]),
        "int32-holding-16-bit": (np.full((32, 32), 40000, np.int32), ["32-bit signed", "reads as all black",
                                                                      "8-bit PNG"]),
    }


@pytest.mark.parametrize("loader", list(loaders()))
def test_every_loader_refuses_pixels_it_cannot_map_naming_the_range_and_the_fix(tmp_path, loader):
    wrong = {}
    for case, (a, words) in refused().items():
        (tmp_path / case).mkdir()
        path = tmp_path / case / "bad.tif"
        Image.fromarray(a).save(path)
        try:
            loaders()[loader](path)
            wrong[case] = "read without complaint"
        except GuidekitError as err:
            words = words + ([] if loader == "ui-upload" else [str(path.parent)])  # the UI says "the upload"
            missing = [w for w in words if w not in str(err)]
            if missing:
                wrong[case] = f"{err} lacks {missing}"
    assert wrong == {}


def tall():
    """16 wide, 32 high, 8-bit: left half black, right half white."""
    a = np.zeros((32, 16), np.uint8)
    a[:, 8:] = 255
    return a


@pytest.mark.parametrize("loader, pad", [("condition", 0), ("guide", 0), ("inpaint-image", 0), ("mask", 1)])
def test_non_square_files_are_padded_not_squashed_with_a_warning(tmp_path, loader, pad):
    Image.fromarray(tall()).save(tmp_path / "tall.png")
    with pytest.warns(UserWarning, match=r"tall.png is 16x32, not square: padded .* to 32x32.*crop it square"):
        got = loaders()[loader](tmp_path / "tall.png")
    want = np.full((32, 32), float(pad))  # padding: black background; for a mask white = known (kept as is)
    want[:, 8:24] = 0
    want[:, 16:24] = 1
    np.testing.assert_array_equal(got.numpy(), want)


def test_non_square_dataset_images_are_cropped_with_one_warning(tmp_path):
    for i in range(3):
        Image.fromarray(tall()).save(tmp_path / f"{i}.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "square.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_folder(tmp_path, resolution=16)
    assert [str(w.message) for w in caught if "not square" in str(w.message)] == [
        f"3 of 4 images in {tmp_path} are not square (e.g. 0.png 16x32): each was center-cropped to a square, "
        "losing its sides (never squashed); crop them square yourself to choose what is kept"]
    assert ds.pixels[0, 0, 8].tolist() == [0] * 8 + [255] * 8  # the full width kept, not squashed to a stripe


# ---------------------------------------------------------------- the CLI on such files


def test_inpaint_and_edit_cli_read_16_bit_and_float_files(tmp_path):
    x = picture()
    write_png(tmp_path / "image16.png", np.rint(x * 65535))
    mask = np.zeros((32, 32))
    mask[:, :16] = 1.0  # left half known
    write_png(tmp_path / "mask16.png", np.rint(mask * 65535))
    out = tmp_path / "inpaint"
    assert main(["inpaint", "fmnist-cfg", "--image", str(tmp_path / "image16.png"), "--mask",
                 str(tmp_path / "mask16.png"), "--n", "1", "--steps", "2", "--jump-length", "1", "--jump-n-sample",
                 "1", "--no-progress", "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "image.png")), np.rint(x * 255).astype(np.uint8))
    assert json.loads((out / "manifest.json").read_text())["known_fraction"] == 0.5
    Image.fromarray(x.astype(np.float32)).save(tmp_path / "guide.tif")
    out = tmp_path / "edit"
    assert main(["edit", "fmnist-cfg", "--guide", str(tmp_path / "guide.tif"), "--n", "1", "--steps", "2",
                 "--no-progress", "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "guide.png")), np.rint(x * 255).astype(np.uint8))


def test_eval_cli_scores_16_bit_samples_like_their_8_bit_originals(tmp_path, monkeypatch, no_system_data):
    from guidekit.data import load_dataset

    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    pixels = load_dataset("samples").pixels[:20, 0].numpy()
    (tmp_path / "s8").mkdir()
    (tmp_path / "s16").mkdir()
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(tmp_path / "s8" / f"{i:02d}.png")
        write_png(tmp_path / "s16" / f"{i:02d}.png", a.astype(np.uint16) * 257)  # the same levels in 16 bits
    rows = {}
    for name in ("s8", "s16"):
        assert main(["eval", str(tmp_path / name), "--reference", "samples", "--no-progress", "--json",
                     str(tmp_path / f"{name}.json")]) == 0
        rows[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for key in ("fid", "kid", "is", "precision", "recall"):
        assert rows["s16"][key] == rows["s8"][key]


def test_cli_exits_2_on_a_float_image_out_of_range(tmp_path, capsys):
    Image.fromarray(np.full((32, 32), -0.5, np.float32)).save(tmp_path / "neg.tif")
    assert main(["inpaint", "fmnist-cfg", "--image", str(tmp_path / "neg.tif"), "--mask", "half", "--n", "1",
                 "--steps", "2", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "neg.tif is a float image with values in [-0.5, -0.5]" in err and "rescale it to [0, 1]" in err
