"""Sample-quality scores on precomputed evaluator features / class probabilities (FID, KID, IS, accuracy, P&R).

Everything here works on tensors that the Fashion-MNIST evaluator already produced (``Evaluator.features(x)``
→ (N, D), ``Evaluator.probs(x)`` → (N, K)), so the numbers are "FID-FMNIST", "KID-FMNIST", "IS-FMNIST", not the
Inception-v3 scores of the papers.

Library decision: the Fréchet and KID math is written here in float64 and tested against torchmetrics'
``FrechetInceptionDistance`` / ``KernelInceptionDistance`` fed the same features through an identity feature
module (tests/test_scores.py asserts 1e-6 relative; they agree to ~1e-15). torchmetrics is not called at run time:
(1) its public FID/KID take images through a feature network, with no public entry for precomputed features or
cached reference statistics; (2) its FID forms the covariance as (Σxxᵀ − nμμᵀ)/(n−1), which loses digits when the
feature mean is large next to its spread, and takes √eig of the non-symmetric Σ1Σ2; here the data are centred
first and Tr((Σ1Σ2)^½) = Σ √eig(Σ1^½ Σ2 Σ1^½) uses symmetric eigen-decompositions with round-off negative
eigenvalues clipped to 0; (3) its KID draws subsets from the global torch RNG and refuses subset_size > N, where we
want a seed argument and clipping. So torchmetrics is only a test dependency.
"""

from __future__ import annotations

import math

import torch

from guidekit.errors import check

Tensor = torch.Tensor

#: Distance-matrix blocks in precision_recall hold at most this many entries (float64: 128 MiB).
_BLOCK_ENTRIES = 1 << 24


def _matrix(x, name: str, min_rows: int, why: str) -> Tensor:
    """Validate a (N, D) finite real matrix with at least min_rows rows; return it as float64."""
    check(isinstance(x, Tensor), f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    check(x.dim() == 2, f"{name} must be 2-D (N samples, D features), got shape {tuple(x.shape)}; "
                        f"flatten per-sample features with x.reshape(len(x), -1)")
    check(not x.is_complex() and x.dtype != torch.bool,
          f"{name} must hold real numbers, got dtype {x.dtype}")
    check(x.shape[0] >= min_rows, f"{name} has {x.shape[0]} samples; {why} needs at least {min_rows}")
    check(x.shape[1] >= 1, f"{name} has no feature columns (shape {tuple(x.shape)})")
    x = x.detach().to(torch.float64)
    bad = (~torch.isfinite(x)).sum().item()
    check(bad == 0, f"{name} contains {bad} NaN/inf values; check the evaluator input (e.g. a diverged sampler)")
    return x


def _pair(real, fake, min_rows: int, why: str) -> tuple[Tensor, Tensor]:
    """Validate two feature matrices with the same feature dimension."""
    real, fake = _matrix(real, "real", min_rows, why), _matrix(fake, "fake", min_rows, why)
    check(real.shape[1] == fake.shape[1],
          f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}; "
          f"compute both with the same evaluator")
    return real, fake


def _int(value, name: str, low: int) -> int:
    """Validate an integer argument >= low."""
    check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
          f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _seed(seed) -> int:
    """Validate an integer seed."""
    check(isinstance(seed, int) and not isinstance(seed, bool), f"seed must be an integer, got {seed!r}")
    return seed


def canonical(x: Tensor) -> Tensor:
    """The rows of x in lexicographic order: one order for the same rows, whatever order they came in."""
    _, inverse = torch.unique(x, dim=0, return_inverse=True)
    return x[torch.argsort(inverse, stable=True)]


def random_rows(x: Tensor, m: int, generator: torch.Generator) -> Tensor:
    """m rows of x without replacement by a seeded permutation; of canonical(x), a draw free of x's order."""
    return x[torch.randperm(x.shape[0], generator=generator)[:m]]


