"""`guidekit demo --quick`: one self-contained page with every panel, commands that work, atomic output."""

import base64
import html
import io
import json
import re
import shlex

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.cli import main
from guidekit.conditions import get_condition
from guidekit.data import idx
from guidekit.pipelines import masked_errors

HEADINGS = ["1. Classifier-free guidance", "2. Classifier guidance", "3. ControlNet", "4. SDEdit", "5. RePaint",
            "6. All at once: RePaint + CFG + ControlNet"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The quick demo on the embedded samples (no system data set), with a private reference cache."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(idx, "DEBIAN_FASHION_MNIST", root / "no-debian-install")
        mp.delenv(idx.ENV_VAR, raising=False)
        mp.setenv("GUIDEKIT_CACHE", str(root / "cache"))
        assert main(["demo", "--quick", "--no-progress", "--device", "cpu", "--out", str(root / "out")]) == 0
        yield root / "out", mp


def images_of(page: str) -> dict[str, Image.Image]:
    """alt text → decoded image of every embedded PNG."""
    out = {}
    for alt_src in re.finditer(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'[^>]*alt='([^']*)'>", page):
        img = Image.open(io.BytesIO(base64.b64decode(alt_src.group(1))))
        assert img.format == "PNG"
        img.load()
        out[html.unescape(alt_src.group(2))] = img
    return out


def test_page_has_every_panel_with_its_command(demo):
    out, _ = demo
    page = (out / "index.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert [p["title"] for p in summary["panels"]] == HEADINGS and summary["dataset"] == "samples"
    for p in summary["panels"]:
        assert html.escape(p["title"]) in page and p["commands"]
        for cmd in p["commands"]:
            assert html.escape(cmd) in page and cmd.startswith("guidekit ")
    assert "Total wall time" in page and "embedded" in page and "small-n" in page.lower()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no temp folders left


def test_embedded_images_are_pngs(demo):
    images = images_of((demo[0] / "index.html").read_text())
    assert len(images) > 30
    assert all(img.size == (32, 32) for img in images.values())
    assert "src='runs/" not in (demo[0] / "index.html").read_text()  # self-contained


def commands(out) -> dict[str, str]:
    """Every command of the page, keyed by its --out folder name."""
    summary = json.loads((out / "summary.json").read_text())
    cmds = [c for p in summary["panels"] for c in p["commands"]]
    return {shlex.split(c)[-1].rsplit("/", 1)[-1]: c for c in cmds}


def run_command(cmd: str, dest) -> int:
    args = shlex.split(cmd)[1:]
    assert args[-2] == "--out"
    return main(args[:-1] + [str(dest), "--no-progress"])


def test_commands_reproduce_the_panels(demo, tmp_path):
    out, _ = demo
    images = images_of((out / "index.html").read_text())
    cmds = commands(out)
    assert {"cfg", "classifier-w0", "classifier-w5", "sdedit", "repaint-wide", "combined"} <= set(cmds)
    for name, cmd in cmds.items():
        assert run_command(cmd, tmp_path / name) == 0, cmd
    # pixel-exact: the command's files hold the page's images
    canny = next(n for n in cmds if re.fullmatch(r"canny-\d+-null", n))
    for name, alt, i in (("repaint-sr2", "sr2, seed 0, column 4", 0), ("classifier-w5", "Trouser, w = 5, column 2", 1),
                         (canny, "canny of a Trouser, ∅, seed 0, column 3", 0)):
        png = sorted((tmp_path / name).glob("0*.png"))[i]
        assert Image.open(png).tobytes() == images[alt].tobytes(), name
    assert (tmp_path / "combined" / "index.html").exists() and (tmp_path / "cfg" / "results.md").exists()


def test_out_is_a_file_exits_2_and_leaves_nothing(tmp_path, capsys):
    target = tmp_path / "report"
    target.write_text("mine")
    assert main(["demo", "--quick", "--no-progress", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_failure_midway_keeps_the_old_report(tmp_path, monkeypatch, capsys):
    from guidekit.errors import GuidekitError
    from guidekit.experiments import demo_panels

    out = tmp_path / "demo"
    out.mkdir()
    (out / "index.html").write_text("old")
    (out / "summary.json").write_text('{"command": "demo"}')  # an earlier demo page: the one kind --out replaces

    def broken(ctx):
        raise GuidekitError("sdedit broke")
    monkeypatch.setattr(demo_panels, "sdedit", broken)
    assert main(["demo", "--quick", "--no-progress", "--panels", "classifier,sdedit", "--out", str(out)]) == 2
    assert "sdedit broke" in capsys.readouterr().err
    assert (out / "index.html").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_unknown_panel_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--panels", "cfg,fireworks", "--out", str(tmp_path / "d")])
    assert e.value.code == 2 and "fireworks" in capsys.readouterr().err


def test_full_dataset_is_used_when_installed(make_idx_dir, no_system_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    data = make_idx_dir(n_test=20)
    out = tmp_path / "d"
    assert main(["demo", "--quick", "--panels", "controlnet,sdedit", "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"report: {(out / 'index.html').resolve()}" in printed.out and "sdedit:" in printed.out + printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "fashion-mnist" and [p["key"] for p in summary["panels"]] == ["controlnet", "sdedit"]
    assert all(f"--data {data}" in c for p in summary["panels"] for c in p["commands"])
    assert "test split" in (out / "index.html").read_text()


def test_bad_data_folder_is_an_error_not_a_fallback(no_system_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(idx.ENV_VAR, str(tmp_path / "nowhere"))
    assert main(["demo", "--quick", "--no-progress", "--panels", "sdedit", "--out", str(tmp_path / "d")]) == 2
    assert "nowhere" in capsys.readouterr().err and not (tmp_path / "d").exists()


TILE = re.compile(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' width='\d+' height='\d+'( class='framed')? "
                  r"alt='([^']*)'>((?:<div class='cap'>[^<]*</div>)*)")


def tiles_of(page: str) -> dict[str, tuple[torch.Tensor, bool, list[str]]]:
    """alt text → (image as a (1, 1, H, W) tensor in [−1, 1] decoded from its PNG, framed, caption lines)."""
    out = {}
    for m in TILE.finditer(page):
        a = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("L"), dtype=np.float64)
        captions = [html.unescape(c) for c in re.findall(r"<div class='cap'>([^<]*)</div>", m.group(4))]
        out[html.unescape(m.group(3))] = (torch.from_numpy(a / 127.5 - 1)[None, None], bool(m.group(2)), captions)
    return out


def section(page: str, key: str) -> str:
    """The HTML of one panel: from its heading to the next."""
    return page.split(f"<h2 id='{key}'>", 1)[1].split("<h2 ", 1)[0]


def number(caption: str) -> float:
    """The number in a caption such as 'F1 0.62', 'L2 0.120', '18.3 dB' or 'RMSE 0.131'."""
    return float(re.search(r"-?\d+\.\d+", caption).group())


def close(caption: str, value: float) -> bool:
    """Whether a caption shows value to its printed precision."""
    digits = len(re.search(r"\.(\d+)", caption).group(1))
    return abs(number(caption) - value) <= 0.5 * 10 ** -digits + 1e-9


def outputs(tiles: dict, row: str) -> list[tuple]:
    """The captioned output tiles (seed columns) of a row."""
    return [t for alt, t in tiles.items() if alt.startswith(f"{row}, seed ")]


def test_combined_numbers_are_computed_from_its_images(demo):
    page = (demo[0] / "index.html").read_text()
    part = section(page, "combined")
    tiles, canny = tiles_of(part), get_condition("canny")
    with_cn, without = "RePaint + CFG + ControlNet", "RePaint + CFG only"
    x0, mask = tiles[f"{with_cn}, image, column 1"][0], (tiles[f"{with_cn}, mask, column 2"][0] + 1) / 2
    hint = (tiles[f"{with_cn}, canny hint, column 4"][0] + 1) / 2
    means = {}
    for row in (with_cn, without):
        shown = outputs(tiles, row)
        assert shown and all(len(caption) == 2 for _, _, caption in shown)
        f1s, psnrs = [], []
        for image, _, (f1_text, psnr_text) in shown:
            f1 = float(canny.adherence(hint, image)["edge_f1"])
            l2, psnr = (float(v) for v in masked_errors(image, x0, mask))
            assert f1_text.startswith("F1 ") and close(f1_text, f1), (row, f1_text, f1)
            assert psnr_text.endswith(" dB") and close(psnr_text, psnr), (row, psnr_text, psnr)
            f1s.append(f1)
            psnrs.append(psnr)
        means[row] = (np.mean(f1s), np.mean(psnrs))
    (fa, pa), (fb, pb) = means[with_cn], means[without]
    claim = re.search(r"edge F1 is (\d\.\d\d), (above|below|about the same as) the (\d\.\d\d) without it, and "
                      r"their PSNR (\d+\.\d) dB is (above|below|about the same as) the (\d+\.\d) dB", part)
    assert claim, part
    assert close(claim[1], fa) and close(claim[3], fb) and close(claim[4], pa) and close(claim[6], pb)
    assert claim[2] == ("about the same as" if abs(fa - fb) <= 0.01 else "above" if fa > fb else "below")


def test_repaint_numbers_are_computed_from_its_images(demo):
    from guidekit.masks import MASK_KINDS

    tiles = tiles_of(section((demo[0] / "index.html").read_text(), "repaint"))
    for kind in MASK_KINDS:
        x0, mask = tiles[f"{kind}, image, column 1"][0], (tiles[f"{kind}, mask, column 2"][0] + 1) / 2
        shown = outputs(tiles, kind)
        assert shown
        for image, _, (l2_text, psnr_text) in shown:
            l2, psnr = (float(v) for v in masked_errors(image, x0, mask))
            assert close(l2_text, l2) and close(psnr_text, psnr), (kind, l2_text, psnr_text, l2, psnr)


def test_controlnet_and_sdedit_numbers_are_computed_from_their_images(demo):
    page = (demo[0] / "index.html").read_text()
    tiles = tiles_of(section(page, "controlnet"))
    rows = {alt.split(", source,")[0] for alt in tiles if ", source, " in alt}
    assert len(rows) >= 4
    for row in rows:
        cond = get_condition(row.split(" ")[0])  # "canny of a Trouser, ∅" → canny
        hint = (tiles[f"{row}, hint, column 2"][0] + 1) / 2
        for image, _, (f1_text,) in [tiles[f"{row}, source, column 1"], *outputs(tiles, row)]:
            assert close(f1_text, float(cond.adherence(hint, image)["edge_f1"])), (row, f1_text)
    tiles = tiles_of(section(page, "sdedit"))
    guides = {alt.split(", stroke guide,")[0]: t[0] for alt, t in tiles.items() if ", stroke guide, " in alt}
    checked = 0
    for alt, (image, _, captions) in tiles.items():
        if ", t0 = " in alt:
            rmse = float(((image - guides[alt.split(", t0 = ")[0]]) / 2).square().mean().sqrt())
            assert close(captions[0], rmse), (alt, captions, rmse)
            checked += 1
    assert checked >= 4


def test_masks_and_mostly_white_tiles_are_framed(demo):
    tiles = tiles_of((demo[0] / "index.html").read_text())
    masks = [alt for alt in tiles if ", mask, " in alt]
    assert len(masks) >= 7 and all(tiles[alt][1] for alt in masks)
    for alt, (image, framed, _) in tiles.items():
        if float((image.mean() + 1) / 2) > 0.5:
            assert framed, alt
    assert "img.framed{outline:1px solid" in (demo[0] / "index.html").read_text()


def test_mask_frames_show_on_the_rendered_page(demo):
    """In headless Chromium the ring around a mask tile is not white (the page is)."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs a system chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto((demo[0] / "index.html").resolve().as_uri())
            for alt in ("half, mask, column 2", "every-second-line, mask, column 2"):  # white at their edges
                tile = page.locator(f"img[alt='{alt}']")
                tile.scroll_into_view_if_needed()
                box = tile.bounding_box()
                shot = page.screenshot(clip={"x": box["x"] - 2, "y": box["y"] - 2, "width": box["width"] + 4,
                                             "height": box["height"] + 4})
                a = np.asarray(Image.open(io.BytesIO(shot)).convert("L"))
                ring = np.concatenate([a[1, 1:-1], a[-2, 1:-1], a[1:-1, 1], a[1:-1, -2]])
                assert ring.max() < 200 and a[0, 0] > 240, (alt, ring.max(), a[0, 0])
        finally:
            browser.close()
