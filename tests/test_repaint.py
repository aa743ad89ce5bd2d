"""RePaint (Lugmayr et al. 2022): jump schedule and NFE, exact known region, masks, a Gaussian golden test, CLI."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gaussian import BatchNoise, GaussianEps, MixtureEps
from guidekit.cli import main
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError
from guidekit.guidance import ClassifierFreeGuidance, ClassifierGuidance
from guidekit.masks import MASK_KINDS, check_mask, load_mask, make_mask
from guidekit.sampling import DDPM, sample
from guidekit.sampling.repaint import (RePaintConstraint, count_nfe, expected_nfe, inpaint, jump_count, jump_length_for,
                                       repaint_levels)

SCHEDULE = NoiseSchedule.linear(1000)


def nfe_formula(T, j, r):
    """NFE = T' + (r − 1)·j·J with J = max(0, ⌈T'/j⌉ − 1) jump points k = 0, j, 2j, … < T' − j."""
    return T + (r - 1) * j * max(0, math.ceil(T / j) - 1)


# ---------------------------------------------------------------- jump schedule

@pytest.mark.parametrize("T,j,r", [(250, 10, 10), (25, 5, 3), (20, 10, 4), (10, 3, 2), (7, 7, 1), (50, 1, 4),
                                   (12, 5, 1), (13, 4, 3)])
def test_jump_schedule_length_and_nfe_match_the_formula(T, j, r):
    levels = repaint_levels(SCHEDULE.timesteps(T), j, r)
    J = max(0, math.ceil(T / j) - 1)
    assert jump_count(T, j) == J
    assert count_nfe(levels) == nfe_formula(T, j, r) == expected_nfe(T, j, r)
    assert len(levels) == T + 1 + 2 * (r - 1) * j * J  # every extra descent has a matching ascent
    assert levels[0] == 999.0 and levels[-1] == -1.0 and min(levels) == -1.0
    assert set(levels) == set(SCHEDULE.timesteps(T))  # only the sampler's own levels, up and down


def test_paper_schedule_is_2410_evaluations_and_4570_moves():
    levels = repaint_levels(SCHEDULE.timesteps(250), 10, 10)
    assert count_nfe(levels) == 2410 and len(levels) - 1 == 4570


def test_jump_schedule_goes_down_then_back_up_j_levels():
    assert repaint_levels([3.0, 2.0, 1.0, 0.0, -1.0], 2, 2) == [3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, -1.0]
    assert repaint_levels([3.0, 2.0, 1.0, 0.0, -1.0], 2, 1) == [3.0, 2.0, 1.0, 0.0, -1.0]


@pytest.mark.parametrize("args,message", [
    ((0, 2), "jump_length must be an integer >= 1"),
    ((2, 0), "jump_n_sample must be an integer >= 1"),
    ((10, 2), "leaves no room to jump back"),
])
def test_jump_schedule_rejects_bad_settings(args, message):
    with pytest.raises(GuidekitError, match=message):
        repaint_levels(SCHEDULE.timesteps(10), *args)


# ---------------------------------------------------------------- masks

def test_check_mask_accepts_and_converts():
    x = torch.zeros(3, 2, 8, 8, dtype=torch.float64)
    m = (torch.arange(64).view(1, 1, 8, 8) % 2).to(torch.uint8)
    out = check_mask(m, x)
    assert out.dtype == torch.float64 and out.shape == (1, 1, 8, 8)
    assert check_mask(m.expand(3, 1, 8, 8).bool(), x).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("mask,message", [
    (torch.full((1, 1, 8, 8), 0.5), "threshold it"),
    (torch.ones(8, 8), "must be 4-D"),
    (torch.ones(1, 3, 8, 8), "1 channel"),
    (torch.ones(1, 1, 4, 4), "resize the mask"),
    (torch.ones(2, 1, 8, 8), "must be 1 or the number of images 3"),
    (torch.ones(1, 1, 8, 8), "keeps everything: nothing to inpaint"),
    (torch.zeros(1, 1, 8, 8), "keeps nothing: this is plain sampling, drop the mask"),
])
def test_check_mask_errors_say_what_to_do(mask, message):
    with pytest.raises(GuidekitError, match=message):
        check_mask(mask, torch.zeros(3, 1, 8, 8))


