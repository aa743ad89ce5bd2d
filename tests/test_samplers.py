"""Golden tests: with the exact Gaussian denoiser every sampler reproduces the data distribution."""

import pytest
import torch

from guidekit import GuidekitError
from guidekit.diffusion import NoiseSchedule
from guidekit.sampling import Noise, generate, make_step, sample
from gaussian import BatchNoise, MixtureEps

SHAPE = (1, 4, 4)
N = 4000


def gaussian_eps(schedule, lo=0.2):
    g = torch.Generator().manual_seed(0)
    mean = torch.rand((1, *SHAPE), generator=g) * 2 - 1
    std = torch.rand((1, *SHAPE), generator=g) * (1 - lo) + lo
    return MixtureEps(schedule, mean, std), mean[0].double(), std[0].double()


def run(schedule, sampler, steps, eta=0.0, lo=0.2):
    eps, mean, std = gaussian_eps(schedule, lo)
    noise = BatchNoise(N)
    x = noise.randn_like(torch.zeros(N, *SHAPE, dtype=torch.float64))
    out = sample(eps, x, schedule.timesteps(steps), {}, make_step(sampler, schedule, eta), noise)
    return (out - mean) / std  # standardized: N(0, 1) in every pixel when exact


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("sampler,steps,eta", [
    ("ddpm", 1000, 0.0), ("ddim", 500, 0.0), ("ddim", 1000, 1.0), ("ddim", 500, 0.5), ("dpmpp-2m", 100, 0.0),
    ("dpmpp-2m-sde", 250, 0.0),
])
def test_sampler_reproduces_gaussian(kind, sampler, steps, eta):
    schedule = NoiseSchedule.linear() if kind == "linear" else NoiseSchedule.cosine()
    z = run(schedule, sampler, steps, eta)
    se = 1 / N ** 0.5
    assert z.mean(0).abs().max() < 5 * se, z.mean(0)
    assert (z.std(0) - 1).abs().max() < 0.05, z.std(0)
    pooled = 1 / z.numel() ** 0.5  # all pixels pooled
    assert abs(z.mean()) < 4 * pooled and abs(z.std() - 1) < 0.02


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m", "ddpm"])
def test_error_shrinks_with_steps(sampler):
    """Few steps shrink the spread (DDIM contracts by cos Δθ per step); more steps converge to the data."""
    schedule = NoiseSchedule.linear()
    errors = [(run(schedule, sampler, steps).std() - 1).abs().item() for steps in (10, 40, 200)]
    assert errors[0] > max(errors[1:]) and errors[2] < 0.04, errors


def test_dpmpp_beats_ddim_at_few_steps():
    schedule = NoiseSchedule.linear()
    ddim, dpm = (abs(run(schedule, s, 15, lo=0.5).std().item() - 1) for s in ("ddim", "dpmpp-2m"))
    assert dpm < ddim, (dpm, ddim)


