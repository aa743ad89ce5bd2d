"""Zero-shot restoration (DPS, MCG, DDNM(+), ΠGDM, RePaint for any linear A): operator algebra, the methods' identities,
and the golden test: each method's restored mean and variance against the analytic Gaussian posterior p(x | y)."""

import pytest
import torch

from gaussian import BatchNoise, GaussianEps, MixtureEps, gaussian_posterior
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError
from guidekit.guidance import ClassifierFreeGuidance
from guidekit.masks import make_mask
from guidekit.restoration import (DDNM, DDNMPlus, GaussianBlur, Inpaint, MeasurementConstraint, Method,
                                  SuperResolution, make_operator, restore)
from guidekit.restoration.restore import stack_for
from guidekit.sampling import DDIM, DDPM, DPMSolverPP2M, sample
from guidekit.sampling.noise import Noise
from guidekit.sampling.repaint import RePaintConstraint, repaint_levels

SCHEDULE = NoiseSchedule.linear(1000)
SIDE = 4
D = SIDE * SIDE


def half_mask(side=SIDE):
    m = torch.zeros(1, 1, side, side)
    m[..., :, : side // 2] = 1
    return m


def operators():
    return {"inpaint": Inpaint(half_mask()), "sr2": SuperResolution(2), "deblur": GaussianBlur(0.7)}


def matrix(op, side=SIDE):
    """A as a dense matrix over the flattened pixels (columns = A of each basis image)."""
    return torch.stack([op(e.view(1, 1, side, side)).flatten() for e in torch.eye(side * side, dtype=torch.float64)],
                       1)


# ---------------------------------------------------------------- operators

@pytest.mark.parametrize("name", ["inpaint", "sr2", "deblur"])
def test_adjoint_and_pseudo_inverse_are_what_they_say(name):
    op, g = operators()[name], torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, SIDE, SIDE, generator=g, dtype=torch.float64)
    y = op(torch.randn(3, 2, SIDE, SIDE, generator=g, dtype=torch.float64))
    assert torch.allclose((op(x) * y).sum(), (x * op.adjoint(y)).sum())  # ⟨Ax, y⟩ = ⟨x, Aᵀy⟩
    assert torch.allclose(op(op.pinv(op(x))), op(x))  # A A† A = A
    assert torch.allclose(op.pinv(op(op.pinv(y))), op.pinv(y))  # A† A A† = A†
    A = matrix(op)
    P = matrix(lambda v: op.project(v))
    assert torch.allclose(P, P.T, atol=1e-12) and torch.allclose(P @ P, P, atol=1e-12)  # an orthogonal projection
    rows = A.abs().sum(1) > 0  # a mask's unmeasured pixels are structurally 0 in y
    assert torch.allclose(P, torch.linalg.pinv(A[rows]) @ A[rows], atol=1e-10)
    for a, b in ((0.7, 0.0), (0.3, 0.04)):  # (a·AAᵀ + b·I)⁻¹, with b = 0 the pseudo-inverse
        want = torch.linalg.pinv(a * A[rows] @ A[rows].T + b * torch.eye(int(rows.sum()), dtype=torch.float64))
        v = op(torch.randn(1, 1, SIDE, SIDE, generator=g, dtype=torch.float64))
        got = op.gram_solve(v, a, b).flatten()[rows] if name != "sr2" else op.gram_solve(v, a, b).flatten()
        assert torch.allclose(got, want @ v.flatten()[rows], atol=1e-9)
    assert torch.allclose(op.in_range(x, torch.ones_like), op.project(x), atol=1e-12)


def test_super_resolution_is_average_pooling_and_its_pseudo_inverse_nearest_upsampling():
    op = SuperResolution(4)
    x = torch.arange(64.0).view(1, 1, 8, 8)
    assert op(x).shape == (1, 1, 2, 2) and op(x)[0, 0, 0, 0] == x[0, 0, :4, :4].mean()
    assert torch.equal(op.pinv(op(x))[0, 0, :4, :4], torch.full((4, 4), float(x[0, 0, :4, :4].mean())))