@pytest.mark.parametrize("kind,lo,hi", [("wide", 0.3, 0.8), ("narrow", 0.65, 0.9), ("every-second-line", 0.5, 0.5),
                                        ("half", 0.5, 0.5), ("expand", 0.25, 0.25), ("sr2", 0.25, 0.25)])
def test_mask_generators_known_fraction_and_determinism(kind, lo, hi):
    a = make_mask(kind, 32, 64, torch.Generator().manual_seed(3))
    b = make_mask(kind, 32, 64, torch.Generator().manual_seed(3))
    assert a.shape == (64, 1, 32, 32) and torch.equal(a, b)
    assert lo <= a.mean().item() <= hi
    check_mask(a, torch.zeros(64, 1, 32, 32))  # every generated mask is binary, neither empty nor full
    if kind in ("wide", "narrow", "half"):
        assert not torch.equal(a, make_mask(kind, 32, 64, torch.Generator().manual_seed(4)))


def test_fixed_masks_layout():
    assert torch.equal(make_mask("every-second-line", 4)[0, 0], torch.tensor([[1.0] * 4, [0.0] * 4] * 2))
    assert torch.equal(make_mask("sr2", 4)[0, 0], torch.tensor([[1.0, 0, 1, 0], [0.0] * 4] * 2))
    e = make_mask("expand", 8)[0, 0]
    assert e[2:6, 2:6].all() and e.sum() == 16


def test_load_mask_png_white_is_known(tmp_path):
    img = Image.new("L", (16, 16), 0)
    img.paste(255, (0, 0, 8, 16))  # left half white
    img.save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", 32)
    assert m.shape == (1, 1, 32, 32) and m[..., :16].all() and not m[..., 16:].any()
    with pytest.raises(GuidekitError, match="does not exist"):
        load_mask(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(GuidekitError, match="cannot read mask"):
        load_mask(tmp_path / "bad.png")


# ---------------------------------------------------------------- the known region is exact

def mixture():
    g = torch.Generator().manual_seed(0)
    means = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64) * 1.6 - 0.8
    return MixtureEps(SCHEDULE, means, torch.full((2, 1, 8, 8), 0.2, dtype=torch.float64))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m"])
def test_known_region_is_bit_exact(sampler):
    x0 = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = make_mask("wide", 8, 3, torch.Generator().manual_seed(2))
    out, nfe = inpaint(mixture(), SCHEDULE, x0, mask, {}, sampler, [0, 1, 2], 12, jump_length=3, jump_n_sample=3)
    known = mask.expand_as(out).bool()
    assert torch.equal(out[known], x0.expand_as(out)[known])
    assert not torch.equal(out[~known], x0.expand_as(out)[~known])
    assert nfe == nfe_formula(12, 3, 3) and torch.isfinite(out).all()


def test_image_depends_on_its_seed_not_the_batch():
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = make_mask("narrow", 8, 3, torch.Generator().manual_seed(2))
    a, _ = inpaint(mixture(), SCHEDULE, x0, mask, {}, "ddpm", [4, 5, 6], 6, 2, 2)
    b, _ = inpaint(mixture(), SCHEDULE, x0, mask, {}, "ddpm", [4, 5, 6], 6, 2, 2, batch_size=1)
    assert torch.equal(a, b)


def test_composes_with_guidance_and_a_controlnet_hint():
    """CFG and classifier guidance are denoisers; a hint rides in cond to every evaluation."""
    from gaussian import MixtureClassifier

    mix, seen = mixture(), []

    def hinted(x, t, cond):
        seen.append(cond["hint"].shape[0] == x.shape[0] and bool((cond["hint"] == 7).all()))
        return mix(x, t, cond)

    den = ClassifierGuidance(ClassifierFreeGuidance(hinted, 2.0), MixtureClassifier(mix), SCHEDULE, 1.0)
    x0 = torch.zeros(1, 1, 8, 8)
    mask = make_mask("half", 8, 1, torch.Generator().manual_seed(0))
    cond = {"y": torch.tensor([0, 1]), "hint": torch.full((2, 1, 8, 8), 7.0)}
    out, nfe = inpaint(den, SCHEDULE, x0, mask, cond, "ddim", [0, 1], 6, 2, 2)
    known = mask.expand_as(out).bool()
    assert torch.equal(out[known], torch.zeros_like(out[known])) and all(seen) and len(seen) == nfe


