"""`guidekit demo --quick`: one self-contained page with every panel, commands that work, atomic output."""

import base64
import html
import io
import json
import re
import shlex

import pytest
from PIL import Image

from guidekit.cli import main
from guidekit.data import idx

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
