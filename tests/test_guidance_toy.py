"""benchmarks/guidance_toy.py: its exact denoiser against a finite-difference score and a Monte-Carlo posterior mean,
its CADS embedding reading, and the whole comparison at test size with the physics it must show."""

import math

import pytest
from benchmark_module import load_benchmark
import torch

from guidekit.diffusion.denoiser import CLASS_EMBEDDING, NULL
from guidekit.diffusion.parameterization import eps_to_x0


_load = load_benchmark


toy = _load("guidance_toy")
SCHEDULE = toy.NoiseSchedule.linear(1000)
MIX = toy.ToyMixture.trees(SCHEDULE)


def points(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.8 * torch.randn(n, 2, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, NULL] * (n // 4))


@pytest.mark.parametrize("t", [20.0, 300.0, 900.0])
def test_eps_is_minus_sigma_times_the_finite_difference_score(t):
    x, y = points()
    ab = SCHEDULE.alpha_bar(torch.full((len(x),), t))
    eps = MIX(x.view(-1, 2, 1, 1), torch.full((len(x),), t), {"y": y}).view(-1, 2)
    h = 1e-5
    grad = torch.stack([(MIX.log_prob_t(x + h * e, ab, y) - MIX.log_prob_t(x - h * e, ab, y)) / (2 * h)
                        for e in torch.eye(2, dtype=torch.float64)], 1)
    assert torch.allclose(eps, -(1 - ab[:, None]).sqrt() * grad, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("t", [100.0, 500.0])
def test_x0_of_the_exact_eps_is_the_monte_carlo_posterior_mean(t):
    """E[x0 | x_t] by self-normalised weights N(x_t; √ᾱ x0_i, 1 − ᾱ) over 200,000 true draws, per class and for ∅:
    an independent check of the closed form (it uses only sampling and the forward process). The Monte-Carlo error
    is ≈ 0.001; autoguidance's bad model (2Σ + 0.02² I) misses by 0.018 at t = 100."""
    ab = float(SCHEDULE.alpha_bar(t))
    g = torch.Generator().manual_seed(1)
    x_t = torch.tensor([[0.1, 0.3], [-0.4, -0.2], [0.5, -0.3], [0.0, 0.0]], dtype=torch.float64)
    for y in (0, 1, 2, NULL):
        draws = MIX.sample(torch.full((200_000,), y), g)
        logw = -((x_t[:, None] - ab ** 0.5 * draws[None]) ** 2).sum(-1) / (2 * (1 - ab))
        mc = (torch.softmax(logw, 1)[..., None] * draws[None]).sum(1)
        eps = MIX(x_t.view(-1, 2, 1, 1), torch.full((4,), t), {"y": torch.full((4,), y)})
        exact = eps_to_x0(x_t.view(-1, 2, 1, 1), eps, ab).view(-1, 2)
        assert (exact - mc).abs().max() < 0.004, (y, exact, mc)


def test_clean_one_hot_embedding_is_the_conditional_model_and_null_rows_ignore_it():
    x, y = points(8)
    t = torch.full((8,), 400.0)
    plain = MIX(x.view(-1, 2, 1, 1), t, {"y": y})
    embedded = MIX(x.view(-1, 2, 1, 1), t, {"y": y, CLASS_EMBEDDING: toy.one_hot_embed(y)})
    assert torch.equal(plain, embedded)
    soft = torch.tensor([[0.5, 0.5, -1.0]] * 8, dtype=torch.float64)  # clipped, normalised: half class 0, half 1
    mixed = MIX(x.view(-1, 2, 1, 1), t, {"y": y, CLASS_EMBEDDING: soft})
    assert torch.equal(mixed[y == NULL], plain[y == NULL])
    assert not torch.allclose(mixed[y == 2], plain[y == 2])
    prior = MIX.class_prior({"y": y, CLASS_EMBEDDING: soft}, 8)
    assert torch.equal(prior[y != NULL], torch.tensor([[0.5, 0.5, 0.0]] * 6, dtype=torch.float64))


def test_true_samples_score_as_the_truth():
    """The reference row: 1 % of true samples fall outside the 1 % region, and recall and the NN ratio are ≈ 1."""
    ref = toy.Reference(MIX, 1000, 0)
    m = toy.measure(MIX, ref, ref.true2, ref.y)
    assert 0.003 < m["outside"] < 0.02 and m["modes"] == 1.0 and m["recall"] > 0.9 and 0.9 < m["nn_ratio"] < 1.1
    assert 0.9 < m["acc"] < 0.99  # the three trunks cross at a shared root: the classes overlap


def test_every_method_at_test_size_and_what_guidance_does_to_the_exact_density(tmp_path):
    """Autoguidance sharpens each class onto its own branches (higher log p(x | c), nothing outside the 1 % region);
    CFG at w = 3 buys class accuracy with likelihood and coverage (Karras et al. 2024, Fig. 1); NFE per method."""
    rows = toy.main(["--n", "100", "--steps", "8", "--w", "2,3", "--lambdas", "0.6", "--out", str(tmp_path),
                     "--no-progress"])
    by = {(r["method"], r["strength"]): r for r in rows}
    assert {m for m, _ in by} == {"truth"} | {m for m, _, _ in toy.METHODS}
    assert all(math.isfinite(r[k]) for r in rows for k in [*toy.METRICS, "nfe"])
    for f in ("results.csv", "results.md", "samples.png", "likelihood.png"):
        assert (tmp_path / f).stat().st_size > 0
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "results.csv").read_text().splitlines()) == len(rows) + 1
    plain, cfg, ag = by[("unguided", 0.0)], by[("cfg", 3.0)], by[("autoguidance", 2.0)]
    assert ag["logp"] > plain["logp"] + 0.3 and ag["outside"] < plain["outside"]
    assert cfg["logp"] < plain["logp"] and cfg["acc"] >= plain["acc"] and cfg["recall"] < plain["recall"] - 0.2
    assert (plain["nfe"], cfg["nfe"], ag["nfe"], by[("cfg-zero", 2.0)]["nfe"]) == (8, 16, 16, 14)
    assert by[("interval", 2.0)]["nfe"] < 16