def test_blur_keeps_the_mean_and_its_singular_values_are_the_dft_of_the_kernel():
    op = GaussianBlur(1.5)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(op(x).mean((-1, -2)), x.mean((-1, -2)))
    k = op.k_hat(x)
    assert k.max() == pytest.approx(1.0) and (k >= 0).all() and (k < op.cutoff).any()  # high frequencies are lost
    A = matrix(op, 8)  # 64×64: symmetric, with the DFT of the kernel as its eigenvalues
    half = op.k_hat(torch.zeros(1, 1, 8, 8, dtype=torch.float64))  # (8, 5): columns 0..4 of the DFT grid
    full = torch.cat([half, half[(-torch.arange(8)) % 8][:, 1:4].flip(1)], 1)  # k̂[i, 8−j] = k̂[−i, j]
    assert torch.allclose(A, A.T) and full.shape == (8, 8)
    assert torch.allclose(torch.linalg.eigvalsh(A), full.flatten().sort().values, atol=1e-10)


def test_measurement_noise_only_where_measured_and_seeded():
    op = Inpaint(half_mask(8))
    x = torch.zeros(2, 1, 8, 8)
    y = op.measure(x, 0.1, torch.Generator().manual_seed(0))
    assert (y[..., 4:] == 0).all() and y[..., :4].std() == pytest.approx(0.1, rel=0.3)
    assert torch.equal(y, op.measure(x, 0.1, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("call,message", [
    (lambda: make_operator("denoise"), "unknown task 'denoise'"),
    (lambda: make_operator("inpaint"), "needs a mask"),
    (lambda: SuperResolution(1), "integer >= 2"),
    (lambda: SuperResolution(3)(torch.zeros(1, 1, 32, 32)), "divisible by 3"),
    (lambda: GaussianBlur(0.0), "sigma must be > 0"),
    (lambda: SuperResolution(2).measure(torch.zeros(1, 1, 4, 4), -0.1), "sigma_y must be >= 0"),
    (lambda: Inpaint(torch.full((1, 1, 4, 4), 0.5)), "threshold it"),
    (lambda: Method("dds"), "unknown restoration method 'dds'"),
])
def test_bad_operators_and_methods_are_refused(call, message):
    with pytest.raises(GuidekitError, match=message):
        call()


# ---------------------------------------------------------------- the methods' identities

def test_measurement_constraint_is_repaints_for_a_mask():
    """RePaint for any A is exactly RePaint's known-region constraint when A is a mask, draw for draw."""
    mask = make_mask("wide", 8, 3, torch.Generator().manual_seed(2))
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ours, theirs = MeasurementConstraint(Inpaint(mask), x0 * mask, SCHEDULE), RePaintConstraint(x0, mask, SCHEDULE)
    x = torch.randn(3, 1, 8, 8)
    for level in (500.0, 10.0, -1.0):
        a, b = Noise([0, 1, 2]), Noise([0, 1, 2])
        assert torch.equal(ours(x, level, a), theirs(x, level, b))


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_ddnm_plus_without_noise_is_ddnm_on_that_step(eta):
    op, den = SuperResolution(2), MixtureEps(SCHEDULE, torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5))
    y = op(torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)).double())
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps_fn = lambda v, t: den(v, torch.full((2,), t), {})  # noqa: E731
    ddnm = DDNM(den, SCHEDULE, op, y)
    a, _ = DDNMPlus(SCHEDULE, op, y, 0.0, eta)(eps_fn, x, 600.0, 400.0, Noise([0, 1]))
    b, _ = DDIM(SCHEDULE, eta)(lambda v, t: ddnm(v, torch.full((2,), t), {}), x, 600.0, 400.0, Noise([0, 1]))
    assert torch.allclose(a, b, atol=1e-10)


