"""Classifier-free guidance: the combination rule, one batched call, per-image determinism, and golden statistics."""

import pytest
import torch

from guidekit import GuidekitError
from guidekit.diffusion import NULL, ModelDenoiser, NoiseSchedule
from guidekit.guidance import ClassifierFreeGuidance, guidance_scale_to_w, null_cond
from guidekit.models import UNet, UNetConfig
from guidekit.sampling import generate, make_step, sample
from gaussian import BatchNoise, MixtureEps

SHAPE = (1, 4, 4)
NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def no_grad_one_thread():
    """Small tensors, no autograd; one thread (float64 softmax over dim 0 in MixtureEps is slow multi-threaded)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(n)


def schedule():
    return NoiseSchedule.linear()


def mixture_denoiser(k=NUM_CLASSES):
    g = torch.Generator().manual_seed(0)
    means = torch.rand((k, *SHAPE), generator=g, dtype=torch.float64) * 2 - 1
    stds = torch.rand((k, *SHAPE), generator=g, dtype=torch.float64) * 0.6 + 0.2
    return MixtureEps(schedule(), means, stds)


def unet_denoiser():
    """A tiny class-conditional UNet with every weight perturbed, so the zero-initialized output conv is not zero.

    float32 only: the UNet computes its timestep embedding in float32.
    """
    torch.manual_seed(0)
    net = UNet(UNetConfig.preset("tiny", num_classes=NUM_CLASSES)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ModelDenoiser(net, schedule(), "eps", num_classes=NUM_CLASSES)


DENOISERS = {  # make, image shape, dtype, tolerance of one batched call vs separate calls (float32 kernels)
    "mixture": (mixture_denoiser, SHAPE, torch.float64, 1e-12),
    "unet": (unet_denoiser, (1, 32, 32), torch.float32, 1e-5),
}


def inputs(shape, b=5, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, *shape), generator=g, dtype=dtype)
    t = torch.tensor([999.0, 640.5, 200.0, 3.0, 0.0])[:b]
    y = torch.tensor([0, 1, 2, NULL, 1])[:b]
    return x, t, y


class Counting:
    """Wraps a denoiser and records the batch, t and cond of every call."""

    def __init__(self, den):
        self.den, self.calls = den, []

    def __call__(self, x, t, cond):
        self.calls.append((x.shape[0], t.clone(), {k: v.clone() for k, v in cond.items()}))
        return self.den(x, t, cond)


# ---- the combination rule ----

@pytest.mark.parametrize("name", DENOISERS)
@pytest.mark.parametrize("w", [0.5, 1.0, 3.0, 6.5])
def test_cfg_equals_two_separate_calls(name, w):
    make, shape, dtype, tol = DENOISERS[name]
    den = make()
    x, t, y = inputs(shape, dtype=dtype)
    cond = {"y": y.clone()}
    cond_eps = den(x, t, {"y": y})
    null_eps = den(x, t, {"y": torch.full_like(y, NULL)})
    assert (cond_eps - null_eps)[:3].abs().max() > 1e-3  # the class matters, so the check is not vacuous
    got = ClassifierFreeGuidance(den, w)(x, t, cond)
    assert got.shape == x.shape and got.dtype == x.dtype
    tol *= 1 + 2 * w
    torch.testing.assert_close(got, (1 + w) * cond_eps - w * null_eps, rtol=tol, atol=tol)
    torch.testing.assert_close(got[3], null_eps[3], rtol=tol, atol=tol)  # a null label is left unguided
    assert torch.equal(cond["y"], y)  # the caller's cond is not modified


@pytest.mark.parametrize("name", DENOISERS)
def test_w0_is_the_conditional_model_in_one_call(name):
    make, shape, dtype, _ = DENOISERS[name]
    den = Counting(make())
    x, t, y = inputs(shape, dtype=dtype)
    got = ClassifierFreeGuidance(den, 0.0)(x, t, {"y": y})
    assert len(den.calls) == 1 and den.calls[0][0] == x.shape[0]
    assert torch.equal(got, den.den(x, t, {"y": y}))


@pytest.mark.parametrize("name", DENOISERS)
def test_guided_forward_is_one_call_of_batch_2b(name):
    make, shape, dtype, _ = DENOISERS[name]
    den = Counting(make())
    x, t, y = inputs(shape, dtype=dtype)
    b = x.shape[0]
    ClassifierFreeGuidance(den, 2.0)(x, t, {"y": y})
    assert len(den.calls) == 1
    batch, t_seen, cond_seen = den.calls[0]
    assert batch == 2 * b
    assert torch.equal(t_seen, torch.cat([t, t]))
    assert torch.equal(cond_seen["y"], torch.cat([y, torch.full_like(y, NULL)]))


def test_other_cond_keys_are_duplicated_not_nulled():
    seen = {}

    def den(x, t, cond):
        seen.update(cond)
        return torch.zeros_like(x)

    x, t, y = inputs(SHAPE, b=3)
    extra = torch.arange(3.0)
    ClassifierFreeGuidance(den, 1.0)(x, t, {"y": y, "extra": extra})
    assert torch.equal(seen["extra"], torch.cat([extra, extra]))
    nulled = null_cond({"y": y, "extra": extra})
    assert torch.equal(nulled["y"], torch.full_like(y, NULL)) and nulled["extra"] is extra
    assert y[0] == 0  # null_cond does not modify its input


# ---- arguments ----

@pytest.mark.parametrize("w", [-0.5, -1.0, -1e-9])
def test_negative_w_raises(w):
    with pytest.raises(GuidekitError, match="w must be >= 0"):
        ClassifierFreeGuidance(mixture_denoiser(), w)


@pytest.mark.parametrize("s,w", [(1.0, 0.0), (1.5, 0.5), (7.5, 6.5), (3, 2.0)])
def test_guidance_scale_to_w(s, w):
    assert guidance_scale_to_w(s) == w


@pytest.mark.parametrize("s", [0.999, 0.0, -2.0])
def test_guidance_scale_below_one_raises(s):
    with pytest.raises(GuidekitError, match="guidance-scale"):
        guidance_scale_to_w(s)


# ---- per-image determinism ----

@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m"])
def test_guided_image_does_not_depend_on_batch(sampler):
    sched, cfg = schedule(), ClassifierFreeGuidance(mixture_denoiser(), 2.0)
    seeds, labels = [3, 7, 11, 5], torch.tensor([0, 2, 1, NULL])
    kw = dict(sampler=sampler, steps=10, eta=1.0)
    big = generate(cfg, sched, SHAPE, seeds, {"y": labels}, **kw)
    for i in range(4):
        one = generate(cfg, sched, SHAPE, [seeds[i]], {"y": labels[i:i + 1]}, **kw)
        torch.testing.assert_close(big[i:i + 1], one)
    rev = generate(cfg, sched, SHAPE, seeds[::-1], {"y": labels.flip(0)}, **kw)
    torch.testing.assert_close(rev.flip(0), big)
    chunked = generate(cfg, sched, SHAPE, seeds, {"y": labels}, batch_size=3, **kw)
    torch.testing.assert_close(chunked, big)
    # ... and the label does matter: same seed, other class
    other = generate(cfg, sched, SHAPE, [seeds[1]], {"y": torch.tensor([0])}, **kw)
    assert (other - big[1:2]).abs().max() > 1e-2


def test_guided_unet_image_does_not_depend_on_batch():
    """With a network, float32 kernels differ by ~1e-6 between batch sizes; x̂0 = (x − √(1−ᾱ)ε)/√ᾱ magnifies that
    by up to 1/√ᾱ_999 ≈ 150 on the first step, so whole images agree to ~1e-3, a single guided ε̂ to ~1e-5."""
    sched, cfg = schedule(), ClassifierFreeGuidance(unet_denoiser(), 1.5)
    seeds, labels = [4, 9, 2], torch.tensor([2, 0, NULL])
    x, t, _ = inputs((1, 32, 32), b=3, dtype=torch.float32)
    eps = cfg(x, t, {"y": labels})
    for i in range(3):
        torch.testing.assert_close(eps[i:i + 1], cfg(x[i:i + 1], t[i:i + 1], {"y": labels[i:i + 1]}),
                                   rtol=1e-5, atol=1e-5)
    big = generate(cfg, sched, (1, 32, 32), seeds, {"y": labels}, sampler="ddim", steps=3, eta=1.0)
    one = generate(cfg, sched, (1, 32, 32), seeds[1:2], {"y": labels[1:2]}, sampler="ddim", steps=3, eta=1.0)
    torch.testing.assert_close(big[1:2], one, rtol=0, atol=3e-3)
    other = generate(cfg, sched, (1, 32, 32), seeds[1:2], {"y": labels[:1]}, sampler="ddim", steps=3, eta=1.0)
    assert (other - one).abs().max() > 0.1  # the label matters


# ---- golden statistics with two Gaussian classes ----

N = 4000
GOLD_SHAPE = (1, 2, 2)
SIGMA = 0.5


def two_classes():
    """Two Gaussian classes with equal isotropic σ; their means differ by d."""
    mu0 = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64).view(GOLD_SHAPE)
    d = torch.tensor([1.2, -0.6, 0.4, 0.8], dtype=torch.float64).view(GOLD_SHAPE)
    means = torch.stack([mu0, mu0 + d])
    return MixtureEps(schedule(), means, torch.full_like(means, SIGMA)), means


def run_guided(w, sampler="dpmpp-2m", steps=100, eta=0.0):
    """Half the batch of class 0, half of class 1; the same initial noise for every w."""
    den, means = two_classes()
    y = torch.arange(N) % 2
    noise = BatchNoise(N, seed=0)
    x = noise.randn_like(torch.zeros(N, *GOLD_SHAPE, dtype=torch.float64))
    sched = schedule()
    out = sample(ClassifierFreeGuidance(den, w), x, sched.timesteps(steps), {"y": y}, make_step(sampler, sched, eta),
                 noise)
    return out, y, means


@pytest.mark.parametrize("sampler,steps,eta", [("dpmpp-2m", 100, 0.0), ("ddpm", 1000, 0.0)])
def test_unguided_conditional_sampling_reproduces_each_class(sampler, steps, eta):
    out, y, means = run_guided(0.0, sampler, steps, eta)
    se = 1 / (N // 2) ** 0.5
    for k in (0, 1):
        z = (out[y == k] - means[k]) / SIGMA  # N(0, 1) in every pixel when exact
        assert z.mean(0).abs().max() < 5 * se, (k, z.mean(0))
        assert (z.std(0) - 1).abs().max() < 0.06, (k, z.std(0))


def test_guidance_pushes_away_from_the_other_class():
    """Guided score − conditional score = w(1 − p(y|x_t))·√ᾱ(μ_y − μ_other)/v, v = ᾱσ² + 1 − ᾱ: along d only.

    With isotropic σ the component orthogonal to d = μ_y − μ_other evolves exactly as without guidance, and along d
    the mean moves away from the other class, further for larger w.
    """
    ws = [0.0, 0.5, 1.0, 2.0, 4.0]
    runs = [run_guided(w) for w in ws]
    _, y, means = runs[0]
    se = SIGMA / (N // 2) ** 0.5
    for k in (0, 1):
        d = (means[k] - means[1 - k]).flatten()
        u = d / d.norm()
        shifts, base = [], runs[0][0][y == k].flatten(1)
        for out, _, _ in runs:
            rel = out[y == k].flatten(1) - means[k].flatten()
            shifts.append((rel @ u).mean().item())
            moved = out[y == k].flatten(1) - base
            orth = moved - (moved @ u)[:, None] * u
            assert orth.abs().max() < 1e-9, orth.abs().max()
        assert abs(shifts[0]) < 5 * se, shifts
        assert all(b > a + 5 * se for a, b in zip(shifts, shifts[1:])), shifts
