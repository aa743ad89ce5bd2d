"""The guidance methods after CFG against closed forms on Gaussian mixtures (exact ε), and their CLI flags."""

import json
import math

import pytest
import torch

from gaussian import BatchNoise, MixtureEps
from guidekit.diffusion import NoiseSchedule
from guidekit.diffusion.denoiser import CLASS_EMBEDDING, NULL, CountedDenoiser
from guidekit.diffusion.parameterization import eps_to_x0
from guidekit.errors import GuidekitError
from guidekit.guidance import (APG, CADS, CFGPlusPlus, CFGPPStep, CFGZeroStar, ClassifierFreeGuidance,
                               DynamicThreshold, GuidanceInterval, Rescale, ZeroInit, sigma_of)
from guidekit.guidance.autoguidance import Autoguidance
from guidekit.guidance.cads import gamma
from guidekit.guidance.cfg_zero import velocity
from guidekit.sampling import DDIM
from guidekit.sampling.loop import sample

SCHEDULE = NoiseSchedule.linear(1000)
MEANS = torch.tensor([[-1.0, 0.5], [1.0, -0.5]]).view(2, 2, 1, 1) * 0.8
STDS = torch.full((2, 2, 1, 1), 0.3)


def mixture(std_scale=1.0):
    return MixtureEps(SCHEDULE, MEANS, STDS * std_scale)


