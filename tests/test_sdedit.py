"""SDEdit (Meng et al. 2022): levels, limits t0 → 0 and t0 = 1, masks, closed-form Gaussian means, CLI and sweep."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from guidekit import GuidekitError
from guidekit.cli import main
from guidekit.diffusion import NoiseSchedule, q_sample
from guidekit.guides import load_guide, stroke_painting
from guidekit.sampling import Noise, generate, make_step, sample
from guidekit.sampling.sdedit import sdedit, sdedit_levels
from gaussian import MixtureEps

SHAPE = (1, 4, 4)
SAMPLERS = ("ddpm", "ddim", "dpmpp-2m")


@pytest.fixture(scope="module")
def gauss():
    """Exact ε of x0 ~ N(μ, s²) per pixel, and a guide away from μ."""
    schedule = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    mean = torch.rand((1, *SHAPE), generator=g) * 1.2 - 0.6
    std = torch.rand((1, *SHAPE), generator=g) * 0.3 + 0.2
    guide = torch.rand((1, *SHAPE), generator=g) * 1.8 - 0.9
    return schedule, MixtureEps(schedule, mean, std), mean[0].double(), std[0].double(), guide


def test_levels_map_t0_to_a_continuous_start():
    schedule = NoiseSchedule.linear()
    assert sdedit_levels(schedule, 1.0, 10) == schedule.timesteps(10)  # t0 = 1: plain sampling's levels
    levels = sdedit_levels(schedule, 0.5, 10)
    assert levels[0] == schedule.t_from_fraction(0.5) == 499.0 and levels[-1] == -1 and len(levels) == 11
    assert all(a > b for a, b in zip(levels, levels[1:]))
    assert sdedit_levels(schedule, 0.1234, 4)[0] == pytest.approx(122.4)  # fractional: continuous ᾱ lookup
    for t0 in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(GuidekitError, match=r"\(0, 1\]"):
            sdedit_levels(schedule, t0, 10)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_tiny_t0_returns_the_guide(gauss, sampler):
    schedule, eps, _, _, guide = gauss
    out = sdedit(eps, schedule, guide, 1e-4, {}, sampler, list(range(8)), steps=5)
    sigma = float(1 - schedule.alpha_bar(schedule.t_from_fraction(1e-4))) ** 0.5  # ≈ 0.003: the only noise added
    assert (out - guide).abs().max() < 6 * sigma < 0.02


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_t0_one_is_plain_sampling_from_the_noised_guide(gauss, sampler):
    """t0 = 1 runs plain sampling's levels from x_{T−1} = √ᾱ_{T−1}·guide + √(1−ᾱ_{T−1})·n (same seeds: bit-exact);
    with guide = 0 that start differs from generate()'s x_{T−1} = n only by the factor √(1−ᾱ_{T−1}) ≈ 1 − 2e-5."""
    schedule, eps, _, _, guide = gauss
    seeds = [3, 1, 4]
    out = sdedit(eps, schedule, guide, 1.0, {}, sampler, seeds, steps=8)
    noise = Noise(seeds)
    x = q_sample(guide.expand(3, -1, -1, -1), float(schedule.alpha_bar(schedule.num_timesteps - 1)),
                 noise.randn(SHAPE))
    assert torch.equal(out, sample(eps, x, schedule.timesteps(8), {}, make_step(sampler, schedule), noise))
    zero = sdedit(eps, schedule, torch.zeros(1, *SHAPE), 1.0, {}, sampler, seeds, steps=8)
    torch.testing.assert_close(zero, generate(eps, schedule, SHAPE, seeds, {}, sampler=sampler, steps=8),
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_masked_region_is_the_guide_bit_exactly(gauss, sampler):
    schedule, eps, _, _, _ = gauss
    guide = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4] = 1
    mask[1, :, :, 2:5] = 1
    mean, std = torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.5)
    eps = MixtureEps(schedule, mean, std)
    for repeats in (1, 2):
        out = sdedit(eps, schedule, guide, 0.6, {}, sampler, [0, 1], steps=6, repeats=repeats, mask=mask)
        known = mask.bool().expand_as(out)
        assert torch.equal(out[known], guide[known])
        assert (out[~known] - guide[~known]).abs().mean() > 0.05  # the rest was re-generated
    one_mask = sdedit(eps, schedule, guide, 0.6, {}, sampler, [0, 1], steps=6, mask=mask[:1])  # batch-1 mask
    assert torch.equal(one_mask[:, :, :4], guide[:, :, :4])