def test_sde_solver_first_order_is_the_ddpm_step():
    """SDE-DPM-Solver++ with no history is the posterior step q(x_s | x_t, x̂0): the same mean and noise as DDPM."""
    schedule = NoiseSchedule.linear()
    eps, _, _ = gaussian_eps(schedule)
    x = BatchNoise(N).randn_like(torch.zeros(N, *SHAPE, dtype=torch.float64))
    fn = lambda x_t, t: eps(x_t, torch.full((x_t.shape[0],), t), {})  # noqa: E731
    for t, s in ((999.0, 950.0), (500.0, 420.0), (60.0, 3.0)):
        a = make_step("dpmpp-2m-sde", schedule)(fn, x, t, s, BatchNoise(N))
        b = make_step("ddpm", schedule)(fn, x, t, s, BatchNoise(N))
        torch.testing.assert_close(a[0], b[0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(a[1], b[1])


def test_sde_solver_second_order_beats_ddpm_at_few_steps():
    """The multistep correction pays: at 15 steps the SDE solver's spread is closer to the data's than DDPM's."""
    schedule = NoiseSchedule.linear()
    ddpm, sde = (abs(run(schedule, s, 15, lo=0.5).std().item() - 1) for s in ("ddpm", "dpmpp-2m-sde"))
    assert sde < ddpm, (sde, ddpm)


def test_per_image_seeds_do_not_depend_on_batch():
    schedule = NoiseSchedule.linear()
    eps, _, _ = gaussian_eps(schedule)
    for sampler in ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"):
        big = generate(eps, schedule, SHAPE, [3, 7, 11, 5], {}, sampler=sampler, steps=10, eta=1.0)
        small = generate(eps, schedule, SHAPE, [11], {}, sampler=sampler, steps=10, eta=1.0)
        torch.testing.assert_close(big[2:3], small)
        again = generate(eps, schedule, SHAPE, [3, 7, 11, 5], {}, sampler=sampler, steps=10, eta=1.0)
        assert torch.equal(big, again)


def test_seed_noise_is_torch_cpu_stream_on_any_device():
    """Seed s draws torch's CPU stream of s wherever the samples go, so a seed means the same image on every machine."""
    z = Noise([5, 9], device="meta").randn((2, 3))
    assert z.device.type == "meta" and z.shape == (2, 2, 3)
    got = Noise([5, 9]).randn((2, 3))
    for row, seed in zip(got, (5, 9)):
        assert torch.equal(row, torch.randn((2, 3), generator=torch.Generator().manual_seed(seed)))
    like = Noise([9]).randn_like(torch.zeros(1, 2, 3, dtype=torch.float64))
    assert like.dtype == torch.float64
    assert torch.equal(like[0], torch.randn((2, 3), generator=torch.Generator().manual_seed(9), dtype=torch.float64))


def test_bad_sampler_arguments():
    schedule = NoiseSchedule.linear()
    with pytest.raises(GuidekitError, match="seeds"):
        Noise([-1])
    with pytest.raises(GuidekitError, match="seed"):
        Noise([])
    with pytest.raises(GuidekitError, match="unknown sampler 'euler'"):
        make_step("euler", schedule)
    with pytest.raises(GuidekitError, match="eta"):
        make_step("ddim", schedule, eta=2.0)
    with pytest.raises(GuidekitError, match="steps"):
        schedule.timesteps(0)
    with pytest.raises(GuidekitError, match="steps"):
        schedule.timesteps(2000)


class Recorder(Noise):
    """Noise(seeds) that keeps every draw, so the same run can be replayed from the draws alone."""

    def __init__(self, seeds):
        super().__init__(seeds)
        self.draws = []

    def _draw(self, shape, dtype):
        self.draws.append(super()._draw(shape, dtype))
        return self.draws[-1]

    def rows(self, start, stop):
        assert (start, stop) == (0, len(self))  # one batch
        return self


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"])
def test_given_noise_and_generators_reproduce_seeded_sampling(sampler):
    """The researcher's API: x_T and every step's noise handed over (GivenNoise), or one CPU generator per image,
    give what seeds give, bit for bit; callback(StepInfo) names step, level, x and x̂0."""
    from guidekit.sampling.noise import GivenNoise

    schedule = NoiseSchedule.linear()
    eps, _, _ = gaussian_eps(schedule)
    kw = dict(sampler=sampler, steps=6, eta=1.0)
    seeded = generate(eps, schedule, SHAPE, [3, 7, 11], {}, **kw)
    rec = Recorder([3, 7, 11])
    assert torch.equal(generate(eps, schedule, SHAPE, None, {}, noise=rec, **kw), seeded)
    assert len(rec.draws) == (1 if sampler == "dpmpp-2m" else 6)  # x_T, then one per noisy step (the last is not)
    seen = []
    given = generate(eps, schedule, SHAPE, None, {}, noise=GivenNoise([d.clone() for d in rec.draws]),
                     callback=seen.append, batch_size=2, **kw)
    assert torch.equal(given, seeded)  # batches of 2 slice the given rows
    gens = [torch.Generator().manual_seed(s) for s in (3, 7, 11)]
    assert torch.equal(generate(eps, schedule, SHAPE, None, {}, noise=gens, **kw), seeded)
    first = seen[0]
    assert (first.i, first.total, first.t, first.rows) == (0, 6, 999.0, slice(0, 2)) and first.x0.shape == (2, *SHAPE)
    assert [s.rows for s in seen].count(slice(2, 3)) == 6 and seen[-1].level == -1.0
    with pytest.raises(GuidekitError, match="ran out"):
        generate(eps, schedule, SHAPE, None, {}, noise=GivenNoise(rec.draws[:1]), sampler="ddpm", steps=6)
    with pytest.raises(GuidekitError, match="exactly one"):
        generate(eps, schedule, SHAPE, [1], {}, noise=GivenNoise(rec.draws), **kw)


def test_given_noise_drives_sdedit_and_repaint():
    """SDEdit's first draw noises the guide, RePaint's first is x_T: handed over, they match seeded runs."""
    from guidekit.sampling.noise import GivenNoise
    from guidekit.sampling.repaint import inpaint
    from guidekit.sampling.sdedit import sdedit

    schedule = NoiseSchedule.linear()
    eps, _, _ = gaussian_eps(schedule)
    guide = torch.zeros(2, *SHAPE)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    for run_it in (lambda **k: sdedit(eps, schedule, guide, 0.5, {}, "ddpm", steps=5, **k),
                   lambda **k: inpaint(eps, schedule, guide, mask, {}, "ddpm", steps=5, jump_length=2,
                                       jump_n_sample=2, **k)[0]):
        rec = Recorder([4, 5])
        seeded = run_it(seeds=[4, 5])
        assert torch.equal(run_it(seeds=None, noise=rec), seeded)
        assert torch.equal(run_it(seeds=None, noise=GivenNoise(rec.draws)), seeded)
