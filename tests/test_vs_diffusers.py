"""Cross-checks against diffusers: guidekit's schedules, timestep spacings and sampler steps equal its schedulers'.

diffusers keeps β and ᾱ in float32. The schedule tests compare them with guidekit's float64 tables to float32
precision; the step tests then load guidekit's float64 ᾱ table into the diffusers scheduler, so that the update
formulas themselves are compared in float64 at tight tolerances.
"""

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler  # noqa: E402

from guidekit.diffusion import NoiseSchedule  # noqa: E402
from guidekit.sampling import DDIM, DDPM, DPMSolverPP2M, DPMSolverPP2MSDE, sample  # noqa: E402
from gaussian import MixtureEps  # noqa: E402

T = 1000
SHAPE = (1, 4, 4)
KINDS = {"linear": ("linear", NoiseSchedule.linear), "cosine": ("squaredcos_cap_v2", NoiseSchedule.cosine)}
F32_EPS = 2.0 ** -23


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster (MixtureEps's float64 softmax over dim 0 costs ~7 ms a call threaded)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def schedules(kind, cls, **kwargs):
    """(guidekit schedule, diffusers scheduler of class cls) with the same named β schedule."""
    beta_schedule, make = KINDS[kind]
    return make(), cls(num_train_timesteps=T, beta_schedule=beta_schedule, **kwargs)


def use_float64_table(sch, gk: NoiseSchedule):
    """Load guidekit's float64 ᾱ table (already checked equal to diffusers' to float32 precision) into sch."""
    sch.alphas_cumprod = gk.alpha_bar_table.clone()
    one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sch, "final_alpha_cumprod"):  # DDIM, set_alpha_to_one=True
        sch.final_alpha_cumprod = one
    if hasattr(sch, "one"):  # DDPM
        sch.one = one
    return sch


class FixedNoise:
    """A Noise whose randn_like returns one given tensor; counts the draws."""

    def __init__(self, z):
        self.z, self.draws = z, 0

    def __len__(self):
        return self.z.shape[0]

    def randn_like(self, x):
        assert x.shape == self.z.shape and x.dtype == self.z.dtype
        self.draws += 1
        return self.z


class StreamNoise:
    """A Noise drawing from one seeded generator, in the order diffusers would draw with the same seed."""

    def __init__(self, n, seed):
        self.n, self.g = n, torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.n

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


def randn(*shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mixture(gk):
    """A deterministic, non-linear ε: the exact denoiser of a two-component Gaussian mixture."""
    g = torch.Generator().manual_seed(0)
    means = torch.rand((2, *SHAPE), generator=g, dtype=torch.float64) * 2 - 1
    stds = torch.rand((2, *SHAPE), generator=g, dtype=torch.float64) * 0.6 + 0.2
    return MixtureEps(gk, means, stds, weights=[0.3, 0.7])


def as_eps_fn(den):
    """eps_fn(x, t) of the loop, for a denoiser taking a per-image t tensor."""
    return lambda x, t: den(x, torch.full((x.shape[0],), float(t)), {})


def assert_close64(got, want, rtol=1e-10, atol=1e-10):
    assert got.dtype == want.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


# ---- schedules ----

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler])
def test_betas_equal_diffusers(kind, cls):
    gk, sch = schedules(kind, cls)
    assert sch.betas.dtype == torch.float32
    # diffusers rounds β to float32 (linear: computed by a float32 linspace, within 2 ulp)
    torch.testing.assert_close(gk.betas, sch.betas.double(), rtol=2 * F32_EPS, atol=0)
    if kind == "cosine":  # both evaluate the same float64 formula; diffusers then rounds once
        assert torch.equal(gk.betas.float(), sch.betas)