def test_ddpm_mean_follows_the_posterior_mean_chain(gauss):
    """Exact ε, data N(μ, s²), σ² = ᾱs² + 1 − ᾱ: a DDPM step's mean given x_t is the true E[x_s | x_t] and every map is
    linear, so (tower rule) E[output | x_t0] = E[x0 | x_t0] = μ + √ᾱ s²/σ²·(x_t0 − √ᾱ μ) for ANY number of steps.
    With E[x_t0] = √ᾱ·guide: E[output] = μ + λ(guide − μ), λ = ᾱs²/σ², ᾱ = ᾱ(t0·T − 1); K repeats give λ^K."""
    schedule, eps, mu, s, guide = gauss
    n = 3000
    for t0, steps, repeats in ((0.1, 10, 1), (0.15, 4, 1), (0.05, 5, 3)):
        out = sdedit(eps, schedule, guide, t0, {}, "ddpm", list(range(n)), steps=steps, repeats=repeats).double()
        ab = float(schedule.alpha_bar(schedule.t_from_fraction(t0)))
        lam = ab * s ** 2 / (ab * s ** 2 + 1 - ab)
        want = mu + lam ** repeats * (guide[0].double() - mu)
        se = out.std(0) / n ** 0.5
        assert ((out.mean(0) - want).abs() / se).max() < 4.5, (t0, repeats)
        assert 0.1 < float((lam ** repeats).min()) and float((lam ** repeats).max()) < 0.9  # well between guide and μ


def test_ode_sdedit_matches_the_gaussian_flow_map(gauss):
    """The probability-flow ODE of N(μ, s²) maps x_t to μ + s/σ_t·(x_t − √ᾱ μ), σ_t² = ᾱs² + 1 − ᾱ: from
    x_t0 ~ N(√ᾱ guide, 1 − ᾱ) the output is N(μ + √ᾱ s/σ·(guide − μ), s²(1 − ᾱ)/σ²); at t0 = 1 that is the data."""
    schedule, eps, mu, s, guide = gauss
    n = 3000
    for t0 in (0.5, 1.0):
        out = sdedit(eps, schedule, guide, t0, {}, "dpmpp-2m", list(range(n)), steps=100).double()
        ab = float(schedule.alpha_bar(schedule.t_from_fraction(t0)))
        sigma = (ab * s ** 2 + 1 - ab) ** 0.5
        want_mean, want_std = mu + ab ** 0.5 * s / sigma * (guide[0].double() - mu), s * (1 - ab) ** 0.5 / sigma
        assert ((out.mean(0) - want_mean).abs() / (want_std / n ** 0.5)).max() < 4.5, t0
        assert ((out.std(0) / want_std) - 1).abs().max() < 0.07, t0
        if t0 == 1.0:
            assert ((out.mean(0) - mu).abs() / (s / n ** 0.5)).max() < 4.5 and (out.std(0) / s - 1).abs().max() < 0.07


def test_repeats_start_from_the_last_output(gauss):
    schedule, eps, _, _, guide = gauss
    seen = []
    out = sdedit(eps, schedule, guide, 0.5, {}, "ddim", [5, 6], steps=4, repeats=3,
                 callback=lambda info: seen.append(info.x.clone()) if info.level == -1 else None)
    first = sdedit(eps, schedule, guide, 0.5, {}, "ddim", [5, 6], steps=4)
    assert len(seen) == 3 and torch.equal(seen[0], first) and torch.equal(seen[-1], out)
    assert not torch.equal(seen[1], first)