def test_ddnm_plus_refuses_a_deterministic_or_multistep_sampler():
    for step, message in ((DDIM(SCHEDULE, 0.0), "needs a stochastic step"),
                          (DPMSolverPP2M(SCHEDULE), "use --sampler ddpm or ddim")):
        with pytest.raises(GuidekitError, match=message):
            restore(lambda x, t, c: torch.zeros_like(x), SCHEDULE, SuperResolution(2), torch.zeros(1, 1, 2, 2),
                    (1, 4, 4), Method("ddnm"), {}, step, [0], 4, sigma_y=0.1)


@pytest.mark.parametrize("name", ["repaint", "dps", "mcg", "ddnm", "pigdm"])
def test_every_method_composes_with_cfg_keeps_images_independent_of_the_batch_and_counts_nfe(name):
    means = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    mix = MixtureEps(SCHEDULE, means, torch.full((2, 1, 8, 8), 0.3, dtype=torch.float64))
    calls = []

    def counted(x, t, cond):
        calls.append(x.shape[0])
        return mix(x, t, cond)

    op = SuperResolution(2)
    y = op(means[:1].float()).expand(3, -1, -1, -1)
    den = ClassifierFreeGuidance(counted, 2.0)
    run = lambda bs: restore(den, SCHEDULE, op, y, (1, 8, 8), Method(name), {"y": torch.tensor([0, 1, 0])},  # noqa
                             DDPM(SCHEDULE), [5, 6, 7], 6, batch_size=bs)
    a, nfe = run(None)
    assert nfe == 6 and sum(calls) == 6 * 2 * 3  # one batched CFG pass (two halves) per step per image
    b, _ = run(1)
    assert torch.allclose(a, b, atol=1e-6) and torch.isfinite(a).all()
    plain, _ = restore(counted, SCHEDULE, op, y, (1, 8, 8), Method(name), {"y": torch.tensor([0, 1, 0])},
                       DDPM(SCHEDULE), [5, 6, 7], 6)
    assert not torch.allclose(a, plain)  # CFG changed the restoration


def test_projection_methods_end_exactly_on_the_measurement():
    mask = make_mask("wide", 8, 2, torch.Generator().manual_seed(3))
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    mix = MixtureEps(SCHEDULE, torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.5))
    for name in ("repaint", "mcg"):
        out, _ = restore(mix, SCHEDULE, Inpaint(mask), x0 * mask, (1, 8, 8), Method(name), {}, DDIM(SCHEDULE),
                         [0, 1], 5)
        known = mask.expand_as(out).bool()
        assert torch.equal(out[known], x0[known])
    out, _ = restore(mix, SCHEDULE, SuperResolution(2), SuperResolution(2)(x0), (1, 8, 8), Method("ddnm"), {},
                     DDIM(SCHEDULE), [0, 1], 5)
    assert torch.allclose(SuperResolution(2)(out), SuperResolution(2)(x0), atol=1e-5)


# ---------------------------------------------------------------- golden: the analytic Gaussian posterior

