"""Adaptive projected guidance (Sadat et al. 2024): CFG's update split along and across D_c, with momentum and a norm cap."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.parameterization import eps_to_x0, x0_to_eps
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check


def per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ per image, shaped to broadcast against a."""
    return (a * b).flatten(1).sum(1).view(-1, *[1] * (a.dim() - 1))


class APG:
    """A CFG rule in x̂0 space: Δ = D_c − D_u (+ β·the running Δ), scaled to norm <= r, then
    D̂ = D_c + w·(Δ_⊥ + η·Δ_∥) with Δ_∥ its projection on D_c. η = 1, β = 0, r = ∞ is CFG exactly; the paper
    finds η = 0 removes over-saturation (the parallel part) and keeps CFG's quality gain (the orthogonal part)."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, momentum: float = 0.0, threshold: float = math.inf):
        check(math.isfinite(eta) and eta >= 0, f"APG's η (the share of the parallel part kept) must be >= 0, got {eta}; "
                                               f"0 = the paper's choice, 1 = CFG's")
        check(math.isfinite(momentum) and -1 < momentum < 1,
              f"APG's momentum β must lie in (-1, 1) (the paper uses negative values, e.g. -0.5; 0 = none), got "
              f"{momentum}")
        check(not math.isnan(threshold) and threshold > 0,
              f"APG's norm threshold r must be > 0 ('inf' = none), got {threshold}")
        self.schedule, self.eta, self.momentum, self.threshold = schedule, float(eta), float(momentum), float(threshold)
        self.reset()

    def reset(self) -> None:
        self.running = None  # the momentum's running Δ of this trajectory

    def __call__(self, eps_c, eps_u, w, x, t):
        ab = self.schedule.alpha_bar(t.detach().cpu())
        d_c, d_u = eps_to_x0(x, eps_c, ab), eps_to_x0(x, eps_u, ab)
        delta = d_c - d_u
        if self.momentum != 0:
            if self.running is not None and self.running.shape == delta.shape:
                delta = delta + self.momentum * self.running
            self.running = delta
        if math.isfinite(self.threshold):
            norm = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
            delta = delta * (self.threshold / norm.clamp(min=1e-12)).clamp(max=1.0)
        parallel = per_image(delta, d_c) / per_image(d_c, d_c).clamp(min=1e-12) * d_c
        return x0_to_eps(x, d_c + w * (delta - parallel + self.eta * parallel), ab)
