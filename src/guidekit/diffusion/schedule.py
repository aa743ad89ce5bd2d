"""Discrete noise schedules (Ho et al. 2020; cosine: Nichol & Dhariwal 2021) with continuous-time lookup."""

from __future__ import annotations

import math

import numpy as np
import torch

from guidekit.errors import GuidekitError, check

SPACINGS = ("trailing", "leading", "linspace", "logsnr")


def half_log_snr(ab: float) -> float:
    """λ = log(α/σ) = ½ log(ᾱ/(1 − ᾱ)) of level ᾱ (Lu et al. 2022)."""
    return 0.5 * math.log(ab / (1 - ab))


SCHEDULE_ARGS = {"linear": ("num_timesteps", "beta_start", "beta_end"),
                 "scaled_linear": ("num_timesteps", "beta_start", "beta_end"),
                 "cosine": ("num_timesteps", "s", "max_beta")}


def check_schedule_args(kind, args: dict) -> None:
    """The keys and values of a schedule config: known names, T an integer >= 2, the rest finite numbers."""
    check(isinstance(kind, str) and kind in SCHEDULE_ARGS,
          f"unknown noise schedule {kind!r}: use 'linear', 'scaled_linear' or 'cosine'")
    unknown = sorted((k for k in args if k not in SCHEDULE_ARGS[kind]), key=str)
    check(not unknown, f"unknown {kind} schedule key(s) {unknown}; valid keys are {list(SCHEDULE_ARGS[kind])}")
    T = args.get("num_timesteps", 2)
    check(isinstance(T, int) and not isinstance(T, bool) and 2 <= T <= 100_000,
          f"schedule num_timesteps must be an integer from 2 to 100000, got {T!r}; e.g. 1000")
    for k, v in args.items():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        check(ok, f"schedule {k} must be a finite number, got {v!r}")