@pytest.mark.parametrize("kind", KINDS)
def test_alphas_cumprod_equal_diffusers(kind):
    gk, sch = schedules(kind, DDPMScheduler)
    want = sch.alphas_cumprod.double()
    # a float32 cumulative product over 1000 factors: relative error up to ~6e-7
    torch.testing.assert_close(gk.alpha_bar_table[:-1], want[:-1], rtol=1e-6, atol=0)
    # the last cosine β is the cap 0.999: 1 − fl32(0.999) is off by 1.3e-5 relative, so ᾱ_{T−1} is too
    torch.testing.assert_close(gk.alpha_bar_table[-1:], want[-1:], rtol=1e-6 if kind == "linear" else 3e-5, atol=0)
    # ... and with diffusers' own float32 β accumulated in float64, the tables agree to float32 rounding
    exact = NoiseSchedule(sch.betas.double()).alpha_bar_table
    torch.testing.assert_close(exact, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_bar_lookup_on_integer_steps(kind):
    gk, _ = schedules(kind, DDPMScheduler)
    t = torch.arange(-1, T, dtype=torch.float64)
    ab = gk.alpha_bar(t)
    assert ab[0].item() == 1.0  # t = −1 is diffusers' set_alpha_to_one / DDPM's `one`
    torch.testing.assert_close(ab[1:], gk.alpha_bar_table, rtol=1e-13, atol=0)


# ---- timestep spacings ----

COMMON_STEPS = [2, 3, 4, 5, 7, 10, 20, 25, 50, 100, 200, 250, 500, 1000]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", COMMON_STEPS)
def test_timesteps_equal_ddim_scheduler(spacing, n):
    gk = NoiseSchedule.linear()
    sch = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    sch.set_timesteps(n)
    levels = gk.timesteps(n, spacing)
    assert levels[-1] == -1.0 and len(levels) == n + 1
    assert levels[:-1] == [float(v) for v in sch.timesteps.tolist()]


def test_linspace_single_step_starts_at_the_top():
    """Documented difference: diffusers' linspace with one step is [0] (np.linspace(0, 999, 1)); guidekit's is [999]."""
    sch = DDIMScheduler(num_train_timesteps=T, timestep_spacing="linspace")
    sch.set_timesteps(1)
    assert sch.timesteps.tolist() == [0]
    assert NoiseSchedule.linear().timesteps(1, "linspace") == [999.0, -1.0]
    for spacing in ("leading", "trailing"):
        sch = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
        sch.set_timesteps(1)
        assert NoiseSchedule.linear().timesteps(1, spacing)[:-1] == [float(v) for v in sch.timesteps.tolist()]


def _mismatching_step_counts(spacing):
    gk = NoiseSchedule.linear()
    sch = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing)
    bad = []
    for n in range(2, T + 1):
        sch.set_timesteps(n)
        if gk.timesteps(n, spacing)[:-1] != [float(v) for v in sch.timesteps.tolist()]:
            bad.append(n)
    return bad


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_equal_ddim_scheduler_for_every_step_count(spacing):
    assert _mismatching_step_counts(spacing) == []


@pytest.mark.parametrize("n", [10, 20, 25, 50, 100])
def test_trailing_timesteps_equal_dpmsolver_scheduler(n):
    """DPMSolverMultistepScheduler's 'trailing' is DDIM's; its 'leading'/'linspace' split n + 1 and drop one."""
    sch = DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    sch.set_timesteps(n)
    assert NoiseSchedule.linear().timesteps(n, "trailing")[:-1] == [float(v) for v in sch.timesteps.tolist()]


