"""Sample-quality scores: FID/KID closed forms and agreement with torchmetrics, IS limits, accuracy, precision/recall."""

import math
import warnings

import numpy as np
import pytest
import torch

from guidekit import GuidekitError
from guidekit.metrics.scores import (class_accuracy, fid, fid_from_stats, gaussian_stats, inception_score, kid,
                                     per_class_accuracy, precision_recall)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def gaussian(n, mu, cov, seed=0):
    """n float64 samples of N(mu, cov)."""
    mu, cov = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    z = torch.randn(n, mu.shape[0], generator=gen(seed), dtype=torch.float64)
    return mu + z @ torch.linalg.cholesky(cov).T


def random_cov(d, seed):
    a = torch.randn(d, d, generator=gen(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def trace_sqrt_denman_beavers(a, b):
    """Reference Tr((AB)^½) by the Denman–Beavers iteration in numpy, independent of the module's eigh route."""
    y, z = np.asarray(a) @ np.asarray(b), np.eye(len(a))
    for _ in range(60):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    assert np.allclose(y @ y, np.asarray(a) @ np.asarray(b), rtol=1e-9, atol=1e-12)
    return float(np.trace(y))


def closed_form(mu1, s1, mu2, s2, trace_sqrt):
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt)


# ---------------------------------------------------------------- FID


def test_fid_from_stats_diagonal_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]).double(), torch.tensor([1.0, 1.0, 0.5]).double()
    a, b = torch.tensor([1.0, 4.0, 0.25]).double(), torch.tensor([9.0, 1.0, 2.0]).double()
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert fid_from_stats(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(float(expected), rel=1e-12)


def test_fid_from_stats_non_commuting_2x2_exact():
    # For a 2x2 matrix with positive eigenvalues, Tr √M = √(Tr M + 2√det M).
    s1 = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.7], [-0.7, 3.0]], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    prod = s1 @ s2
    trace_sqrt = math.sqrt(prod.trace() + 2 * math.sqrt(torch.linalg.det(prod)))
    mu1, mu2 = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 2.0])
    expected = closed_form(mu1.double(), s1, mu2.double(), s2, trace_sqrt)
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_fid_from_stats_non_commuting_high_dim_vs_denman_beavers():
    d = 16
    s1, s2 = random_cov(d, 1), random_cov(d, 2)
    mu1 = torch.randn(d, generator=gen(3), dtype=torch.float64)
    mu2 = torch.randn(d, generator=gen(4), dtype=torch.float64)
    expected = closed_form(mu1, s1, mu2, s2, trace_sqrt_denman_beavers(s1, s2))
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert fid_from_stats(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def test_fid_from_stats_singular_covariance():
    # Rank-deficient covariances (N < D in practice) give round-off negative eigenvalues; the result stays finite.
    v = torch.randn(8, 3, generator=gen(5), dtype=torch.float64)
    s = v @ v.T
    assert fid_from_stats(torch.zeros(8), s, torch.zeros(8), s) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_stats(torch.zeros(8), s, torch.zeros(8), torch.zeros(8, 8)) == pytest.approx(float(s.trace()))


def test_fid_self_and_same_distribution_near_zero():
    x = gaussian(20_000, torch.zeros(4), random_cov(4, 0), seed=0)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-9)
    y = gaussian(20_000, torch.zeros(4), random_cov(4, 0), seed=1)
    assert fid(x, y) < 5e-3


def test_sampled_fid_converges_to_closed_form():
    d = 4
    mu1, mu2 = torch.zeros(d), torch.tensor([1.0, 0.0, -0.5, 0.0])
    s1, s2 = random_cov(d, 10), random_cov(d, 11)
    exact = fid_from_stats(mu1, s1, mu2, s2)
    errors = [abs(fid(gaussian(n, mu1, s1, seed=20), gaussian(n, mu2, s2, seed=21)) - exact)
              for n in (500, 200_000)]
    assert errors[1] < 0.02 * exact
    assert errors[1] < errors[0]