# ---------------------------------------------------------------- golden: a 2-pixel correlated Gaussian

def test_resampling_approaches_the_analytic_conditional_mean():
    """x0 = (a, b) with corr ρ: E[b | a] = ρ·a. Without resampling RePaint is biased; more r gets closer."""
    rho, sd, a, n = 0.95, 0.5, 1.0, 2000
    den = GaussianEps(SCHEDULE, [0.0, 0.0], sd ** 2 * torch.tensor([[1.0, rho], [rho, 1.0]]))
    x0, mask = torch.tensor([a, 0.0]).view(1, 1, 1, 2), torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    errors = []
    for r in (1, 4, 16):
        levels = repaint_levels(SCHEDULE.timesteps(50), 1, r)
        x = sample(den, torch.randn(n, 1, 1, 2, generator=torch.Generator().manual_seed(1)), levels, {},
                   DDPM(SCHEDULE), BatchNoise(n, 0), [RePaintConstraint(x0, mask, SCHEDULE)])
        assert (x[:, 0, 0, 0] == a).all()
        errors.append(abs(x[:, 0, 0, 1].double().mean().item() - rho * a))
    # standard error ≈ 0.2 / √2000 ≈ 0.005; measured ≈ 0.27, 0.09, 0.07
    assert errors[0] > 0.2 and errors[1] < errors[0] - 0.1 and errors[2] < errors[1] and errors[2] < 0.1


# ---------------------------------------------------------------- CLI

TRAIN = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--no-progress"]
INPAINT = ["--steps", "4", "--jump-length", "2", "--jump-n-sample", "2", "--no-progress", "--dataset", "samples"]


def png(path):
    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.uint8).copy())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("repaint") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def test_cli_inpaint_writes_grid_pngs_and_manifest(run_dir, tmp_path, capsys):
    out = tmp_path / "inp"
    assert main(["inpaint", str(run_dir), "--from-dataset", "3", "--mask", "half", "--n", "2", "--out", str(out)]
                + INPAINT) == 0
    assert "NFE 6 per image" in capsys.readouterr().out  # 4 + (2 − 1)·2·(⌈4/2⌉ − 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["nfe"] == 6 and manifest["jump_length"] == 2 and manifest["known_fraction"] == 0.5
    assert manifest["source"] == "samples[3]" and len(manifest["images"]) == 2
    image, mask = (png(out / f) for f in ("image.png", "mask.png"))
    for entry in manifest["images"]:
        result = png(out / entry["file"])
        assert torch.equal(result[mask == 255], image[mask == 255])
    assert Image.open(out / "grid.png").width > 32 * 5


@pytest.mark.parametrize("jump_timesteps, steps, T, j", [(40, 250, 1000, 10), (40, 50, 1000, 2), (40, 10, 1000, 1),
                                                       (100, 20, 1000, 2)])
def test_jump_timesteps_convert_to_sampler_steps(jump_timesteps, steps, T, j):
    assert jump_length_for(jump_timesteps, steps, T) == j


def test_cli_jump_timesteps_sets_the_jump_length(run_dir, tmp_path, capsys):
    out = tmp_path / "inp"
    i = INPAINT.index("--jump-length")
    args = INPAINT[:i] + INPAINT[i + 2:]  # the two options are exclusive
    assert main(["inpaint", str(run_dir), "--from-dataset", "3", "--mask", "half", "--n", "1", "--out", str(out),
                 "--jump-timesteps", "500"] + args) == 0  # 500 of T = 1000 at 4 steps: j = 2
    assert json.loads((out / "manifest.json").read_text())["jump_length"] == 2