def batch(n=6, t=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 1, 1, generator=g, dtype=torch.float64)
    return x, torch.full((n,), float(t)), {"y": torch.tensor([0, 1] * (n // 2))}


def halves(den, x, t, cond):
    return den(x, t, cond), den(x, t, {"y": torch.full_like(cond["y"], NULL)})


def test_interval_guides_inside_and_runs_one_pass_outside():
    den = CountedDenoiser(mixture())
    x, t, cond = batch()
    sigma = float(sigma_of(SCHEDULE, t)[0])
    inside = ClassifierFreeGuidance(den, 2.0, interval=GuidanceInterval(SCHEDULE, sigma / 2, sigma))
    outside = ClassifierFreeGuidance(den, 2.0, interval=GuidanceInterval(SCHEDULE, sigma, 2 * sigma))
    eps_c, eps_u = halves(mixture(), x, t, cond)
    assert torch.allclose(inside(x, t, cond), eps_c + 2 * (eps_c - eps_u))
    before = den.images
    assert torch.equal(outside(x, t, cond), eps_c)
    assert den.images - before == len(x)  # the unconditional pass was skipped


def test_interval_nfe_over_a_trajectory():
    levels = SCHEDULE.timesteps(20, "trailing")
    sigmas = sigma_of(SCHEDULE, torch.tensor(levels[:-1]))
    lo, hi = float(sigmas.median()), math.inf
    den = CountedDenoiser(mixture())
    x, _, cond = batch(4)
    sample(ClassifierFreeGuidance(den, 1.0, interval=GuidanceInterval(SCHEDULE, lo, hi)), x, levels, cond,
           DDIM(SCHEDULE), BatchNoise(4))
    guided_steps = int((sigmas > lo).sum())
    assert den.images / 4 == 20 + guided_steps < 2 * 20


@pytest.mark.parametrize("bad", [(0.3, 0.4), (2, 1), (-1, 1), (float("nan"), 1)])
def test_interval_refuses_bad_bounds(bad):
    with pytest.raises(GuidekitError, match="σ_lo < σ_hi"):
        GuidanceInterval(SCHEDULE, *bad[::-1] if bad == (0.3, 0.4) else bad)


def test_autoguidance_is_the_good_model_plus_w_times_the_difference():
    good, bad = mixture(), mixture(1.6)
    x, t, cond = batch()
    out = Autoguidance(good, bad, 1.5)(x, t, cond)
    assert torch.allclose(out, good(x, t, cond) + 1.5 * (good(x, t, cond) - bad(x, t, cond)))
    assert torch.equal(Autoguidance(good, good, 3.0)(x, t, cond), good(x, t, cond))  # no gap, no guidance
    assert torch.equal(Autoguidance(good, bad, 0.0)(x, t, cond), good(x, t, cond))


def test_autoguidance_sharpens_towards_the_good_models_modes():
    """The bad model is the good one with wider components: the guided samples are more likely under the good model
    than the good model's own samples (Karras et al. 2024, Fig. 1's toy)."""
    levels = SCHEDULE.timesteps(25, "trailing")
    x = torch.randn(400, 2, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cond = {"y": torch.full((400,), NULL)}
    plain = sample(mixture(), x, levels, cond, DDIM(SCHEDULE), BatchNoise(400))
    guided = sample(Autoguidance(mixture(), mixture(2.0), 2.0), x, levels, cond, DDIM(SCHEDULE), BatchNoise(400))

    def spread(z):  # distance to the nearest component mean
        return (z[:, None] - MEANS[None]).flatten(2).norm(dim=2).min(1).values.mean()

    assert spread(guided) < 0.8 * spread(plain)


def test_apg_with_eta_one_and_no_momentum_or_cap_is_cfg():
    x, t, cond = batch()
    eps_c, eps_u = halves(mixture(), x, t, cond)
    apg = APG(SCHEDULE, eta=1.0)
    assert torch.allclose(apg(eps_c, eps_u, 2.5, x, t), eps_c + 2.5 * (eps_c - eps_u), atol=1e-10)


def test_apg_eta_zero_moves_orthogonally_to_the_conditional_x0_and_caps_the_norm():
    x, t, cond = batch()
    eps_c, eps_u = halves(mixture(), x, t, cond)
    ab = SCHEDULE.alpha_bar(t)
    d_c = eps_to_x0(x, eps_c, ab)
    moved = eps_to_x0(x, APG(SCHEDULE)(eps_c, eps_u, 3.0, x, t), ab) - d_c
    assert (moved * d_c).flatten(1).sum(1).abs().max() < 1e-10
    assert moved.flatten(1).norm(dim=1).max() > 1e-3
    capped = eps_to_x0(x, APG(SCHEDULE, eta=1.0, threshold=0.05)(eps_c, eps_u, 3.0, x, t), ab) - d_c
    assert capped.flatten(1).norm(dim=1).max() <= 3.0 * 0.05 + 1e-9


def test_apg_momentum_carries_the_update_and_resets_per_trajectory():
    x, t, cond = batch()
    eps_c, eps_u = halves(mixture(), x, t, cond)
    apg = APG(SCHEDULE, eta=1.0, momentum=-0.5)
    first = apg(eps_c, eps_u, 1.0, x, t)
    second = apg(eps_c, eps_u, 1.0, x, t)  # Δ + β·Δ = Δ/2: half CFG's update
    assert torch.allclose(first, eps_c + (eps_c - eps_u), atol=1e-10)
    assert torch.allclose(second, eps_c + 0.5 * (eps_c - eps_u), atol=1e-10)
    apg.reset()
    assert torch.allclose(apg(eps_c, eps_u, 1.0, x, t), first, atol=1e-10)
    levels = SCHEDULE.timesteps(8, "trailing")  # the loop resets it: one trajectory twice gives the same samples
    den = ClassifierFreeGuidance(mixture(), 1.0, rule=APG(SCHEDULE, momentum=-0.5))
    a, b = (sample(den, x, levels, cond, DDIM(SCHEDULE), BatchNoise(6)) for _ in range(2))
    assert torch.equal(a, b)


def test_rescale_zero_is_cfg_and_one_restores_the_conditional_std():
    x, t, cond = batch(8, t=100)
    eps_c, eps_u = halves(mixture(), x, t, cond)
    x = x.expand(8, 2, 3, 3).contiguous()  # std over more than two pixels
    eps_c, eps_u = eps_c.expand_as(x) + 0.1 * x, eps_u.expand_as(x) - 0.1 * x
    assert torch.allclose(Rescale(SCHEDULE, 0.0)(eps_c, eps_u, 2.0, x, t), eps_c + 2 * (eps_c - eps_u), atol=1e-10)
    ab = SCHEDULE.alpha_bar(t)
    out = eps_to_x0(x, Rescale(SCHEDULE, 1.0)(eps_c, eps_u, 2.0, x, t), ab)
    assert torch.allclose(out.flatten(1).std(1), eps_to_x0(x, eps_c, ab).flatten(1).std(1), atol=1e-10)


def test_cfg_zero_star_scale_and_its_limits():
    x, t, cond = batch()
    eps_c, eps_u = halves(mixture(), x, t, cond)
    rule = CFGZeroStar(SCHEDULE)
    ab = SCHEDULE.alpha_bar(t).view(-1, 1, 1, 1).double()
    v_u = velocity(x, eps_u, ab)
    # v_c parallel to v_u: the guidance vanishes, the output is the conditional prediction
    from guidekit.guidance.cfg_zero import eps_of_velocity
    parallel = eps_of_velocity(x, 1.7 * v_u, ab)
    assert torch.allclose(rule(parallel, eps_u, 3.0, x, t), parallel, atol=1e-10)
    # v_c − v_u orthogonal to v_u: α* = 1, exactly CFG
    d = torch.randn_like(v_u)
    d = d - (d * v_u).flatten(1).sum(1).view(-1, 1, 1, 1) / v_u.flatten(1).square().sum(1).view(-1, 1, 1, 1) * v_u
    ortho = eps_of_velocity(x, v_u + d, ab)
    assert torch.allclose(rule(ortho, eps_u, 3.0, x, t), ortho + 3 * (ortho - eps_u), atol=1e-9)


def test_zero_init_keeps_x_over_alpha_plus_sigma_and_skips_the_network():
    den = CountedDenoiser(mixture())
    x, _, cond = batch(4)
    levels = SCHEDULE.timesteps(10, "trailing")
    trace = []
    sample(ZeroInit(den, SCHEDULE, steps=2), x, levels, cond, DDIM(SCHEDULE), BatchNoise(4),
           callback=lambda info: trace.append(info.x))
    scale = [float(SCHEDULE.alpha_bar(s) ** 0.5 + (1 - SCHEDULE.alpha_bar(s)) ** 0.5) for s in levels]
    assert torch.allclose(trace[0] / scale[1], x / scale[0]) and torch.allclose(trace[1] / scale[2], x / scale[0])
    assert den.images == 4 * (10 - 2)


def test_cfgpp_step_renoises_with_the_unconditional_eps():
    x, _, cond = batch()
    rule = CFGPlusPlus()
    den = ClassifierFreeGuidance(mixture(), 0.6, rule=rule)
    t, s = 600.0, 400.0
    out, x0 = CFGPPStep(SCHEDULE, rule)(lambda z, tt: den(z, torch.full((6,), tt), cond), x, t, s, BatchNoise(6))
    eps_c, eps_u = halves(mixture(), x, torch.full((6,), t), cond)
    ab_t, ab_s = float(SCHEDULE.alpha_bar(t)), float(SCHEDULE.alpha_bar(s))
    want_x0 = (x - (1 - ab_t) ** 0.5 * (eps_u + 0.6 * (eps_c - eps_u))) / ab_t ** 0.5
    assert torch.allclose(x0, want_x0) and torch.allclose(out, ab_s ** 0.5 * want_x0 + (1 - ab_s) ** 0.5 * eps_u)
    with pytest.raises(GuidekitError, match=r"λ \(given as w\) must lie in \[0, 1\]"):
        ClassifierFreeGuidance(mixture(), 1.5, rule=CFGPlusPlus())(x, torch.full((6,), t), cond)


def test_dynamic_threshold_bounds_x0_and_leaves_in_range_predictions_alone():
    x, t, cond = batch(6, t=50)
    wild = lambda z, tt, c: mixture()(z, tt, c) * 40  # noqa: E731  x̂0 far outside [−1, 1]
    ab = SCHEDULE.alpha_bar(t)
    x0 = eps_to_x0(x, DynamicThreshold(wild, SCHEDULE, p=1.0)(x, t, cond), ab)
    assert x0.abs().max() <= 1 + 1e-9 and torch.allclose(x0.flatten(1).abs().max(1).values, torch.ones(6, dtype=x0.dtype))
    tame = lambda z, tt, c: torch.zeros_like(z)  # noqa: E731  x̂0 = x/√ᾱ at t = 0: inside [−1, 1]
    z = torch.rand(4, 2, 1, 1, dtype=torch.float64) - 0.5
    t0 = torch.zeros(4)
    assert torch.allclose(DynamicThreshold(tame, SCHEDULE)(z * SCHEDULE.alpha_bar(0) ** 0.5, t0, {}), torch.zeros_like(z))


class Recorder:
    def __init__(self):
        self.conds = []

    def __call__(self, x, t, cond):
        self.conds.append({k: v.clone() for k, v in cond.items()})
        return torch.zeros_like(x)


def embed(y):
    table = torch.arange(30, dtype=torch.float64).view(3, 10) / 10  # 2 classes + the null row
    return table[torch.where(y == NULL, torch.full_like(y, 2), y)]


def test_cads_gamma_schedule():
    t = torch.tensor([0.0, 0.6, 0.75, 0.9, 1.0])
    assert torch.allclose(gamma(t, 0.6, 0.9), torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]))


def test_cads_anneals_only_the_conditional_rows_and_not_below_tau1():
    rec = Recorder()
    cads = CADS(rec, SCHEDULE, 0.6, 0.9, noise_scale=1.0, psi=0.0, embed=embed)
    x, _, _ = batch(4)
    cond = {"y": torch.tensor([0, 1, NULL, 0])}
    cads(x, torch.full((4,), 300.0), cond)
    assert CLASS_EMBEDDING not in rec.conds[-1]  # t/T = 0.3 < τ1: the condition as given
    cads(x, torch.full((4,), 990.0), cond)
    e = rec.conds[-1][CLASS_EMBEDDING]
    clean = embed(cond["y"])
    assert torch.equal(e[2], clean[2])  # the ∅ row stays the null embedding
    assert (e[[0, 1, 3]] - clean[[0, 1, 3]]).abs().min() > 0  # γ = 0: pure noise
    # the noise belongs to the image, not to its batch
    cads(x[3:], torch.full((1,), 990.0), {"y": cond["y"][3:]})
    assert torch.equal(rec.conds[-1][CLASS_EMBEDDING][0], e[3])


def test_cads_rescale_keeps_the_conditions_statistics():
    rec = Recorder()
    x, _, _ = batch(2)
    text = torch.randn(2, 7, 16, dtype=torch.float64)
    CADS(rec, SCHEDULE, 0.2, 0.5, noise_scale=0.5, psi=1.0)(x, torch.full((2,), 400.0), {"text": text})
    out = rec.conds[-1]["text"]
    assert not torch.allclose(out, text)
    assert torch.allclose(out.mean((1, 2)), text.mean((1, 2))) and torch.allclose(out.std((1, 2)), text.std((1, 2)))


@pytest.mark.parametrize("kw,message", [
    ({"tau1": 0.9, "tau2": 0.6}, "τ1 < τ2"), ({"noise_scale": -1}, "noise scale"), ({"psi": 2}, "ψ")])
def test_cads_refuses_bad_parameters(kw, message):
    with pytest.raises(GuidekitError, match=message):
        CADS(Recorder(), SCHEDULE, **kw)


@pytest.mark.parametrize("kw,message", [({"eta": -1}, "η"), ({"momentum": 1}, "momentum"),
                                        ({"threshold": 0}, "threshold")])
def test_apg_refuses_bad_parameters(kw, message):
    with pytest.raises(GuidekitError, match=message):
        APG(SCHEDULE, **kw)


# ---- the pipeline and the CLI, on the zoo's class-conditional model -------------------------------------------

from guidekit.cli import main  # noqa: E402

FLAGS = [["--guidance-rule", "apg", "--apg-momentum", "-0.5", "--apg-threshold", "5"],
         ["--guidance-rule", "cfg-zero-star", "--zero-steps", "1"],
         ["--guidance-rule", "cfgpp", "--w", "0.5", "--sampler", "ddim"],
         ["--rescale", "0.7"], ["--guidance-interval", "0.5,inf"], ["--dynamic-threshold", "0.99"],
         ["--cads", "0.6,0.9"], ["--guide-model", "fmnist-cfg", "--w", "0.5"]]


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f[0].strip("-") + (f[1] if f[0] == "--guidance-rule" else ""))
def test_sample_takes_every_method(flags, tmp_path):
    out = tmp_path / "out"
    assert main(["sample", "fmnist-cfg", "--class", "3", "--n", "2", "--steps", "3", "--out", str(out),
                 "--no-progress", *flags]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    name = flags[0].lstrip("-").replace("-", "_")
    assert {"guidance_rule": "rule", "guidance_interval": "interval"}.get(name, name) in manifest


@pytest.mark.parametrize("command", [
    ["edit", "fmnist-cfg", "--stroke-from", "0", "--dataset", "samples", "--t0", "0.5", "--n", "1"],
    ["inpaint", "fmnist-cfg", "--from-dataset", "0", "--dataset", "samples", "--mask", "half", "--n", "1",
     "--jump-length", "1", "--jump-n-sample", "1"],
    ["control", "fmnist-cfg", "--controlnet", "fmnist-canny", "--condition-from", "0", "--dataset", "samples",
     "--n", "1"]], ids=["edit", "inpaint", "control"])
def test_edit_inpaint_and_control_take_the_methods(command, tmp_path):
    for i, flags in enumerate([["--guidance-rule", "apg"], ["--cads", "0.5,0.9"],
                               ["--guide-model", "fmnist-cfg", "--w", "0.3", "--guidance-interval", "1,inf"]]):
        assert main([*command, "--steps", "3", "--out", str(tmp_path / str(i)), "--no-progress", *flags]) == 0
        assert json.loads((tmp_path / str(i) / "manifest.json").read_text())


@pytest.mark.parametrize("flags,message", [
    (["--guidance-rule", "cfgpp", "--sampler", "dpmpp-2m"], "--sampler ddim"),
    (["--guidance-rule", "apg", "--w", "0"], "give w > 0"),
    (["--guidance-interval", "3,1"], "lo < hi"),
    (["--rescale", "1.5"], "φ must lie in"),
    (["--dynamic-threshold", "0"], "percentile p"),
    (["--guide-model", "fmnist-classifier"], "fmnist-classifier"),
])
def test_sample_refuses_bad_method_options(flags, message, tmp_path, capsys):
    out = tmp_path / "out"
    try:
        code = main(["sample", "fmnist-cfg", "--class", "3", "--n", "1", "--steps", "2", "--out", str(out),
                     "--no-progress", *flags])
    except SystemExit as e:  # argparse's own refusal of a malformed value
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cfg_zero_star_at_w_zero_still_zeroes_its_first_steps(tmp_path):
    """CFG-Zero* at w = 0 is no CFG but its zeroed first step: one pass per step, minus the zeroed one."""
    from guidekit.checkpoints import load_model
    from guidekit.pipelines import Guidance, SamplerSettings, sample_guided

    model, stats = load_model("fmnist-cfg"), {}
    labels, settings = torch.tensor([3]), SamplerSettings("ddim", 4)
    zeroed = sample_guided(model, labels, [0], Guidance(w=0.0, rule="cfg-zero-star"), settings, stats=stats)
    assert stats["nfe"] == 3
    assert not torch.equal(zeroed, sample_guided(model, labels, [0], Guidance(w=0.0), settings))
