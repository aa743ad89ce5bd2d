"""Sampler steps between any two noise levels t > s: DDPM, DDIM(η), DPM-Solver++(2M) and its SDE. Each is one small class."""

from __future__ import annotations

import math
from typing import Callable

import torch

from guidekit.diffusion.parameterization import eps_to_x0
from guidekit.diffusion.schedule import NoiseSchedule, half_log_snr
from guidekit.errors import GuidekitError, check
from guidekit.sampling.noise import Noise

EpsFn = Callable[[torch.Tensor, float], torch.Tensor]


class Step:
    """A reverse step x_t → x_s; `reset()` forgets multistep history (called after a RePaint jump)."""

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule

    def reset(self) -> None:
        pass

    def ab(self, t: float) -> float:
        return float(self.schedule.alpha_bar(t))

    def __call__(self, eps_fn: EpsFn, x: torch.Tensor, t: float, s: float, noise: Noise):
        """Return (x_s, x̂0)."""
        raise NotImplementedError


class DDPM(Step):
    """Ancestral sampling from the posterior q(x_s | x_t, x̂0) (Ho et al. 2020, Alg. 2; respaced)."""

    def __call__(self, eps_fn, x, t, s, noise):
        ab_t, ab_s = self.ab(t), self.ab(s)
        x0 = eps_to_x0(x, eps_fn(x, t), ab_t)
        beta = 1 - ab_t / ab_s
        mean = (ab_s ** 0.5 * beta / (1 - ab_t)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_s) / (1 - ab_t)) * x
        var = (1 - ab_s) / (1 - ab_t) * beta
        return (mean + var ** 0.5 * noise.randn_like(x) if var > 0 else mean), x0


class DDIM(Step):
    """DDIM (Song et al. 2021, eq. 12): η = 0 deterministic, η = 1 matches DDPM's variance."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0):
        super().__init__(schedule)
        check(0.0 <= eta <= 1.0, f"eta must lie in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
        self.eta = eta

    def __call__(self, eps_fn, x, t, s, noise):
        ab_t, ab_s = self.ab(t), self.ab(s)
        eps = eps_fn(x, t)
        x0 = eps_to_x0(x, eps, ab_t)
        sigma = self.eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)) ** 0.5
        x_s = ab_s ** 0.5 * x0 + max(1 - ab_s - sigma ** 2, 0.0) ** 0.5 * eps
        return (x_s + sigma * noise.randn_like(x) if sigma > 0 else x_s), x0


class DPMSolverPP2M(Step):
    """DPM-Solver++(2M) in data prediction (Lu et al. 2022, Alg. 2); first-order on the first and last step."""

    def __init__(self, schedule: NoiseSchedule):
        super().__init__(schedule)
        self.reset()

    def reset(self) -> None:
        self.prev = None  # (x̂0, h) of the previous step

    def __call__(self, eps_fn, x, t, s, noise):
        ab_t, ab_s = self.ab(t), self.ab(s)
        x0 = eps_to_x0(x, eps_fn(x, t), ab_t)
        if ab_s >= 1.0:  # the last step lands on the clean image: σ_s = 0
            self.prev = None
            return x0, x0
        h = half_log_snr(ab_s) - half_log_snr(ab_t)
        x_s = self.update(x, x0, ab_t, ab_s, h, noise)
        self.prev = (x0, h)
        return x_s, x0

    def update(self, x, x0, ab_t, ab_s, h, noise):
        """x_s from x_t and x̂0 over a step of h in λ (the ODE: no noise)."""
        d = x0
        if self.prev is not None:
            x0_prev, h_prev = self.prev
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        sigma_ratio = ((1 - ab_s) / (1 - ab_t)) ** 0.5
        return sigma_ratio * x - ab_s ** 0.5 * math.expm1(-h) * d


class DPMSolverPP2MSDE(DPMSolverPP2M):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5 / app. B): the data-prediction SDE solved exactly in its linear
    part, x̂0 extrapolated linearly in λ from the last step; first order it is DDPM's posterior step."""

    def update(self, x, x0, ab_t, ab_s, h, noise):
        one_m = -math.expm1(-2 * h)  # 1 − e^{−2h}
        d = one_m * x0
        if self.prev is not None:  # ∫ e^{−2(λ_s−λ)} (λ − λ_t) dλ, times the slope of x̂0 in λ
            x0_prev, h_prev = self.prev
            d = d + (h - one_m / 2) * (x0 - x0_prev) / h_prev
        sigma_t, sigma_s = (1 - ab_t) ** 0.5, (1 - ab_s) ** 0.5
        return (sigma_s / sigma_t) * math.exp(-h) * x + ab_s ** 0.5 * d + sigma_s * one_m ** 0.5 * noise.randn_like(x)


SAMPLERS = ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde")


def make_step(name: str, schedule: NoiseSchedule, eta: float = 0.0) -> Step:
    """The step for a sampler name: ddpm | ddim | dpmpp-2m | dpmpp-2m-sde."""
    if name == "ddpm":
        return DDPM(schedule)
    if name == "ddim":
        return DDIM(schedule, eta)
    if name == "dpmpp-2m":
        return DPMSolverPP2M(schedule)
    if name == "dpmpp-2m-sde":
        return DPMSolverPP2MSDE(schedule)
    raise GuidekitError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")