def test_fid_grows_with_mean_shift_as_shift_squared():
    eye = torch.eye(3)
    for shift in (0.5, 1.0, 2.0):
        assert fid_from_stats(torch.zeros(3), eye, torch.tensor([shift, 0, 0]), eye) == pytest.approx(shift**2)
    real = gaussian(50_000, torch.zeros(3), eye, seed=0)
    noise = gaussian(50_000, torch.zeros(3), eye, seed=1)
    values = [fid(real, noise + torch.tensor([shift, 0.0, 0.0], dtype=torch.float64)) for shift in (0.0, 1.0, 2.0)]
    assert values == sorted(values)
    assert values[1] == pytest.approx(1.0, abs=0.05) and values[2] == pytest.approx(4.0, abs=0.1)


def test_gaussian_stats_float64_and_large_offset():
    # Centring first keeps the covariance exact even when the mean dwarfs the spread.
    x = torch.randn(1000, 3, generator=gen(0), dtype=torch.float64)
    mu, sigma = gaussian_stats(x.float() + 1e4)
    assert mu.dtype == sigma.dtype == torch.float64
    ref = torch.cov((x.float() + 1e4).double().T)
    assert torch.allclose(sigma, ref, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- agreement with torchmetrics


class Identity(torch.nn.Module):
    """Feature 'network' for torchmetrics that passes precomputed features through; num_features skips its probe."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


def test_fid_agrees_with_torchmetrics():
    tm = pytest.importorskip("torchmetrics.image.fid")
    d = 32
    real = gaussian(600, torch.zeros(d), random_cov(d, 30), seed=31)
    fake = gaussian(400, 0.3 * torch.ones(d), random_cov(d, 32), seed=33)
    metric = tm.FrechetInceptionDistance(feature=Identity(d))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert fid(real, fake) == pytest.approx(float(metric.compute()), rel=1e-6)


def test_kid_agrees_with_torchmetrics():
    tm = pytest.importorskip("torchmetrics.image.kid")
    d = 16
    real = gaussian(300, torch.zeros(d), random_cov(d, 40), seed=41)
    fake = gaussian(300, 0.2 * torch.ones(d), random_cov(d, 42), seed=43)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        metric = tm.KernelInceptionDistance(feature=Identity(d), subsets=3, subset_size=300)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ref_mean, ref_std = metric.compute()  # subsets = whole sets, so its unseeded permutations do not matter
    mean, std = kid(real, fake, subsets=3, subset_size=300)
    assert mean == pytest.approx(float(ref_mean), rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-12) and float(ref_std) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- KID


def test_kid_same_distribution_near_zero_shifted_positive():
    d = 8
    real = gaussian(2000, torch.zeros(d), torch.eye(d), seed=0)
    same = gaussian(2000, torch.zeros(d), torch.eye(d), seed=1)
    shifted = gaussian(2000, torch.full((d,), 0.5), torch.eye(d), seed=2)
    same_mean, same_std = kid(real, same, subsets=10, subset_size=500)
    shift_mean, shift_std = kid(real, shifted, subsets=10, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shift_mean > 10 * max(shift_std, abs(same_mean))


def test_kid_deterministic_and_clips_subset_size():
    real = gaussian(50, torch.zeros(3), torch.eye(3), seed=0)
    fake = gaussian(40, torch.ones(3), torch.eye(3), seed=1)
    assert kid(real, fake, subsets=5, seed=7) == kid(real, fake, subsets=5, seed=7)
    assert kid(real, fake, subsets=5, seed=7) != kid(real, fake, subsets=5, seed=8)
    # subset_size 1000 is clipped to 40 = the smaller set.
    assert kid(real, fake, subsets=5, subset_size=1000, seed=7) == kid(real, fake, subsets=5, subset_size=40, seed=7)


# ---------------------------------------------------------------- Inception score, accuracy


@pytest.mark.parametrize("k", [2, 10])
def test_inception_score_one_hot_uniform_is_k(k):
    labels = torch.arange(k * 10 * 5) % k  # the whole set holds each class 50 times
    mean, std = inception_score(torch.eye(k)[labels], splits=1)
    assert mean == pytest.approx(k, abs=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    # Shuffled splits are random class mixtures: just below k, approaching it as the splits grow.
    many = torch.eye(k)[torch.arange(k * 10 * 500) % k]
    assert inception_score(many, splits=10)[0] == pytest.approx(k, rel=0.01)


def test_inception_score_uniform_or_identical_predictions_is_one():
    assert inception_score(torch.full((100, 10), 0.1), splits=5)[0] == pytest.approx(1.0, abs=1e-9)
    p = torch.softmax(torch.randn(10, generator=gen(0)), dim=0)
    assert inception_score(p.expand(64, 10), splits=4)[0] == pytest.approx(1.0, abs=1e-6)


def test_accuracy_and_per_class():
    probs = torch.eye(3)[torch.tensor([0, 1, 2, 0, 0, 2])]
    labels = torch.tensor([0, 1, 1, 0, 2, 2])
    assert class_accuracy(probs, labels) == pytest.approx(4 / 6)
    assert per_class_accuracy(probs, labels, 3) == pytest.approx([1.0, 0.5, 0.5])
    acc = per_class_accuracy(probs[:2], labels[:2], 3)
    assert acc[:2] == [1.0, 1.0] and math.isnan(acc[2])


def confident_probs(n, k, seed):
    """(n, k) sharp, varied class probabilities, sorted by class like the files `guidekit sample` writes."""
    logits = 4 * torch.randn(n, k, generator=gen(seed), dtype=torch.float64)
    p = torch.softmax(logits, dim=1)
    return p[p.argmax(1).argsort(stable=True)]


def test_inception_score_of_class_sorted_samples_equals_shuffled():
    # Regression: splits in file order made each split of class-sorted samples one class, so IS collapsed to ~1.
    p = confident_probs(400, 10, seed=0)
    shuffled = p[torch.randperm(len(p), generator=gen(1))]
    assert inception_score(p) == inception_score(shuffled)
    whole = inception_score(p, splits=1)[0]  # one split: no split effect at all
    assert inception_score(p)[0] > 0.8 * whole  # not the one-class-per-split collapse to ~1
    assert inception_score(p, seed=3) != inception_score(p, seed=4)  # the seed picks the splits


def order_cases():
    """(name, permutation of the samples or None, permutation of the reference or None)."""
    fake, ref = torch.randperm(300, generator=gen(5)), torch.randperm(700, generator=gen(6))
    return [("samples", fake, None), ("reference", None, ref), ("both", fake, ref),
            ("reversed", torch.arange(299, -1, -1), None)]


@pytest.mark.parametrize("name, fake_perm, ref_perm", order_cases(), ids=[c[0] for c in order_cases()])
def test_evaluate_features_metrics_do_not_depend_on_sample_or_reference_order(name, fake_perm, ref_perm):
    from types import SimpleNamespace

    from guidekit.metrics.evaluate import evaluate_features
    from guidekit.metrics.reference import Reference

    centres = 3.0 * torch.randn(10, 16, generator=gen(0))
    labels = torch.arange(300) // 30  # class-sorted, as `guidekit sample` writes them
    feats = (centres[labels] + torch.randn(300, 16, generator=gen(1))).float()
    probs = confident_probs(300, 10, seed=2).float()
    requested = labels.clone()
    requested[::7] = -1  # some unconditional (NULL) samples
    real = (centres[torch.arange(700) % 10] + torch.randn(700, 16, generator=gen(3))).float()
    mu, sigma = gaussian_stats(real)
    ref = Reference(real, mu, sigma, "toy")
    evaluator = SimpleNamespace(metric_tag="TOY")
    base = evaluate_features(feats, probs, requested, evaluator, ref, seed=0)
    f = torch.arange(300) if fake_perm is None else fake_perm
    moved_ref = ref if ref_perm is None else Reference(real[ref_perm], mu, sigma, "toy")
    moved = evaluate_features(feats[f], probs[f], requested[f], evaluator, moved_ref, seed=0)
    assert set(moved) == set(base)
    assert moved["fid"] == pytest.approx(base["fid"], rel=1e-9)  # float64 sums in another order
    assert {k: v for k, v in moved.items() if k != "fid"} == {k: v for k, v in base.items() if k != "fid"}


def test_kid_and_precision_recall_subsets_do_not_depend_on_row_order():
    real, fake = gaussian(400, torch.zeros(4), torch.eye(4), seed=0), gaussian(300, torch.ones(4), torch.eye(4), 1)
    pr, pf = torch.randperm(400, generator=gen(2)), torch.randperm(300, generator=gen(3))
    assert kid(real[pr], fake[pf], subsets=7, subset_size=50) == kid(real, fake, subsets=7, subset_size=50)
    assert precision_recall(real[pr], fake[pf]) == precision_recall(real, fake)


# ---------------------------------------------------------------- precision / recall


def modes(n, centres, seed):
    """n points around randomly chosen centres (rows), spread 0.1."""
    g = gen(seed)
    idx = torch.randint(len(centres), (n,), generator=g)
    return centres[idx] + 0.1 * torch.randn(n, centres.shape[1], generator=g, dtype=torch.float64)


def test_precision_recall_toy_manifolds(monkeypatch):
    centres = 5.0 * torch.randn(10, 8, generator=gen(0), dtype=torch.float64)
    real = modes(1000, centres, seed=1)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    p, r = precision_recall(real, modes(1000, centres, seed=2))  # same distribution: k = 3 balls miss ~15%
    assert p > 0.8 and r > 0.8
    p, r = precision_recall(real, real + 100.0)
    assert p == 0.0 and r == 0.0
    collapsed = modes(1000, centres[:2], seed=3)
    p, r = precision_recall(real, collapsed)
    assert p > 0.8 and r < 0.3
    # Small distance blocks give the same answer as one block.
    monkeypatch.setattr("guidekit.metrics.scores._BLOCK_ENTRIES", 1000 * 300)  # blocks of 300, 300, 300, 100 rows
    assert precision_recall(real, collapsed) == (p, r)


# ---------------------------------------------------------------- bad input


def test_bad_inputs_raise_guidekit_error():
    x = torch.randn(10, 4)
    nan = x.clone()
    nan[3, 1] = float("nan")
    cases = [
        (lambda: fid(x, torch.randn(10, 5)), "dimension"),
        (lambda: fid(x[:1], x), "at least 2"),
        (lambda: fid(x.reshape(10, 2, 2), x), "2-D"),
        (lambda: fid(x, nan), "NaN"),
        (lambda: fid(x.numpy(), x), "torch.Tensor"),
        (lambda: fid_from_stats(torch.zeros(2), torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2), torch.eye(2)),
         "symmetric"),
        (lambda: fid_from_stats(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2)), "sigma1"),
        (lambda: gaussian_stats(x[:1]), "at least 2"),
        (lambda: kid(x, x, subsets=0), "subsets"),
        (lambda: kid(x, x, subset_size=1), "subset_size"),
        (lambda: kid(x, nan), "NaN"),
        (lambda: inception_score(torch.randn(10, 3)), "softmax"),
        (lambda: inception_score(torch.full((4, 2), 0.5), splits=5), "splits"),
        (lambda: class_accuracy(torch.eye(3), torch.tensor([0, 1, 3])), r"\[0, 3\)"),
        (lambda: class_accuracy(torch.eye(3), torch.tensor([0.0, 1.0, 2.0])), "integer"),
        (lambda: per_class_accuracy(torch.eye(3), torch.tensor([0, 1, 2]), 4), "num_classes"),
        (lambda: precision_recall(x[:3], x, k=3), "k = 3"),
        (lambda: precision_recall(x, x, k=0), "k must be"),
    ]
    for call, match in cases:
        with pytest.raises(GuidekitError, match=match):
            call()
