"""`guidekit sweep guidance` end to end on tiny random models, the embedded samples as reference."""

import csv
import json

import pytest
import torch

from guidekit.checkpoints import model_files, write_folder
from guidekit.cli import main
from guidekit.data import load_dataset
from guidekit.diffusion import NoiseSchedule
from guidekit.models import UNetConfig
from guidekit.models.unet import UNet

EVAL = ["--reference", "samples", "--no-progress"]
# 3 trailing steps of a T = 100 linear schedule sit at σ = 1.32, 0.76, 0.34: an interval (0.5, ∞) guides two of them
FAST = ["--n", "20", "--steps", "3", "--batch-size", "20", "--interval", "0.5,inf"] + EVAL


def random_model(folder, num_classes=10, seed=0):
    """A tiny ε-predicting UNet (T = 100) with every weight perturbed, so ε(x, y) ≠ ε(x, ∅) and CFG changes images."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig.preset("tiny", num_classes=num_classes, prediction_type="eps", channels=8, norm_groups=4,
                                 num_train_timesteps=100))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    names = load_dataset("samples").class_names if num_classes else None
    write_folder(folder, model_files(net.eval(), NoiseSchedule.linear(100), names, net.state_dict()))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return random_model(root / "model"), random_model(root / "uncond", num_classes=0)


def read_csv(path):
    with open(path, newline="") as f:
        return {(r["method"], float(r["strength"])): r for r in csv.DictReader(f)}


def images(out, name):
    from safetensors.torch import load_file

    return load_file(str(out / "samples" / f"{name}.safetensors"))["images"]


METRICS = ("n", "nfe", "clipped", "fid", "kid", "is", "accuracy", "precision", "recall")


def test_sweep_guidance_rows_nfe_autoguidance_outputs_and_resume(models, tmp_path, monkeypatch):
    model, _ = models
    out = tmp_path / "sweep"
    args = ["sweep", "guidance", str(model), "--methods", "interval,cfgpp,autoguidance", "--guide-model", str(model),
            "--w", "0,1", "--lambdas", "0.5,1", "--sampler", "dpmpp-2m", "--out", str(out)] + FAST
    assert main(args) == 0
    rows = read_csv(out / "results.csv")
    assert sorted(rows) == sorted([("cfg", 0.0), ("cfg", 1.0), ("interval", 0.0), ("interval", 1.0),
                                   ("cfgpp", 0.5), ("cfgpp", 1.0), ("autoguidance", 0.0), ("autoguidance", 1.0)])
    nfe = {k: float(r["nfe"]) for k, r in rows.items()}
    assert nfe[("cfg", 0.0)] == 3 and nfe[("cfg", 1.0)] == 2 * 3  # CFG's two halves at every step
    assert nfe[("interval", 1.0)] == 5 < nfe[("cfg", 1.0)]  # one pass where σ lies outside the interval
    assert nfe[("cfgpp", 0.5)] == 6 and nfe[("autoguidance", 1.0)] == 6
    assert {rows[k]["sampler"] for k in rows if k[0] == "cfgpp"} == {"ddim"}  # CFG++ runs DDIM at the same steps
    assert {rows[k]["sampler"] for k in rows if k[0] != "cfgpp"} == {"dpmpp-2m"}
    # w = 0 is the plain conditional model for interval and autoguidance: cfg's samples, not sampled again
    assert rows[("interval", 0.0)]["shared"] == rows[("autoguidance", 0.0)]["shared"] == "cfg"
    assert not (out / "samples" / "interval_0.safetensors").exists()
    assert all(rows[("interval", 0.0)][m] == rows[("cfg", 0.0)][m] for m in METRICS)
    # autoguidance with the model as its own bad model: ε_good + w·0, exactly the w = 0 images
    assert torch.equal(images(out, "autoguidance_1"), images(out, "cfg_0"))
    assert all(rows[("autoguidance", 1.0)][m] == rows[("cfg", 0.0)][m] for m in METRICS if m != "nfe")
    assert not torch.equal(images(out, "cfg_1"), images(out, "cfg_0"))  # the model is guided at all
    for r in rows.values():
        assert float(r["fid"]) > 0 and 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["clipped"]) <= 1
    md = (out / "results.md").read_text()
    assert "Best setting per method" in md and "At matched accuracy" in md and "At matched recall" in md
    assert (out / "fronts.png").stat().st_size > 5000
    for name in ("cfg_0", "cfg_1", "interval_0", "interval_1", "cfgpp_0.5", "autoguidance_1"):
        assert (out / "grids" / f"{name}.png").stat().st_size > 500, name
    before = (out / "results.csv").read_text()

    def no_sampling(*a, **k):
        raise AssertionError("a finished sweep sampled again")
    monkeypatch.setattr("guidekit.experiments.guidance_sweep.sample_guided", no_sampling)
    assert main(args) == 0  # resume: every row finished, nothing sampled, the same table
    assert (out / "results.csv").read_text() == before


def test_sweep_guidance_distilled_student_within_its_w_range(models, tmp_path):
    model, _ = models
    run = tmp_path / "distill"
    assert main(["distill", str(model), "--w-range", "0,2", "--data", "samples", "--steps", "2", "--batch-size", "8",
                 "--no-progress", "--out", str(run)]) == 0
    out = tmp_path / "sweep"
    assert main(["sweep", "guidance", str(model), "--methods", "distilled", "--student", str(run / "model"),
                 "--w", "0,1,4", "--out", str(out)] + FAST) == 0
    rows = read_csv(out / "results.csv")
    assert sorted(k for k in rows if k[0] == "distilled") == [("distilled", 0.0), ("distilled", 1.0)]  # w = 4 > 2
    assert float(rows[("distilled", 1.0)]["nfe"]) == 3  # CFG inside the student: one pass per step
    assert rows[("distilled", 0.0)]["shared"] == ""  # another network: its w = 0 is sampled
    assert "w = 4 left out" in (out / "results.md").read_text()


def test_sweep_guidance_autoguides_an_unconditional_model(models, tmp_path):
    _, uncond = models
    out = tmp_path / "sweep"
    assert main(["sweep", "guidance", str(uncond), "--guide-model", str(uncond), "--w", "0,1",
                 "--out", str(out)] + FAST) == 0  # default methods on an unconditional model: autoguidance alone
    rows = read_csv(out / "results.csv")
    assert sorted(rows) == [("autoguidance", 0.0), ("autoguidance", 1.0), ("cfg", 0.0)]
    assert rows[("cfg", 0.0)]["accuracy"] == ""  # no requested class to score
    assert "nothing to match" in (out / "results.md").read_text()


def test_sweep_guidance_refuses_other_method_settings_in_the_same_folder(models, tmp_path, capsys):
    model, _ = models
    out = tmp_path / "sweep"
    base = ["sweep", "guidance", str(model), "--methods", "interval", "--w", "1", "--out", str(out)] + EVAL + \
        ["--n", "20", "--steps", "2", "--batch-size", "20"]
    assert main(base + ["--interval", "0.5,inf"]) == 0
    assert main(base + ["--interval", "0.2,inf"]) == 2
    assert "interval rows sampled with" in capsys.readouterr().err
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["methods"]["interval"] == {"interval": [0.5, "inf"]}


@pytest.mark.parametrize("extra, message", [
    (["--methods", "cfg,foo"], "unknown method(s) 'foo'"),
    (["--methods", "autoguidance"], "needs the weaker guiding model: give --guide-model"),
    (["--methods", "distilled"], "give --student DIR"),
    (["--methods", "cfgpp", "--lambdas", "0.5,1.5"], "--lambdas 1.5: CFG++'s λ must lie in [0, 1]"),
    (["--w", "0,-1"], "--w must hold numbers >= 0"),
    (["--student", "MODEL", "--methods", "distilled"], "is not a guidance-distilled student"),
    (["--methods", "apg", "--apg-momentum", "2"], "apg at w = 1: APG's momentum"),
    (["UNCOND", "--methods", "cfg,apg"], "is unconditional, and cfg, apg guide with"),
    (["UNCOND"], "the only method that guides it is autoguidance"),
])
def test_sweep_guidance_bad_input_exits_2_before_sampling(models, tmp_path, capsys, extra, message):
    model, uncond = models
    target = str(uncond) if extra[:1] == ["UNCOND"] else str(model)
    extra = [str(model) if a == "MODEL" else a for a in extra if a != "UNCOND"]
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["sweep", "guidance", target, "--w", "0,1", "--out", str(out)] + FAST + extra))
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def test_matched_interpolation_and_w0_sharing():
    from guidekit.experiments.guidance_sweep import MethodParams, at_matched, shares_plain

    rows = [{"strength": 0.0, "accuracy": 0.5, "fid": 10.0}, {"strength": 1.0, "accuracy": 0.7, "fid": 6.0},
            {"strength": 2.0, "accuracy": 0.9, "fid": 8.0}]
    assert at_matched(rows, "accuracy", 0.6) == pytest.approx((8.0, 0.5))  # halfway between the first two
    assert at_matched(rows, "accuracy", 0.7) == (6.0, 1.0)  # on a row
    assert at_matched(rows, "accuracy", 0.95) is None and at_matched(rows, "accuracy", None) is None
    bent = rows + [{"strength": 3.0, "accuracy": 0.6, "fid": 7.0}]  # the curve reaches 0.6 twice: the lower FID
    assert at_matched(bent, "accuracy", 0.6) == pytest.approx((7.0, 3.0))
    p = MethodParams()
    assert all(shares_plain(m, 0.0, p) for m in ("interval", "apg", "rescale", "autoguidance"))
    assert not any(shares_plain(m, 0.0, p) for m in ("cfg", "cfgpp", "cfg-zero-star", "cads", "dynamic-threshold",
                                                     "distilled"))
    assert shares_plain("cfg-zero-star", 0.0, MethodParams(zero_steps=0)) and not shares_plain("apg", 1.0, p)


def test_sweep_guidance_reads_the_reference_before_sampling(models, tmp_path, capsys, monkeypatch):
    from guidekit.models.unet import UNet

    def never(*a, **k):
        raise AssertionError("sampling started before the reference was checked")
    monkeypatch.setattr(UNet, "forward", never)
    out = tmp_path / "o"
    code = main(["sweep", "guidance", str(models[0]), "--n", "20", "--out", str(out), "--no-progress"])
    assert code == 2 and "no IDX data found" in capsys.readouterr().err and not out.exists()