def test_cli_inpaint_image_file_and_mask_file(run_dir, tmp_path):
    Image.new("L", (28, 28), 200).save(tmp_path / "img.png")
    m = Image.new("L", (32, 32), 255)
    m.paste(0, (8, 8, 24, 24))
    m.save(tmp_path / "m.png")
    out = tmp_path / "inp"
    assert main(["inpaint", str(run_dir), "--image", str(tmp_path / "img.png"), "--mask", str(tmp_path / "m.png"),
                 "--class", "bag", "--w", "1", "--sampler", "dpmpp-2m", "--n", "1", "--out", str(out)] + INPAINT) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_name"] == "Bag" and manifest["w"] == 1.0 and manifest["known_fraction"] == 0.75


@pytest.mark.parametrize("args,message", [
    (["--from-dataset", "0", "--mask", "circle"], "does not exist"),
    (["--from-dataset", "9999", "--mask", "half"], "out of range"),
    (["--from-dataset", "0", "--mask", "ALLWHITE"], "keeps everything"),
    (["--from-dataset", "0", "--mask", "half", "--jump-length", "4"], "leaves no room to jump back"),
    (["--from-dataset", "0", "--mask", "half", "--class", "spaceship"], "spaceship"),
    (["--image", "missing.png", "--mask", "half"], "does not exist"),
    (["--mask", "half"], "one of the arguments --image --from-dataset is required"),
    (["--from-dataset", "0", "--mask", "half", "--jump-n-sample", "0"], "--jump-n-sample must be >= 1"),
])
def test_cli_inpaint_bad_input_exits_2(run_dir, tmp_path, capsys, args, message):
    white = tmp_path / "white.png"
    Image.new("L", (32, 32), 255).save(white)
    out = tmp_path / "out"
    args = [str(white) if a == "ALLWHITE" else a for a in args]
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["inpaint", str(run_dir), "--out", str(out)] + INPAINT + args))
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["white.png"]


def test_sweep_repaint_tiny_run_and_resume(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    args = ["sweep", "repaint", str(run_dir), "--n", "10", "--steps", "4", "--jump-length", "2", "--jump-n-sample",
            "2", "--reference", "samples", "--no-progress", "--out", str(out)]
    assert main(args + ["--masks", "half"]) == 0
    assert main(args + ["--masks", "half,sr2"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["mask"], r["r"], r["nfe"]) for r in rows] == [("half", "1", "4"), ("half", "2", "6"),
                                                             ("sr2", "1", "4"), ("sr2", "2", "6")]
    for r in rows:
        assert float(r["l2"]) > 0 and float(r["psnr"]) > 0 and float(r["fid"]) > 0 and float(r["img_per_s"]) > 0
    assert "| half | 2 | 10 |" in (out / "results.md").read_text()
    assert (out / "grid.png").stat().st_size > 1000
    assert main(args + ["--masks", "half", "--jump-length", "1"]) == 2  # other settings, same folder


def test_mask_kinds_are_the_papers_six():
    assert MASK_KINDS == ("wide", "narrow", "every-second-line", "half", "expand", "sr2")


def test_inpaint_cli_with_a_controlnet_from_the_zoo(tmp_path):
    """RePaint + CFG + ControlNet in one CLI call: the hint changes the completion, the known pixels stay exact."""
    import json

    import numpy as np
    from PIL import Image

    from guidekit.cli import main

    base = ["inpaint", "fmnist-cfg", "--from-dataset", "1", "--dataset", "samples", "--mask", "expand",
            "--class", "Dress", "--w", "1", "--steps", "3", "--jump-length", "1", "--jump-n-sample", "2", "--n", "1",
            "--no-progress", "--device", "cpu"]
    outs = {}
    for scale in ("0", "1"):
        out = tmp_path / f"s{scale}"
        assert main(base + ["--controlnet", "fmnist-canny", "--control-scale", scale, "--out", str(out)]) == 0
        outs[scale] = np.array(Image.open(out / "0000_seed0.png"))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["controlnets"] == ["fmnist-canny"] and manifest["control_scale"] == float(scale)
        known = np.array(Image.open(out / "mask.png").convert("L")) > 127
        assert (outs[scale][known] == np.array(Image.open(out / "image.png"))[known]).all()
    assert not (outs["0"] == outs["1"]).all()
    assert main(base + ["--controlnet", str(tmp_path / "missing"), "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