def gaussian_case(cov_kind, op_name, sigma_y, seed=0):
    """(exact denoiser, operator, y of one draw, posterior mean, posterior variance, prior mean) on 4×4 pixels."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(D, generator=g, dtype=torch.float64) - 0.5
    L = torch.randn(D, D, generator=g, dtype=torch.float64) * 0.3
    cov = torch.eye(D, dtype=torch.float64) if cov_kind == "unit" else 0.25 * (L @ L.T + 0.3 * torch.eye(D))
    x = (mu + torch.linalg.cholesky(cov) @ torch.randn(D, generator=g, dtype=torch.float64)).view(1, 1, SIDE, SIDE)
    op = operators()[op_name]
    y = op.measure(x, sigma_y, torch.Generator().manual_seed(3))
    A = matrix(op)
    rows = A.abs().sum(1) > 0
    mean, post = gaussian_posterior(mu, cov, A[rows], y.flatten()[rows], sigma_y)
    return GaussianEps(SCHEDULE, mu, cov), op, y, mean, post.diagonal(), mu


def restored(method, den, op, y, sigma_y, n=4000, steps=100, jumps=1):
    d, step, constraints = stack_for(method, den, DDPM(SCHEDULE), SCHEDULE, op, y.expand(n, -1, -1, -1), sigma_y)
    x = torch.randn(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    levels = repaint_levels(SCHEDULE.timesteps(steps), 1, jumps)
    return sample(d, x, levels, {}, step, BatchNoise(n, 0), constraints).flatten(1)


# n = 4000: the standard error of a mean is ≤ 1/√4000 = 0.016, of a variance ≤ √(2/4000) = 0.022 (max over 16 pixels
# ≈ 3 of them). Measured on this case, ΠGDM's worst pixel: mean 0.02–0.04, variance 0.03–0.06.
@pytest.mark.parametrize("op_name", ["inpaint", "sr2", "deblur"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.2])
def test_pigdm_samples_the_exact_posterior_of_a_unit_gaussian(op_name, sigma_y):
    """For x0 ~ N(μ, I), p(x0 | x_t) = N(x̂0, (1 − ᾱ)I) exactly, so ΠGDM's score is ∇log p(x_t | y) itself."""
    den, op, y, mean, var, _ = gaussian_case("unit", op_name, sigma_y)
    x = restored(Method("pigdm"), den, op, y, sigma_y)
    assert (x.mean(0) - mean).abs().max() < 0.07
    assert (x.var(0) - var).abs().max() < 0.1


def test_ddnm_is_exact_where_the_measured_pixels_are_independent_of_the_rest():
    den, op, y, mean, var, _ = gaussian_case("unit", "inpaint", 0.0)
    x = restored(Method("ddnm"), den, op, y, 0.0)
    assert (x.mean(0) - mean).abs().max() < 0.07 and (x.var(0) - var).abs().max() < 0.1


def test_noise_free_methods_break_on_noisy_ill_conditioned_measurements_the_noise_aware_do_not():
    """A blur with a small singular value (0.03) and σ_y = 0.2: RePaint/MCG project A†y, whose noise is 7× σ_y, and
    land far from the posterior mean; ΠGDM is exact and DPS close (measured: RePaint 3.7, ΠGDM 0.06, DPS 0.18)."""
    den, op, y, mean, var, mu = gaussian_case("unit", "deblur", 0.2)
    prior_err = (mu - mean).abs().max()
    errors = {name: (restored(Method(name, zeta=0.5), den, op, y, 0.2, n=1000).mean(0) - mean).abs().max()
              for name in ("repaint", "mcg", "pigdm", "dps")}
    assert errors["repaint"] > prior_err and errors["mcg"] > prior_err
    assert errors["pigdm"] < 0.1 and errors["dps"] < 0.3 * prior_err


# Correlated prior: every method is an approximation. Measured (n = 1000, 100 DDPM steps; worst pixel's mean error,
# prior's own 0.98 inpaint / 0.65 sr2): inpaint RePaint 0.23, DDNM 0.25, ΠGDM 0.16, DPS 0.09, MCG 0.16; sr2 0.19,
# 0.16, 0.09, 0.10, 0.08.
@pytest.mark.parametrize("op_name", ["inpaint", "sr2"])
def test_on_a_correlated_gaussian_every_method_moves_most_of_the_way_to_the_posterior(op_name):
    den, op, y, mean, var, mu = gaussian_case("correlated", op_name, 0.0)
    prior_err = (mu - mean).abs().max()
    for name in ("repaint", "dps", "mcg", "ddnm", "pigdm"):
        x = restored(Method(name, zeta=0.5), den, op, y, 0.0, n=1000)
        err = (x.mean(0) - mean).abs().max()
        assert err < 0.35 * prior_err, (name, float(err), float(prior_err))
        assert (x.var(0) - var).abs().max() < 0.15, name


def test_time_travel_lowers_ddnms_bias_on_a_correlated_gaussian():
    """DDNM's time travel is RePaint's resampling on the same loop: r = 4 passes bring the mean closer."""
    den, op, y, mean, _, _ = gaussian_case("correlated", "inpaint", 0.0)
    err = [float((restored(Method("ddnm"), den, op, y, 0.0, n=1000, steps=50, jumps=r).mean(0) - mean).abs().max())
           for r in (1, 4)]
    assert err[1] < err[0] - 0.05, err


