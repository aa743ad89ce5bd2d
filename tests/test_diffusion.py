"""Schedules, the forward process and the ε/x0/v parameterizations."""

import math

import pytest
import torch

from guidekit import GuidekitError
from guidekit.diffusion import NULL, ModelDenoiser, NoiseSchedule, eps_to_x0, q_sample, target, to_eps, x0_to_eps


@pytest.mark.parametrize("schedule", [NoiseSchedule.linear(), NoiseSchedule.cosine(), NoiseSchedule.linear(50)])
def test_alpha_bar_lookup(schedule):
    T = schedule.num_timesteps
    grid = torch.arange(T, dtype=torch.float64)
    torch.testing.assert_close(schedule.alpha_bar(grid), schedule.alpha_bar_table)
    assert schedule.alpha_bar(-1.0).item() == 1.0
    fine = schedule.alpha_bar(torch.linspace(-1, T - 1, 5 * T))
    assert (fine[1:] < fine[:-1]).all()  # strictly decreasing, continuous in t
    mid = schedule.alpha_bar(torch.tensor([10.5])).item()
    lo, hi = schedule.alpha_bar_table[10].item(), schedule.alpha_bar_table[11].item()
    assert abs(mid - (lo * hi) ** 0.5) < 1e-12  # log-linear interpolation
    with pytest.raises(GuidekitError, match="out of range"):
        schedule.alpha_bar(torch.tensor([T * 1.0]))


def test_timesteps_spacings():
    s = NoiseSchedule.linear()
    assert s.timesteps(4, "trailing") == [999.0, 749.0, 499.0, 249.0, -1.0]
    assert s.timesteps(4, "leading") == [750.0, 500.0, 250.0, 0.0, -1.0]
    assert s.timesteps(1000)[:3] == [999.0, 998.0, 997.0] and s.timesteps(1000)[-2:] == [0.0, -1.0]
    assert s.timesteps(2, start=499.0) == [499.0, 249.0, -1.0]
    assert s.t_from_fraction(1.0) == 999.0 and s.t_from_fraction(0.0) == -1.0
    with pytest.raises(GuidekitError, match="spacing"):
        s.timesteps(10, "random")
    with pytest.raises(GuidekitError, match="t0"):
        s.t_from_fraction(1.5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_logsnr_spacing_is_uniform_in_lambda(kind):
    """logsnr: T−1 to 0 in equal steps of λ = ½ log(ᾱ/(1−ᾱ)) (Lu et al. 2022), then the clean level −1."""
    s = NoiseSchedule.linear() if kind == "linear" else NoiseSchedule.cosine()
    levels = s.timesteps(10, "logsnr")
    assert len(levels) == 11 and levels[0] == 999.0 and levels[-2:] == [0.0, -1.0]
    assert all(a > b for a, b in zip(levels, levels[1:]))
    lam = [0.5 * math.log(ab / (1 - ab)) for ab in s.alpha_bar(torch.tensor(levels[:-1])).tolist()]
    gaps = [b - a for a, b in zip(lam, lam[1:])]
    assert max(gaps) - min(gaps) < 1e-4 * abs(lam[-1] - lam[0]), gaps
    assert s.timesteps(1, "logsnr") == [999.0, -1.0]


def test_schedule_config_roundtrip_and_errors():
    for s in (NoiseSchedule.linear(200, 1e-4, 0.03), NoiseSchedule.cosine(300)):
        again = NoiseSchedule.from_config(s.to_config())
        torch.testing.assert_close(again.betas, s.betas)
    with pytest.raises(GuidekitError, match="unknown noise schedule"):
        NoiseSchedule.from_config({"kind": "sigmoid"})
    with pytest.raises(GuidekitError, match="beta"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))


def test_q_sample_moments():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    x_t = q_sample(x0, 0.36, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    assert abs(x_t.mean() - 0.6 * 0.7) < 0.02 and abs(x_t.var() - 0.64) < 0.02


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_parameterizations_roundtrip(kind):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    ab = torch.tensor([0.9, 0.5, 0.1, 0.01], dtype=torch.float64)
    x_t = q_sample(x0, ab, eps)
    out = to_eps(target(x0, eps, ab, kind), x_t, ab, kind)
    assert out.dtype == (torch.float32 if kind == "eps" else torch.float64)  # x0/v: ε in float64 (x̂0 precision)
    torch.testing.assert_close(out.float(), eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_to_x0(x_t, eps, ab), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_to_eps(x_t, x0, ab), eps, atol=1e-4, rtol=1e-4)
    with pytest.raises(GuidekitError, match="prediction_type"):
        to_eps(eps, x_t, ab, "score")


def test_model_denoiser_maps_null_label():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, t, y=None, hint=None):
            seen.update(y=y, hint=hint)
            return torch.zeros_like(x)

    den = ModelDenoiser(Net(), NoiseSchedule.linear(), "eps", num_classes=10)
    den(torch.zeros(3, 1, 4, 4), torch.full((3,), 5.0), {"y": torch.tensor([2, NULL, 9]), "hint": torch.ones(1)})
    assert seen["y"].tolist() == [2, 10, 9] and seen["hint"] is not None
    uncond = ModelDenoiser(Net(), NoiseSchedule.linear(), "eps", num_classes=0)
    uncond(torch.zeros(2, 1, 4, 4), torch.full((2,), 5.0), {"y": torch.tensor([NULL, NULL])})
    assert seen["y"] is None
    with pytest.raises(GuidekitError, match="unconditional"):
        uncond(torch.zeros(1, 1, 4, 4), torch.full((1,), 5.0), {"y": torch.tensor([3])})


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_x0_is_the_networks_own_at_the_noisiest_cosine_step(prediction):
    """At t = 999 on the cosine schedule (ᾱ ≈ 2e-9) x̂0 equals the direct formula x̂0 = √ᾱ·x − √(1−ᾱ)·v (or the x0
    output) to float32 rounding, through the denoiser, ClipX0, every sampler step and the loop's callback; float32
    ε lost 2.5e-3 there."""
    from guidekit.guidance import ClipX0
    from guidekit.sampling.loop import sample
    from guidekit.sampling.noise import Noise
    from guidekit.sampling.steps import make_step

    schedule = NoiseSchedule.cosine(1000)
    ab = float(schedule.alpha_bar(999))
    assert ab < 1e-8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=g)
    out = torch.randn(2, 1, 8, 8, generator=g) * 0.5  # the network's raw prediction (|x̂0| < 1: ClipX0 keeps it)
    den = ModelDenoiser(lambda x_t, t, y=None: out, schedule, prediction)
    direct = ab ** 0.5 * x.double() - (1 - ab) ** 0.5 * out.double() if prediction == "v" else out.double()
    assert prediction == "x0" or direct.abs().max() < 1
    old = eps_to_x0(x, to_eps(out, x, ab, prediction).float(), ab)  # what float32 ε gave
    assert (old.double() - direct).abs().max() > 1e-4
    for name in ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"):
        for d in (den, ClipX0(den, schedule)):
            seen = []
            sample(d, x, [999.0, 979.0], {}, make_step(name, schedule), Noise([0, 1]),
                   callback=lambda info: seen.append(info.x0))
            assert seen[0].dtype == torch.float32
            assert (seen[0].double() - direct).abs().max() <= 1e-6, name