def test_sdedit_validation(gauss):
    schedule, eps, _, _, guide = gauss
    run = lambda **kw: sdedit(eps, schedule, kw.pop("guide", guide), kw.pop("t0", 0.5), {}, "ddim", [0, 1],  # noqa
                              steps=2, **kw)
    for t0 in (0.0, 1.01, -1.0):
        with pytest.raises(GuidekitError, match=r"t0 = .* \(0, 1\]"):
            run(t0=t0)
    with pytest.raises(GuidekitError, match="float tensor"):
        run(guide=guide[0])
    with pytest.raises(GuidekitError, match="3 rows but there are 2 seeds"):
        run(guide=guide.expand(3, -1, -1, -1))
    with pytest.raises(GuidekitError, match=r"2 \* x - 1"):
        run(guide=guide.abs() + 1.5)
    with pytest.raises(GuidekitError, match="repeats"):
        run(repeats=0)
    with pytest.raises(GuidekitError, match="0 .* and 1"):
        run(mask=torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(GuidekitError, match="1 channel"):
        run(mask=torch.ones(1, 2, 4, 4))


def test_stroke_painting_and_load_guide(tmp_path):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[:, :, :8] = -1
    g = stroke_painting(x, levels=4)
    assert g.shape == x.shape and torch.equal(g, stroke_painting(x, levels=4))
    levels = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    assert (g[..., None] - levels).abs().min(-1).values.max() < 1e-6  # flat grey levels only
    assert bool((g[:, :, :4] == -1).all())  # the black background stays black
    with pytest.raises(GuidekitError, match="cell"):
        stroke_painting(x, cell=5)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[10:20, 10:20] = (255, 255, 255, 255)  # a white square, the rest transparent → black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "d.png")
    guide = load_guide(tmp_path / "d.png", 32)
    assert guide.shape == (1, 1, 32, 32) and guide[0, 0, 0, 0] == -1 and guide[0, 0, 16, 16] == 1
    assert load_guide(tmp_path / "d.png", 32, invert=True)[0, 0, 0, 0] == 1
    with pytest.raises(GuidekitError, match="guide image .* does not exist"):
        load_guide(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(GuidekitError, match="cannot read guide image"):
        load_guide(tmp_path / "notes.png")


# ---- CLI on a tiny model ----

TRAIN = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sdedit") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def edit(run_dir, out, *extra):
    return main(["edit", str(run_dir), "--steps", "3", "--n", "2", "--out", str(out), "--no-progress",
                 "--device", "cpu", *extra])


def test_edit_from_a_stroke_painting(run_dir, tmp_path):
    out = tmp_path / "e"
    assert edit(run_dir, out, "--stroke-from", "60", "--dataset", "samples", "--t0", "0.4", "--repeats", "2") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["t0"] == 0.4 and m["start_timestep"] == pytest.approx(0.4 * 1000 - 1) and m["repeats"] == 2
    assert m["class"] == m["label"] and m["w"] == 1.0 and m["seeds"] == [0, 1]
    assert [e["file"] for e in m["images"]] == ["0000_seed0.png", "0001_seed1.png"] and m["images"][0]["rmse"] > 0
    assert Image.open(out / "grid.png").width > 3 * 32 * 3 and Image.open(out / "guide.png").size == (32, 32)
    clf = tmp_path / "clf"  # composes with classifier guidance (a denoiser transform), here the shipped evaluator
    assert edit(run_dir, clf, "--stroke-from", "60", "--dataset", "samples", "--clean-classifier", "evaluator",
                "--classifier-w", "2", "--w", "0") == 0
    m = json.loads((clf / "manifest.json").read_text())
    assert m["classifier_w"] == 2.0 and m["clean_classifier"] and m["w"] == 0.0


def test_edit_a_drawing_with_a_mask_keeps_known_pixels(run_dir, tmp_path):
    drawing = np.zeros((32, 32), np.uint8)
    drawing[6:26, 9:23] = 180
    drawing[6:12, 4:28] = 90
    Image.fromarray(drawing, "L").save(tmp_path / "d.png")
    out = tmp_path / "e"
    assert edit(run_dir, out, "--guide", str(tmp_path / "d.png"), "--mask", "half", "--t0", "0.7", "--class",
                "trouser", "--w", "2", "--sampler", "dpmpp-2m") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["class_name"] == "Trouser" and m["w"] == 2.0 and m["mask"] == "half"
    known = np.asarray(Image.open(out / "mask.png")) == 255
    assert 0 < known.mean() < 1
    for e in m["images"]:
        assert np.array_equal(np.asarray(Image.open(out / e["file"]))[known], drawing[known])


@pytest.mark.parametrize("args,message", [
    (["--stroke-from", "0", "--t0", "0"], "--t0 must lie in (0, 1]"),
    (["--stroke-from", "0", "--t0", "1.5"], "--t0 must lie in (0, 1]"),
    (["--stroke-from", "0", "--t0", "half"], "--t0 must be a number"),
    (["--stroke-from", "0", "--repeats", "0"], "--repeats must be >= 1"),
    (["--stroke-from", "9999"], "out of range"),
    (["--guide", "MISSING"], "does not exist"),
    (["--guide", "NOTES"], "cannot read guide image"),
    (["--guide", "NOTES", "--stroke-from", "1"], "not allowed with argument"),
    (["--stroke-from", "0", "--mask", "MISSING"], "mask file"),
    (["--stroke-from", "0", "--class", "spaceship"], "spaceship"),
])
def test_edit_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, args, message):
    (tmp_path / "notes.png").write_text("not an image")
    args = [str(tmp_path / "missing.png") if a == "MISSING" else str(tmp_path / "notes.png") if a == "NOTES" else a
            for a in args]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        raise SystemExit(edit(run_dir, out, "--dataset", "samples", *args))
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_sweep_sdedit_tiny_run_resumes(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sw"
    args = ["sweep", "sdedit", str(run_dir), "--n", "20", "--steps", "2", "--guides", "samples", "--out", str(out),
            "--reference", "samples", "--no-progress", "--device", "cpu"]
    assert main(args + ["--t0", "0.5,1"]) == 0
    with open(out / "results.csv", newline="") as f:
        first = list(csv.DictReader(f))
    assert [r["t0"] for r in first] == ["0.5", "1.0"]
    assert all(float(r["l2"]) > 0 and float(r["fid"]) > 0 and 0 <= float(r["accuracy"]) <= 1 for r in first)
    assert main(args + ["--t0", "0.2,0.5,1"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["t0"] for r in rows] == ["0.2", "0.5", "1.0"] and rows[1:] == first
    assert float(rows[0]["l2"]) < float(rows[2]["l2"])  # smaller t0: closer to the guide
    md = (out / "results.md").read_text()
    assert "t0" in md and "l2" in md and "FID-FMNIST" in md
    for name in ("realism_faithfulness.png", "grid.png"):
        assert (out / name).stat().st_size > 1000, name
    assert main(args + ["--t0", "0,0.5"]) == 2