# ---- DDIM ----

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("n", [10, 50])
def test_ddim_step_equals_diffusers(kind, eta, n):
    gk, sch = schedules(kind, DDIMScheduler, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sch.set_timesteps(n)
    use_float64_table(sch, gk)
    levels = gk.timesteps(n, "leading")
    assert levels[:-1] == [float(v) for v in sch.timesteps.tolist()]
    step = DDIM(gk, eta)
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        x, eps, z = (randn(3, *SHAPE, seed=100 * i + k) for k in range(3))
        seen = []

        def eps_fn(x_t, t_):
            seen.append(t_)
            return eps

        noise = FixedNoise(z)
        x_s, x0 = step(eps_fn, x, t, s, noise)
        out = sch.step(eps, int(t), x, eta=eta, variance_noise=z)
        assert seen == [t]
        assert_close64(x0, out.pred_original_sample)
        assert_close64(x_s, out.prev_sample)
        if s == -1.0:  # the last step lands on ᾱ = 1: x_s is x̂0 exactly and no noise is used
            assert_close64(x_s, x0, rtol=1e-12, atol=1e-12)
            assert noise.draws == 0
        else:
            assert noise.draws == (1 if eta > 0 else 0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_trajectory_equals_diffusers(kind, eta):
    gk, sch = schedules(kind, DDIMScheduler, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    n, b = 25, 6
    sch.set_timesteps(n)
    use_float64_table(sch, gk)
    den = mixture(gk)
    x_init = randn(b, *SHAPE, seed=1)

    got = sample(den, x_init.clone(), gk.timesteps(n, "leading"), {}, DDIM(gk, eta), StreamNoise(b, seed=7))

    x, g = x_init.clone(), torch.Generator().manual_seed(7)
    for i, t in enumerate(sch.timesteps.tolist()):
        last = i == n - 1  # guidekit draws no noise on the step to ᾱ = 1
        z = None if (eta == 0 or last) else torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = sch.step(as_eps_fn(den)(x, t), t, x, eta=eta, variance_noise=z).prev_sample
    assert_close64(got, x, rtol=1e-9, atol=1e-9)


# ---- DDPM ----

@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_step_equals_diffusers(kind):
    gk, sch = schedules(kind, DDPMScheduler, variance_type="fixed_small", clip_sample=False)
    use_float64_table(sch, gk)
    levels = gk.timesteps(T)
    assert levels == [float(t) for t in range(T - 1, -2, -1)]
    step = DDPM(gk)
    for t in (999, 998, 700, 300, 10, 1, 0):
        x, eps = randn(3, *SHAPE, seed=t), randn(3, *SHAPE, seed=t + 5000)
        z = randn(3, *SHAPE, seed=t + 9000)  # what diffusers draws from generator seed t + 9000
        noise = FixedNoise(z)
        x_s, x0 = step(lambda x_t, t_: eps, x, float(t), float(t - 1), noise)
        out = sch.step(eps, t, x, generator=torch.Generator().manual_seed(t + 9000))
        assert_close64(x0, out.pred_original_sample)
        assert_close64(x_s, out.prev_sample)
        assert noise.draws == (1 if t > 0 else 0)  # no noise on the last step, as in diffusers
        if t == 0:
            assert_close64(x_s, x0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [T, 50])
def test_ddpm_trajectory_equals_diffusers(kind, n):
    """The whole ancestral chain, full-length and respaced (diffusers' posterior uses ᾱ_t / ᾱ_prev as guidekit)."""
    gk, sch = schedules(kind, DDPMScheduler, variance_type="fixed_small", clip_sample=False,
                        timestep_spacing="leading")
    if n < T:
        sch.set_timesteps(n)
    use_float64_table(sch, gk)
    levels = gk.timesteps(n, "leading")
    assert levels[:-1] == [float(v) for v in sch.timesteps.tolist()]
    den, b = mixture(gk), 4
    x_init = randn(b, *SHAPE, seed=2)

    got = sample(den, x_init.clone(), levels, {}, DDPM(gk), StreamNoise(b, seed=11))

    x, g = x_init.clone(), torch.Generator().manual_seed(11)
    for t in sch.timesteps.tolist():
        x = sch.step(as_eps_fn(den)(x, t), t, x, generator=g).prev_sample
    assert_close64(got, x, rtol=1e-9, atol=1e-9)


# ---- DPM-Solver++(2M) ----

def dpm_scheduler(kind, gk, levels, float64, algorithm="dpmsolver++", solver_type="midpoint"):
    """diffusers' DPM-Solver++(2M) on guidekit's levels; float64=True loads float64 σ's (steps still upcast x to
    float32 internally, so agreement is ~1e-7, not 1e-15)."""
    beta_schedule, _ = KINDS[kind]
    sch = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, algorithm_type=algorithm,
                                      solver_order=2, solver_type=solver_type, final_sigmas_type="zero",
                                      lower_order_final=True, euler_at_final=False)
    sch.set_timesteps(timesteps=[int(t) for t in levels[:-1]])
    assert [float(v) for v in sch.timesteps.tolist()] == levels[:-1]
    if float64:
        ab = gk.alpha_bar(torch.tensor(levels[:-1]))
        sch.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])
    return sch