def gaussian_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) in float64 of (N, D) features, for FID (Heusel et al. 2017)."""
    x = _matrix(feats, "feats", 2, "a covariance estimate")
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, (xc.T @ xc) / (x.shape[0] - 1)


def _psd_sqrt(s: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix by eigen-decomposition; negative round-off eigenvalues → 0."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def fid_from_stats(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), the Fréchet distance of two Gaussians (Heusel et al. 2017)."""
    stats = []
    for mu, sigma, i in ((mu1, sigma1, 1), (mu2, sigma2, 2)):
        check(isinstance(mu, Tensor) and isinstance(sigma, Tensor),
              f"mu{i} and sigma{i} must be torch.Tensors (use gaussian_stats(features))")
        check(mu.dim() == 1, f"mu{i} must be 1-D (D,), got shape {tuple(mu.shape)}")
        d = mu.shape[0]
        check(sigma.shape == (d, d), f"sigma{i} must be ({d}, {d}) to match mu{i}, got {tuple(sigma.shape)}")
        mu, sigma = mu.detach().to(torch.float64), sigma.detach().to(torch.float64)
        check(bool(torch.isfinite(mu).all() and torch.isfinite(sigma).all()), f"mu{i}/sigma{i} contain NaN/inf")
        scale = sigma.abs().max().clamp(min=1e-300)
        check(bool(((sigma - sigma.T).abs().max() <= 1e-6 * scale)),
              f"sigma{i} is not symmetric; pass a covariance matrix (gaussian_stats returns one)")
        stats.append((mu, (sigma + sigma.T) / 2))
    (mu1, sigma1), (mu2, sigma2) = stats
    check(mu1.shape == mu2.shape, f"the two Gaussians differ in dimension: {mu1.shape[0]} vs {mu2.shape[0]}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(value), 0.0)  # the true value is >= 0; clip float round-off like -1e-13


def fid(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to real and fake (N, D) features (Heusel et al. 2017)."""
    real, fake = _pair(real, fake, 2, "FID (a covariance estimate)")
    return fid_from_stats(*gaussian_stats(real), *gaussian_stats(fake))


def _mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² of equal-size samples with the kernel k(a, b) = (a·b/D + 1)³ (Bińkowski et al. 2018)."""
    m, d = x.shape

    def kernel(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * kxy.sum() / (m * m)


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel distance: mean and std of unbiased cubic-kernel MMD² over random subsets (Bińkowski et al. 2018).

    subset_size is clipped to the smaller set (so KID on, e.g., 500 samples uses subsets of 500; note this when
    comparing numbers computed with different sample counts). The std is the population std over subsets, as in
    the paper's code and torchmetrics. Subsets are drawn without replacement from a generator seeded with seed,
    from each set in canonical (content) order, so reordering either set does not change the result.
    """
    real, fake = _pair(real, fake, 2, "KID (an unbiased MMD estimate)")
    subsets, subset_size = _int(subsets, "subsets", 1), _int(subset_size, "subset_size", 2)
    gen = torch.Generator().manual_seed(_seed(seed))
    m = min(subset_size, real.shape[0], fake.shape[0])
    real, fake = canonical(real), canonical(fake)
    scores = torch.empty(subsets, dtype=torch.float64)
    for i in range(subsets):
        scores[i] = _mmd2_unbiased(random_rows(real, m, gen), random_rows(fake, m, gen))
    return float(scores.mean()), float(scores.std(unbiased=False))


def _probs(probs, name: str = "probs") -> Tensor:
    """Validate (N, K) class probabilities (rows on the simplex); return float64."""
    p = _matrix(probs, name, 1, "a score")
    check(bool((p >= -1e-6).all() and (p <= 1 + 1e-6).all()),
          f"{name} must be probabilities in [0, 1], got values in [{p.min():.3g}, {p.max():.3g}]; "
          f"pass softmax(logits), not logits")
    err = (p.sum(dim=1) - 1).abs().max().item()
    check(err <= 1e-3, f"{name} rows must sum to 1, off by up to {err:.3g}; pass softmax(logits) over the classes")
    return p.clamp(0, 1)


def inception_score(probs: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))) mean and std over splits (Salimans et al. 2016); ranges over [1, K].

    The rows are shuffled (canonical order, then a permutation seeded with seed) before splitting, so a
    class-sorted file order does not turn each split into one class, and reordering probs does not change the result.
    """
    p = _probs(probs)
    splits = _int(splits, "splits", 1)
    check(splits <= p.shape[0], f"splits = {splits} exceeds the {p.shape[0]} samples; use splits <= N")
    p = random_rows(canonical(p), p.shape[0], torch.Generator().manual_seed(_seed(seed)))
    scores = []
    for part in torch.tensor_split(p, splits):
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(dim=1)  # 0·log 0 = 0
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def _labels(labels, n: int, num_classes: int) -> Tensor:
    """Validate (N,) integer labels in [0, num_classes)."""
    check(isinstance(labels, Tensor) and labels.dim() == 1 and labels.shape[0] == n,
          f"labels must be a 1-D tensor with one label per sample ({n}), got "
          f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    check(not labels.is_floating_point() and not labels.is_complex() and labels.dtype != torch.bool,
          f"labels must be integer class indices, got dtype {labels.dtype}")
    if n:
        check(int(labels.min()) >= 0 and int(labels.max()) < num_classes,
              f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    return labels.long()


def class_accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose evaluator argmax equals the requested label (classifier-guidance accuracy)."""
    p = _matrix(probs, "probs", 1, "an accuracy")
    y = _labels(labels, p.shape[0], p.shape[1])
    return float((p.argmax(dim=1) == y).double().mean())


def per_class_accuracy(probs: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """Accuracy per requested label, as a list of num_classes floats; NaN for a label with no samples."""
    num_classes = _int(num_classes, "num_classes", 1)
    p = _matrix(probs, "probs", 1, "an accuracy")
    check(p.shape[1] == num_classes, f"probs has {p.shape[1]} classes but num_classes = {num_classes}")
    y = _labels(labels, p.shape[0], num_classes)
    hit = (p.argmax(dim=1) == y).double()
    total = torch.bincount(y, minlength=num_classes).double()
    correct = torch.bincount(y, weights=hit, minlength=num_classes)
    return [float(c / t) if t > 0 else math.nan for c, t in zip(correct, total)]


def _rows_per_block(cols: int) -> int:
    """Rows of a distance block against cols columns so the block stays under _BLOCK_ENTRIES."""
    return max(1, _BLOCK_ENTRIES // max(cols, 1))


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row, in blocks of torch.cdist."""
    rows = _rows_per_block(x.shape[0])
    radii = [torch.cdist(block, x).topk(k + 1, dim=1, largest=False).values[:, k]  # column 0 is the point itself
             for block in x.split(rows)]
    return torch.cat(radii)


def _coverage(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Fraction of points within radius of at least one centre (inside the k-NN manifold estimate)."""
    rows = _rows_per_block(centres.shape[0])
    inside = [(torch.cdist(block, centres) <= radii).any(dim=1) for block in points.split(rows)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall from k-NN balls around each set (Kynkäänniemi et al. 2019)."""
    k = _int(k, "k", 1)
    real, fake = _pair(real, fake, k + 1, f"a k-nearest-neighbour radius with k = {k}")
    real, fake = canonical(real), canonical(fake)  # same distances, bit for bit, however the rows are ordered
    precision = _coverage(fake, real, _knn_radii(real, k))
    recall = _coverage(real, fake, _knn_radii(fake, k))
    return precision, recall
