"""ControlNet sampling and evaluation (Zhang et al. 2023): `guidekit control`, `sweep control|control-curve`."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit.checkpoints import load_controlnet, load_model, model_files, save_controlnet, write_folder
from guidekit.cli import main
from guidekit.data import load_dataset
from guidekit.diffusion import NoiseSchedule
from guidekit.models import ControlNet, UNet, UNetConfig

T = 100
MICRO = dict(channels=8, norm_groups=4, num_train_timesteps=T)
FAST = ["--steps", "2", "--device", "cpu", "--no-progress"]
EVAL = ["--dataset", "samples", "--reference", "samples"]


def make_base(seed=0):
    torch.manual_seed(seed)
    base = UNet(UNetConfig.preset("tiny", num_classes=10, **MICRO)).eval()
    with torch.no_grad():  # a "pretrained" base: no zero-initialized layers left
        for p in base.parameters():
            p.normal_(0, 0.1)
    return base


def trained_like(net: ControlNet, seed: int) -> ControlNet:
    """A ControlNet whose zero convolutions are no longer zero (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A base model folder, canny and mask ControlNets for it, and a ControlNet of another base."""
    root = tmp_path_factory.mktemp("control")
    names = load_dataset("samples").class_names
    base, other = make_base(0), make_base(7)
    model = write_folder(root / "model", model_files(base, NoiseSchedule.linear(T), names, base.state_dict()))
    canny = save_controlnet(root / "canny", trained_like(ControlNet.from_unet(base), 1), base, "canny")
    mask = save_controlnet(root / "mask", trained_like(ControlNet.from_unet(base), 2), base, "mask")
    foreign = save_controlnet(root / "foreign", ControlNet.from_unet(other), other, "canny")
    return {"model": str(model), "canny": str(canny), "mask": str(mask), "foreign": str(foreign), "root": root}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """One reference-feature cache for the whole module."""
    folder = tmp_path_factory.getbasetemp() / "control-cache"
    monkeypatch.setenv("GUIDEKIT_CACHE", str(folder))
    return folder


def pixels(path):
    return np.asarray(Image.open(path))


def test_control_from_index_end_to_end(files, tmp_path):
    out = tmp_path / "out"
    assert main(["control", files["model"], "--controlnet", files["canny"], "--condition-from", "3", "--dataset",
                 "samples", "--n", "3", "--out", str(out)] + FAST) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000_seed0.png", "0001_seed1.png", "0002_seed2.png", "grid.png", "hint0_canny.png",
                     "manifest.json", "source.png"]
    m = json.loads((out / "manifest.json").read_text())
    label = int(load_dataset("samples").labels[3])
    assert m["class"] == label == m["source_label"] and m["condition_from"] == 3 and m["w"] == 1.0
    assert m["controlnets"][0]["condition"] == "canny" and m["controlnets"][0]["control_scale"] == 1.0
    assert m["hint_uncond"] is True and m["seeds"] == [0, 1, 2] and m["steps"] == 2
    hint = pixels(out / "hint0_canny.png")
    assert set(np.unique(hint)) <= {0, 255} and hint.max() == 255  # a binary edge map
    assert Image.open(out / "grid.png").width > 5 * 32 * 3  # source | hint | 3 outputs at scale 3
    assert not list(tmp_path.glob(".out*"))  # the temp folder is gone


def test_two_controlnets_condition_images_per_net_scales(files, tmp_path):
    drawing = np.zeros((28, 28), np.uint8)
    drawing[6:22, 8] = drawing[6:22, 19] = drawing[6, 8:20] = drawing[21, 8:20] = 255  # a box outline
    Image.fromarray(drawing).save(tmp_path / "edges.png")
    blob = np.zeros((40, 40), np.uint8)
    blob[8:32, 10:30] = 255
    Image.fromarray(blob).save(tmp_path / "mask.png")
    common = ["control", files["model"], "--controlnet", files["canny"], "--controlnet", files["mask"],
              "--class", "Bag", "--n", "2"] + FAST
    out = tmp_path / "two"
    assert main(common + ["--condition-image", str(tmp_path / "edges.png"), str(tmp_path / "mask.png"),
                          "--control-scale", "1,0.5", "--control-start", "0,0.2", "--hint-cond-only",
                          "--out", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [(c["condition"], c["control_scale"], c["control_start"]) for c in m["controlnets"]] == \
        [("canny", 1.0, 0.0), ("mask", 0.5, 0.2)]
    assert m["class_name"] == "Bag" and m["hint_uncond"] is False and "source_label" not in m
    assert m["condition_images"] == [str(tmp_path / "edges.png"), str(tmp_path / "mask.png")]
    assert pixels(out / "hint0_canny.png")[8, 10] == 255  # 28x28 padded by 2 to 32x32
    # one shared file for both, and a scale of 0 for both: the base model's samples
    zero = tmp_path / "zero"
    assert main(common + ["--condition-image", str(tmp_path / "edges.png"), "--control-scale", "0",
                          "--out", str(zero)]) == 0
    assert not np.array_equal(pixels(out / "0000_seed0.png"), pixels(zero / "0000_seed0.png"))


def test_scale_zero_is_exactly_the_base_model(files, tmp_path):
    from guidekit.pipelines import control_samples
    from guidekit.pipelines import Guidance, SamplerSettings, sample_guided

    model = load_model(files["model"])
    nets = [load_controlnet(files["canny"], model.net)]
    hints = [(torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.7).float()]
    labels, seeds, settings = torch.tensor([0, 5, 9]), [4, 5, 6], SamplerSettings(steps=3, batch_size=2)
    base = sample_guided(model, labels, seeds, Guidance(w=1.0), settings)
    assert torch.equal(control_samples(model, nets, hints, labels, seeds, 0.0, settings, guidance=Guidance(w=1.0)),
                       base)
    steered = control_samples(model, nets, hints, labels, seeds, 1.0, settings, guidance=Guidance(w=1.0))
    assert not torch.allclose(steered, base)
    # the CLI at --control-scale 0 writes the same pixels as `guidekit sample`
    ctl, smp = tmp_path / "ctl", tmp_path / "smp"
    assert main(["control", files["model"], "--controlnet", files["canny"], "--condition-from", "0", "--dataset",
                 "samples", "--class", "3", "--control-scale", "0", "--n", "2", "--out", str(ctl)] + FAST) == 0
    assert main(["sample", files["model"], "--class", "3", "--n", "2", "--out", str(smp)] + FAST) == 0
    for s in (0, 1):
        assert np.array_equal(pixels(ctl / f"000{s}_seed{s}.png"), pixels(smp / f"000{s}_class3_seed{s}.png"))


@pytest.mark.parametrize("extra, message", [
    (["--condition-image", "MISSING"], "does not exist"),
    (["--condition-from", "0", "--controlnet", "FOREIGN"], "another base model"),
    (["--condition-from", "0", "--control-scale", "1,2,3"], "--control-scale has 3 values (1,2,3) for 1 ControlNet"),
    (["--condition-from", "0", "--control-start", "0.8", "--control-end", "0.2"], "control_start <= control_end"),
    (["--condition-from", "99999"], "out of range"),
    (["--condition-image", "MISSING", "MISSING", "MISSING"], "3 files for 1 ControlNet(s)"),
    (["--condition-from", "0", "--class", "null", "--hint-cond-only"], "nothing would be controlled"),
])
def test_control_bad_input_exits_2_and_writes_nothing(files, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / "nope.png") if a == "MISSING" else files["foreign"] if a == "FOREIGN" else a
             for a in extra]
    out = tmp_path / "out"
    code = main(["control", files["model"], "--controlnet", files["canny"], "--dataset", "samples", "--n", "2",
                 "--out", str(out)] + FAST + extra)
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_control_writes_files_and_resumes_by_row(files, tmp_path, monkeypatch):
    import guidekit.experiments.control as control

    made, real = [], control.control_samples
    monkeypatch.setattr(control, "control_samples", lambda *a, **k: made.append(a[5]) or real(*a, **k))
    out = tmp_path / "sweep"
    args = ["sweep", "control", files["model"], "--controlnet", files["canny"], "--n", "10", "--out", str(out),
            "--w", "1"] + FAST + EVAL
    assert main(args + ["--scale", "0,1"]) == 0
    first = read_csv(out / "results.csv")
    assert [r["scale"] for r in first] == ["0.0", "1.0"] and made == [0.0, 1.0]
    assert list(first[0])[:5] == ["scale", "n", "edge_f1", "edge_precision", "edge_recall"]
    for r in first:
        assert 0 <= float(r["edge_f1"]) <= 1 and float(r["fid"]) > 0 and 0 <= float(r["accuracy"]) <= 1
    table = (out / "results.md").read_text()
    assert "edge_f1" in table and "FID-FMNIST" in table
    for name in ("adherence_vs_scale.png", "grids/scale0.png", "grids/scale1.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    made.clear()
    assert main(args + ["--scale", "0,1,2"]) == 0
    rows = read_csv(out / "results.csv")
    assert made == [2.0] and [r["scale"] for r in rows] == ["0.0", "1.0", "2.0"] and rows[:2] == first
    assert main(args + ["--scale", "0", "--seed", "1"]) == 2  # other settings in the same folder


def test_sweep_control_curve_over_checkpoints(files, tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert main(["train-controlnet", files["model"], "--condition", "mask", "--pairs", "8", "--dataset", "samples",
                 "--steps", "2", "--batch-size", "4", "--save-every", "1", "--lr", "0.05", "--warmup", "0",
                 "--ema-decay", "0.5", "--no-progress", "--out", str(run)]) == 0
    out = tmp_path / "curve"
    args = ["sweep", "control-curve", str(run), "--base", files["model"], "--n", "10", "--out", str(out)] + FAST + EVAL
    assert main(args) == 0
    rows = read_csv(out / "results.csv")
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert all(0 <= float(r["iou"]) <= 1 and float(r["fid"]) > 0 for r in rows)
    for name in ("adherence_vs_step.png", "grids/step-00000000.png", "grids/step-00000002.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    samples = out / "samples"
    assert (samples / "step-00000000.safetensors").read_bytes() != (samples / "step-00000002.safetensors").read_bytes()
    import guidekit.experiments.control as control

    monkeypatch.setattr(control, "control_samples", lambda *a, **k: pytest.fail("a finished row was resampled"))
    assert main(args) == 0 and read_csv(out / "results.csv") == rows
    assert main(["sweep", "control-curve", str(run / "controlnet"), "--base", files["model"], "--n", "10",
                 "--out", str(tmp_path / "x")] + FAST + EVAL) == 2


def test_evaluate_control_on_balanced_test_images(files):
    from guidekit.conditions import get_condition
    from guidekit.experiments.control import control_set, evaluate_control
    from guidekit.pipelines import SamplerSettings
    from guidekit.metrics.network import load_network, network_id
    from guidekit.metrics.reference import reference

    data = load_dataset("samples")
    cset = control_set(data, [get_condition("canny")], 12, seed=3)
    assert cset.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.equal(data.labels[cset.index], cset.labels) and len(set(cset.index.tolist())) == 12
    assert torch.equal(control_set(data, [get_condition("canny")], 12, seed=3).hints[0], cset.hints[0])
    model = load_model(files["model"])
    nets = [load_controlnet(files["canny"], model.net)]
    net = load_network(None, None, "cpu")
    ref = reference(net, data, network_id(net), progress=False)
    m = evaluate_control(model, nets, data, 10, 1.0, SamplerSettings(steps=2), net, ref, seed=3)
    assert set(m) >= {"edge_f1", "edge_precision", "edge_recall", "fid", "kid", "is", "accuracy", "img_per_s"}
    assert 0 <= m["edge_f1"] <= 1 and m["n"] == 10


def test_base_null_samples_at_the_null_class(monkeypatch):
    import torch

    from guidekit.diffusion.denoiser import NULL
    from guidekit.pipelines import network_labels

    from guidekit.pipelines import Guidance

    class M:  # a class-conditional model as network_labels sees it
        class net:
            class config:
                num_classes = 10
    labels = torch.tensor([0, 3, 9])
    assert torch.equal(network_labels(M, labels, Guidance()), labels)
    assert (network_labels(M, labels, Guidance(base_null=True)) == NULL).all()
    assert torch.equal(network_labels(M, labels, Guidance(base_null=True, classifier=torch.nn.Identity())), labels)
    M.net.config.num_classes = 0  # unconditional: ∅, unless a classifier reads the labels
    assert (network_labels(M, labels, Guidance()) == NULL).all()
