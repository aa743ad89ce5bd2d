"""The one sampling loop: integrate a denoiser over a trajectory of levels, applying constraints after each step."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.parameterization import q_sample
from guidekit.errors import check
from guidekit.sampling.noise import Noise
from guidekit.sampling.steps import Step

Constraint = Callable[[torch.Tensor, float, Noise], torch.Tensor]
Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def renoise(x: torch.Tensor, ab_from: float, ab_to: float, noise: Noise) -> torch.Tensor:
    """Move x from level ᾱ_from up to the noisier ᾱ_to: Π√(1−β)·x + √(1−Π(1−β))·n (RePaint's jump)."""
    return q_sample(x, ab_to / ab_from, noise.randn_like(x))


def sample(denoiser: Denoiser, x: torch.Tensor, levels: Sequence[float], cond: Cond, step: Step, noise: Noise,
           constraints: Sequence[Constraint] = (), callback: Callback | None = None,
           progress: bool = False) -> torch.Tensor:
    """Run x from levels[0] to levels[-1]: a reverse step where the next level is cleaner, a re-noise where noisier."""
    check(len(levels) >= 2, f"a trajectory needs at least two levels, got {list(levels)}")
    check(x.shape[0] == len(noise), f"batch of {x.shape[0]} images but {len(noise)} seeds")
    schedule = step.schedule
    step.reset()

    def eps_fn(x_t: torch.Tensor, t: float) -> torch.Tensor:
        return denoiser(x_t, torch.full((x_t.shape[0],), t, device=x_t.device), cond)

    pairs = list(zip(levels[:-1], levels[1:]))
    for i, (t, s) in enumerate(tqdm(pairs, desc="sampling", disable=not progress, leave=False)):
        if s > t:
            x = renoise(x, float(schedule.alpha_bar(t)), float(schedule.alpha_bar(s)), noise)
            step.reset()
            x0 = None
        else:
            x, x0 = step(eps_fn, x, t, s, noise)
        for constrain in constraints:
            x = constrain(x, s, noise)
        if callback is not None:
            callback(i, s, x, x0)
    return x
