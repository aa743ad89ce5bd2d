"""CFG++ (Chung et al. 2024, Alg. 1): x̂0 from ε_u + λ·(ε_c − ε_u), λ ∈ [0, 1], renoised with the unconditional ε_u."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.parameterization import eps_to_x0
from guidekit.errors import check
from guidekit.sampling.steps import DDIM


class CFGPlusPlus:
    """A CFG rule with λ = w: returns ε_λ = ε_u + λ·(ε_c − ε_u), the ε of the guided x̂0, and keeps ε_u for the
    step's renoising (CFGPPStep). λ = 0 is the unconditional model; λ = 1 the conditional x̂0 on ε_u's path."""

    def __init__(self):
        self.renoise: torch.Tensor | None = None

    def plain_at(self, w: float) -> bool:
        return False  # even λ = 0 renoises with ε_u, so both halves always run

    def reset(self) -> None:
        self.renoise = None

    def __call__(self, eps_c, eps_u, w, x, t):
        check(math.isfinite(w) and 0 <= w <= 1, f"CFG++'s λ (given as w) must lie in [0, 1] (Chung et al. 2024; "
                                                f"λ = 1 is the conditional x̂0), got {w}")
        self.renoise = eps_u
        return eps_u + w * (eps_c - eps_u)


class CFGPPStep(DDIM):
    """DDIM (η as given) whose direction term uses the rule's ε_u: x_s = √ᾱ_s·x̂0(ε_λ) + √(1−ᾱ_s−σ²)·ε_u + σ·n.
    Where no guidance ran (outside a guidance interval) it is plain DDIM."""

    def __init__(self, schedule, rule: CFGPlusPlus, eta: float = 0.0):
        super().__init__(schedule, eta)
        self.rule = rule

    def __call__(self, eps_fn, x, t, s, noise):
        ab_t, ab_s = self.ab(t), self.ab(s)
        self.rule.renoise = None
        eps = eps_fn(x, t)
        x0 = eps_to_x0(x, eps, ab_t)
        direction = eps if self.rule.renoise is None else self.rule.renoise.to(eps.dtype)
        sigma = self.eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        x_s = ab_s ** 0.5 * x0 + max(1 - ab_s - sigma ** 2, 0.0) ** 0.5 * direction
        return (x_s + sigma * noise.randn_like(x) if sigma > 0 else x_s), x0
