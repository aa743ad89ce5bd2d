"""`guidekit eval` and `guidekit sweep cfg` end to end on a tiny model, the embedded samples as reference."""

import csv
import json

import pytest

from guidekit.cli import main

TRAIN = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--no-progress"]
EVAL = ["--reference", "samples", "--no-progress"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_writes_table_plots_grids_and_resumes(run_dir, tmp_path, cache):
    out = tmp_path / "sweep"
    args = ["sweep", "cfg", str(run_dir), "--n", "20", "--steps", "2", "--out", str(out)] + EVAL
    assert main(args + ["--w", "0"]) == 0
    first = read_csv(out / "results.csv")
    assert [r["w"] for r in first] == ["0.0"]
    assert list(cache.glob("ref-*.safetensors"))  # reference features cached on first use
    assert main(args + ["--w", "0,1"]) == 0
    rows = read_csv(out / "results.csv")
    assert [r["w"] for r in rows] == ["0.0", "1.0"] and rows[0] == first[0]  # the finished row was kept
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and float(r["fid"]) > 0 and float(r["is"]) >= 1
    assert "FID-FMNIST" in (out / "results.md").read_text()
    for name in ("fid_vs_is.png", "metrics_vs_w.png", "grids/w0.png", "grids/w1.png"):
        assert (out / name).stat().st_size > 1000, name


def test_sweep_refuses_other_settings_in_same_folder(run_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    base = ["sweep", "cfg", str(run_dir), "--w", "0", "--steps", "2", "--out", str(out)] + EVAL
    assert main(base + ["--n", "20"]) == 0
    assert main(base + ["--n", "30"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_eval_model_and_sample_folder(run_dir, tmp_path):
    assert main(["eval", str(run_dir), "--n", "20", "--steps", "2", "--json", str(tmp_path / "m.json")] + EVAL) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 20 and metrics["w"] == 1.0 and metrics["accuracy"] is not None
    samples = tmp_path / "s"
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "2", "--out", str(samples), "--no-progress"]) == 0
    assert main(["eval", str(samples), "--json", str(tmp_path / "s.json")] + EVAL) == 0
    metrics = json.loads((tmp_path / "s.json").read_text())
    assert metrics["n"] == 20 and len(metrics["per_class_accuracy"]) == 10


@pytest.mark.parametrize("args,message", [
    (["sweep", "cfg", "RUN", "--w", "0,-1", "--out", "OUT"], "must be >= 0"),
    (["sweep", "cfg", "RUN", "--w", "a,b", "--out", "OUT"], "comma-separated numbers"),
    (["sweep", "cfg", "RUN", "--n", "5", "--out", "OUT"], "too small"),
    (["eval", "OUT"], "does not exist"),
])
def test_bad_sweep_input_exits_2(run_dir, tmp_path, capsys, args, message):
    args = [str(run_dir) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(args + EVAL))
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cached_samples_keep_their_timing(tmp_path):
    import torch

    from guidekit.experiments.sweep import cached_samples
    made = []
    make = lambda: made.append(1) or torch.zeros(2, 1, 4, 4)  # noqa: E731
    first, t1 = cached_samples(tmp_path / "w1.safetensors", make)
    again, t2 = cached_samples(tmp_path / "w1.safetensors", make)
    assert made == [1] and torch.equal(first, again) and t1 is not None and abs(t1 - t2) < 1e-3


def test_sweep_compare_overlays_finished_sweeps(tmp_path, capsys):
    from guidekit.experiments.sweep import write_rows
    for name, fids in (("a", [5.0, 3.0]), ("b", [4.0, 6.0])):
        (tmp_path / name).mkdir()
        write_rows(tmp_path / name / "results.csv",
                   [{"w": w, "n": 20, "fid": f, "is": 2.0 + w} for w, f in zip((0.0, 1.0), fids)])
    out = tmp_path / "plots" / "cmp.png"
    assert main(["sweep", "compare", f"{tmp_path / 'a'}=cfg", str(tmp_path / "b"), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and not list(out.parent.glob(".*tmp*"))
    assert main(["sweep", "compare", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no finished sweep rows" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_steps_sweep_compares_few_step_samplers_with_the_baseline(run_dir, tmp_path, capsys):
    out = tmp_path / "steps"
    args = ["sweep", "steps", str(run_dir), "--samplers", "ddim,dpmpp-2m", "--nfe", "3,2", "--baseline", "ddpm:4",
            "--n", "20", "--batch-size", "10", "--out", str(out)] + EVAL
    assert main(args) == 0
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2 * 2 + 1  # header, rule, 2 samplers x 2 NFE, the baseline
    assert table[2].startswith("| ddpm (baseline) | 4 |") and "| 1.00 |" in table[2]  # run and listed first
    for sub, nfes in (("ddim", (2, 3)), ("dpmpp-2m", (2, 3)), ("ddpm-baseline", (4,))):
        assert [int(float(r["nfe"])) for r in read_csv(out / sub / "results.csv")] == list(nfes)
        assert all((out / sub / "grids" / f"nfe{k}.png").exists() for k in nfes)
    assert (out / "fid_vs_nfe.png").stat().st_size > 1000
    before = (out / "ddim" / "results.csv").read_text()
    assert main(args) == 0  # resume: nothing to redo, the same rows
    assert (out / "ddim" / "results.csv").read_text() == before


@pytest.mark.parametrize("extra, message", [
    (["--baseline", "euler:10"], "is not SAMPLER:STEPS"),
    (["--samplers", "ddim,foo"], "is not SAMPLER:STEPS"),
    (["--nfe", "0,5"], "--nfe must hold integers >= 1"),
])
def test_steps_sweep_bad_input_exits_2(run_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["sweep", "steps", str(run_dir), "--n", "20", "--out", str(tmp_path / "o")] + EVAL + extra))
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