# ---------------------------------------------------------------- CLI

TRAIN = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "2", "--batch-size", "8", "--no-progress"]
FAST = ["--steps", "3", "--no-progress", "--dataset", "samples"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from guidekit.cli import main

    out = tmp_path_factory.mktemp("restore") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def png(path):
    import numpy as np
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path), dtype=np.uint8).copy())


def test_cli_restore_writes_pictures_and_a_manifest_and_keeps_known_pixels(run_dir, tmp_path, capsys):
    import json

    from guidekit.cli import main

    out = tmp_path / "r"
    assert main(["restore", str(run_dir), "--task", "inpaint", "--mask", "half", "--method", "mcg", "--from-dataset",
                 "2", "--n", "2", "--out", str(out)] + FAST) == 0
    assert "NFE 3 per image" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "mcg" and manifest["zeta"] == 10.0 and manifest["task"] == "inpaint"
    assert len(manifest["images"]) == 2 and all("psnr" in e and "consistency" in e for e in manifest["images"])
    truth, known = png(out / "truth.png"), png(out / "measurement.png")
    half = torch.zeros_like(truth, dtype=torch.bool)
    half[:, :16] = True
    for e in manifest["images"]:
        assert torch.equal(png(out / e["file"])[half], truth[half])  # the projection keeps the measured pixels
    assert torch.equal(known[half], truth[half]) and (out / "grid.png").exists()


def test_cli_restore_from_a_low_resolution_file(run_dir, tmp_path, capsys):
    import json

    from PIL import Image

    from guidekit.cli import main

    Image.new("L", (8, 8), 180).save(tmp_path / "low.png")
    out = tmp_path / "r"
    assert main(["restore", str(run_dir), "--task", "sr4", "--method", "ddnm", "--measurement",
                 str(tmp_path / "low.png"), "--sampler", "ddpm", "--n", "1", "--out", str(out)] + FAST) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sigma_y"] == pytest.approx(2 / 255 / 12 ** 0.5) and "psnr_mean" not in manifest
    assert png(out / "measurement.png").shape == (8, 8)
    assert "consistency" in capsys.readouterr().out


def test_sweep_restore_tiny_run_resumes_and_reports(run_dir, tmp_path, monkeypatch):
    import csv

    from guidekit.cli import main

    monkeypatch.setenv("GUIDEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    args = ["sweep", "restore", str(run_dir), "--n", "10", "--steps", "4", "--reference", "samples", "--no-progress",
            "--out", str(out), "--methods", "repaint,ddnm,pigdm", "--sigma-y", "0,0.05"]
    assert main(args + ["--tasks", "sr4"]) == 0
    assert main(args + ["--tasks", "sr4,deblur"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["task"], r["sigma_y"], r["method"], r["steps"], r["r"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 2 * 4  # repaint twice (r = 1 at 4 steps, r = 2 at 2 steps)
    assert ("sr4", "0.05", "ddnm", "4", "1") in keys and ("deblur", "0.0", "repaint", "2", "2") in keys
    ddnm_noisy = next(r for r in rows if (r["task"], r["sigma_y"], r["method"]) == ("sr4", "0.05", "ddnm"))
    assert ddnm_noisy["sampler"] == "ddpm"  # DDNM+ needs a stochastic step
    for r in rows:
        assert float(r["psnr"]) > 0 and float(r["fid"]) > 0 and float(r["consistency"]) >= 0 and int(r["nfe"]) <= 4
    report = (out / "results.md").read_text()
    assert "RePaint best" in report and "PSNR lost to measurement noise" in report
    assert (out / "grid-deblur-s0.05.png").stat().st_size > 1000
    assert main(args + ["--tasks", "sr4", "--zeta", "3"]) == 2  # other settings, same folder