def dpm_trajectories(kind, spacing, n, float64, b=6):
    gk = KINDS[kind][1]()
    levels = gk.timesteps(n, spacing)
    sch = dpm_scheduler(kind, gk, levels, float64)
    den = mixture(gk)
    x_init = randn(b, *SHAPE, seed=3)
    x0s = []
    got = sample(den, x_init.clone(), levels, {}, DPMSolverPP2M(gk), FixedNoise(x_init),
                 callback=lambda info: x0s.append(info.x0))
    x = x_init.clone()
    for t in sch.timesteps.tolist():
        x = sch.step(as_eps_fn(den)(x, t), t, x).prev_sample
    return got, x, x0s


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("spacing,n", [("trailing", 1), ("trailing", 2), ("trailing", 5), ("trailing", 10),
                                       ("trailing", 25), ("leading", 20), ("linspace", 50), ("trailing", 100)])
def test_dpmpp_2m_trajectory_equals_diffusers(kind, spacing, n):
    """Same updates: first order at the first step, 2M (midpoint) in between, and x̂0 at the final σ = 0.

    diffusers' `lower_order_final` (under 15 steps) only affects a 3rd-order solver's second-to-last step; with
    final_sigmas_type="zero" the last step is always first order, whose σ_s = 0 update is exactly x̂0.
    """
    got, want, x0s = dpm_trajectories(kind, spacing, n, float64=True)
    assert got.dtype == want.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    assert torch.equal(got, x0s[-1])  # guidekit's last step returns x̂0 itself


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 5, 25])
def test_sde_dpmpp_2m_trajectory_equals_diffusers(kind, n):
    """SDE-DPM-Solver++(2M) = diffusers' sde-dpmsolver++ with solver_type="heun" (the exact integral of x̂0's
    linear extrapolation in λ), fed the same noise at every step."""
    gk = KINDS[kind][1]()
    levels = gk.timesteps(n, "trailing")
    sch = dpm_scheduler(kind, gk, levels, True, algorithm="sde-dpmsolver++", solver_type="heun")
    den, x_init, z = mixture(gk), randn(6, *SHAPE, seed=3), randn(6, *SHAPE, seed=4)
    noise = FixedNoise(z)
    got = sample(den, x_init.clone(), levels, {}, DPMSolverPP2MSDE(gk), noise)
    x = x_init.clone()
    for t in sch.timesteps.tolist():
        x = sch.step(as_eps_fn(den)(x, t), t, x, variance_noise=z).prev_sample
    assert noise.draws == n - 1  # every step but the last (σ_s = 0) injects noise
    torch.testing.assert_close(got, x, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_dpmpp_2m_trajectory_equals_diffusers_float32_tables(kind):
    """diffusers as shipped (float32 σ's): the same trajectory to float32 accuracy."""
    got, want, _ = dpm_trajectories(kind, "trailing", 25, float64=False)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_dpmpp_2m_is_not_ddim():
    """Guard against a vacuous match: the second-order correction changes the result at few steps."""
    gk = NoiseSchedule.linear()
    den, levels = mixture(gk), gk.timesteps(10)
    x = randn(6, *SHAPE, seed=3)
    dpm = sample(den, x.clone(), levels, {}, DPMSolverPP2M(gk), FixedNoise(x))
    ddim = sample(den, x.clone(), levels, {}, DDIM(gk, 0.0), FixedNoise(x))
    assert (dpm - ddim).abs().max() > 1e-3
