"""Closed-form denoisers for Gaussian and Gaussian-mixture data: the golden references of the sampler tests."""

import torch

from guidekit.diffusion.denoiser import NULL


def _ab(schedule, t):
    return schedule.alpha_bar(t.detach().cpu()).view(-1, *([1] * 3))


class MixtureEps:
    """Exact ε(x_t, t, y) for x0 ~ Σ_k π_k N(μ_k, diag σ_k²); y picks one component, NULL (or no y) the mixture."""

    def __init__(self, schedule, means, stds, weights=None):
        self.schedule = schedule
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, C, H, W)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        k = self.means.shape[0]
        self.weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights)

    def component_terms(self, x, ab):
        """Per-component log-density and score of p_t, shapes (K, B) and (K, B, C, H, W)."""
        var = ab * self.stds[:, None] ** 2 + 1 - ab                 # (K, B, C, H, W)
        diff = x[None] - ab.sqrt() * self.means[:, None]
        logp = (-0.5 * diff ** 2 / var - 0.5 * var.log()).flatten(2).sum(-1)
        return logp, -diff / var

    def __call__(self, x, t, cond):
        x64, ab = x.double(), _ab(self.schedule, t)[None]
        logp, score = self.component_terms(x64, ab)
        r = torch.softmax((logp + self.weights.log()[:, None]).T, dim=-1).T  # (K, B) posterior over components
        y = cond.get("y") if cond else None
        if y is not None:
            onehot = torch.nn.functional.one_hot(y.clamp(min=0), len(self.weights)).T.double()
            r = torch.where((y == NULL)[None], r, onehot)
        mix_score = (r[..., None, None, None] * score).sum(0)
        return (-(1 - ab[0]).sqrt() * mix_score).to(x.dtype)


class BatchNoise:
    """One generator for the whole batch: fast noise for distribution tests (per-image seeds are tested apart)."""

    def __init__(self, n, seed=0):
        self.n, self.g = n, torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.n

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


class MixtureClassifier(torch.nn.Module):
    """The exact noisy classifier p(y | x_t) of a MixtureEps (components = classes): logits = log π_k + log p_t^k."""

    def __init__(self, mixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x, t):
        ab = _ab(self.mixture.schedule, t)[None]
        logp, _ = self.mixture.component_terms(x.double(), ab)
        return (logp + self.mixture.weights.log()[:, None]).T.to(x.dtype)


class GaussianEps:
    """Exact ε for x0 ~ N(μ, Σ) over the flattened pixels: p_t = N(√ᾱ μ, ᾱΣ + (1−ᾱ)I), ε = −√(1−ᾱ)·∇ log p_t
    (per-row t; differentiable, so gradient methods see the exact Jacobian of x̂0)."""

    def __init__(self, schedule, mu, cov):
        self.schedule = schedule
        self.mu, self.cov = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)

    def __call__(self, x, t, cond):
        ab = self.schedule.alpha_bar(t.detach().cpu()).double().view(-1, 1, 1)
        d = (x.flatten(1).double() - ab[:, :, 0].sqrt() * self.mu)[..., None]
        cov_t = ab * self.cov + (1 - ab) * torch.eye(len(self.mu), dtype=torch.float64)
        return ((1 - ab).sqrt() * torch.linalg.solve(cov_t, d))[..., 0].view_as(x).to(x.dtype)


def gaussian_posterior(mu, cov, A, y, sigma_y):
    """p(x | y) for x ~ N(μ, Σ), y = A x + σ_y n: (mean, covariance) in closed form (pseudo-inverse where AΣAᵀ is
    singular, as for a noise-free mask)."""
    mu, cov, A, y = (torch.as_tensor(v, dtype=torch.float64) for v in (mu, cov, A, y))
    gain = cov @ A.T @ torch.linalg.pinv(A @ cov @ A.T + sigma_y ** 2 * torch.eye(len(A), dtype=torch.float64),
                                         hermitian=True)
    return mu + gain @ (y - A @ mu), cov - gain @ A @ cov