class NoiseSchedule:
    """β_1..β_T and ᾱ_t = Π(1−β); ᾱ(t) for fractional t interpolates log ᾱ, with ᾱ(−1) = 1 (clean)."""

    def __init__(self, betas: torch.Tensor, kind: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        check(betas.ndim == 1 and len(betas) >= 2, f"betas must be a 1-D tensor of length >= 2, got shape {tuple(betas.shape)}")
        check(bool(((betas > 0) & (betas < 1)).all()), "every beta must lie in (0, 1); check the schedule's beta_start/beta_end")
        self.kind = kind
        self.betas = betas
        self.alpha_bar_table = torch.cumprod(1.0 - betas, 0)
        # log ᾱ on the grid t = -1, 0, 1, ..., T-1 (t = -1 is the clean image, ᾱ = 1).
        self._log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), self.alpha_bar_table.log()])

    @property
    def num_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return len(self.betas)

    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Linear β schedule of DDPM (Ho et al. 2020), scaled as in the paper for T = 1000."""
        return cls(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64), "linear")

    @classmethod
    def scaled_linear(cls, num_timesteps: int = 1000, beta_start: float = 0.00085,
                      beta_end: float = 0.012) -> "NoiseSchedule":
        """√β linear from √beta_start to √beta_end (diffusers' "scaled_linear", latent diffusion)."""
        sched = cls(torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float64) ** 2,
                    "scaled_linear")
        sched.beta_range = (float(beta_start), float(beta_end))  # exact ends for to_config (β_1 = √b² may round)
        return sched

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Cosine schedule (Nichol & Dhariwal 2021): ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2)."""
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = [min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta) for i in range(num_timesteps)]
        return cls(torch.tensor(betas, dtype=torch.float64), "cosine")

    @classmethod
    def from_config(cls, config: dict) -> "NoiseSchedule":
        """Build from {"kind": "linear"|"scaled_linear"|"cosine", "num_timesteps": T, ...}."""
        check(isinstance(config, dict), f"a schedule config must be a dict, got {type(config).__name__}")
        kind = config.get("kind", "linear")
        args = {k: v for k, v in config.items() if k != "kind"}
        check_schedule_args(kind, args)
        if kind == "linear":
            return cls.linear(**args)
        if kind == "scaled_linear":
            return cls.scaled_linear(**args)
        if kind == "cosine":
            return cls.cosine(**args)
        raise GuidekitError(f"unknown noise schedule {kind!r}: use 'linear', 'scaled_linear' or 'cosine'")

    def to_config(self) -> dict:
        """The JSON config that rebuilds this schedule."""
        check(self.kind in ("linear", "scaled_linear", "cosine"),
              "only linear, scaled_linear and cosine schedules can be saved to a config")
        out = {"kind": self.kind, "num_timesteps": self.num_timesteps}
        if self.kind == "linear":
            out.update(beta_start=float(self.betas[0]), beta_end=float(self.betas[-1]))
        if self.kind == "scaled_linear":
            out.update(beta_start=self.beta_range[0], beta_end=self.beta_range[1])
        return out

    def alpha_bar(self, t) -> torch.Tensor:
        """ᾱ(t) for t in [−1, T−1] (float64); fractional t interpolates log ᾱ linearly."""
        t = torch.as_tensor(t, dtype=torch.float64)
        check(bool(((t >= -1) & (t <= self.num_timesteps - 1)).all()),
              f"timestep out of range [-1, {self.num_timesteps - 1}]: got {t.min().item()}..{t.max().item()}")
        u = t + 1.0
        lo = u.floor().clamp(max=self.num_timesteps - 1).long()
        hi = (lo + 1).clamp(max=self.num_timesteps)
        frac = u - lo
        return (self._log_ab[lo] * (1 - frac) + self._log_ab[hi] * frac).exp()

    def t_from_fraction(self, t0: float) -> float:
        """Map a continuous time t0 ∈ [0, 1] (SDEdit's convention) to a timestep in [−1, T−1]."""
        check(0.0 <= t0 <= 1.0, f"t0 must lie in [0, 1], got {t0}")
        return -1.0 + t0 * self.num_timesteps

    def _t_of_lam(self, lams) -> list[float]:
        """The fractional timesteps with the given λ: log ᾱ = −log(1 + e^{−2λ}), inverted exactly on the log ᾱ
        table that alpha_bar interpolates linearly."""
        ts = np.arange(self.num_timesteps, dtype=np.float64)
        log_ab = self.alpha_bar(torch.as_tensor(ts)).log().numpy()
        target = -np.log1p(np.exp(-2 * np.asarray(lams, dtype=np.float64)))
        return [float(t) for t in np.interp(-target, -log_ab, ts)]

    def timesteps(self, steps: int, spacing: str = "trailing", start: float | None = None) -> list[float]:
        """Descending levels from `start` (default T−1) ending at −1 (clean): `steps` model evaluations."""
        check(isinstance(steps, int) and steps >= 1, f"steps must be an integer >= 1, got {steps!r}")
        check(spacing in SPACINGS, f"unknown timestep spacing {spacing!r}: use one of {', '.join(SPACINGS)}")
        T = self.num_timesteps
        check(steps <= T, f"steps ({steps}) must not exceed the training timesteps ({T})")
        if start is not None:
            check(-1 < start <= T - 1, f"start timestep must lie in (-1, {T - 1}], got {start}")
            levels = torch.linspace(start, -1, steps + 1, dtype=torch.float64)[:-1].tolist()
        elif spacing == "trailing":  # the same float arithmetic as diffusers' schedulers, so levels agree exactly
            levels = (np.round(np.arange(T, 0, -T / steps)) - 1).tolist()
        elif spacing == "leading":
            levels = [float(i * (T // steps)) for i in reversed(range(steps))]
        elif spacing == "logsnr":  # uniform in λ = log(α/σ) from t = T−1 to t = 0 (Lu et al. 2022, DPM-Solver)
            ends = [half_log_snr(float(self.alpha_bar(t))) for t in (T - 1, 0)]
            lams = np.linspace(*ends, steps)
            levels = [T - 1.0] + self._t_of_lam(lams[1:-1]) + [0.0] if steps > 1 else [T - 1.0]
        else:
            levels = np.linspace(0, T - 1, steps).round()[::-1].tolist() if steps > 1 else [T - 1.0]
        return [float(v) for v in levels] + [-1.0]
