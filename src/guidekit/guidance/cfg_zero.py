"""CFG-Zero* (Fan et al. 2025): the unconditional velocity scaled by the optimised α*, and the first steps zeroed."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.diffusion.parameterization import _bcast
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.guidance.apg import per_image


def velocity(x, eps, ab):
    """The flow-matching velocity v = ε − x̂0 of an ε-prediction at x_t (α = √ᾱ, σ = √(1−ᾱ))."""
    a, s = ab.sqrt(), (1 - ab).sqrt()
    return eps - (x - s * eps) / a


def eps_of_velocity(x, v, ab):
    """The ε whose velocity at x_t is v: x̂0 = (x − σ·v)/(α + σ), ε = x̂0 + v."""
    a, s = ab.sqrt(), (1 - ab).sqrt()
    return (x - s * v) / (a + s) + v


class CFGZeroStar:
    """A CFG rule on the velocity v = ε − x̂0 (the flow-matching quantity the paper guides):
    v̂ = (1+w)·v_c − w·α*·v_u with α* = ⟨v_c, v_u⟩/‖v_u‖² per image. α* = 1 is CFG; guidance vanishes where the two
    velocities are parallel."""

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule

    def __call__(self, eps_c, eps_u, w, x, t):
        ab = _bcast(self.schedule.alpha_bar(t.detach().cpu()), x, eps_c)
        v_c, v_u = velocity(x, eps_c, ab), velocity(x, eps_u, ab)
        alpha = per_image(v_c, v_u) / per_image(v_u, v_u).clamp(min=1e-12)
        return eps_of_velocity(x, (1 + w) * v_c - w * alpha * v_u, ab)


class ZeroInit:
    """Denoiser → denoiser: the first `steps` calls of each trajectory predict zero velocity, x̂0 = ε̂ = x/(α + σ),
    without running the network; a DDIM step then keeps x/(α + σ) fixed, as zero velocity keeps a flow's x."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, steps: int = 1):
        check(isinstance(steps, int) and steps >= 0, f"CFG-Zero*'s zeroed steps must be an integer >= 0, got {steps!r}")
        self.denoiser, self.schedule, self.steps = denoiser, schedule, steps
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.steps:
            return self.denoiser(x, t, cond)
        ab = _bcast(self.schedule.alpha_bar(t.detach().cpu()), x)
        return (x / (ab.sqrt() + (1 - ab).sqrt())).to(x.dtype)
