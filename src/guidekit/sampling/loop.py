"""The one sampling loop: integrate a denoiser over a trajectory of levels, applying constraints after each step."""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from tqdm.auto import tqdm

from guidekit.diffusion.denoiser import Cond, Denoiser, reset_state
from guidekit.diffusion.parameterization import q_sample
from guidekit.errors import check
from guidekit.sampling.noise import Noise
from guidekit.sampling.steps import Step

Constraint = Callable[[torch.Tensor, float, Noise], torch.Tensor]


class StepInfo(NamedTuple):
    """What a callback sees after each move of the trajectory (k-diffusion's callback dict, with the papers' names)."""

    i: int  # the move's index, 0 .. total − 1
    total: int  # moves in the trajectory
    t: float  # the level x came from (training timesteps; −1 = clean)
    level: float  # the level x is at now
    x: torch.Tensor  # the batch after the move and the constraints
    x0: torch.Tensor | None  # the sampler's x̂0 of the move (None after a re-noise)
    rows: slice  # which images of the call this batch holds


Callback = Callable[[StepInfo], None]


def renoise(x: torch.Tensor, ab_from: float, ab_to: float, noise: Noise) -> torch.Tensor:
    """Move x from level ᾱ_from up to the noisier ᾱ_to: Π√(1−β)·x + √(1−Π(1−β))·n (RePaint's jump)."""
    return q_sample(x, ab_to / ab_from, noise.randn_like(x))


def sample(denoiser: Denoiser, x: torch.Tensor, levels: Sequence[float], cond: Cond, step: Step, noise: Noise,
           constraints: Sequence[Constraint] = (), callback: Callback | None = None,
           progress: bool = False, rows: slice | None = None) -> torch.Tensor:
    """Run x from levels[0] to levels[-1]: a reverse step where the next level is cleaner, a re-noise where noisier;
    callback(StepInfo) after every move."""
    check(len(levels) >= 2, f"a trajectory needs at least two levels, got {list(levels)}")
    check(x.shape[0] == len(noise), f"batch of {x.shape[0]} images but {len(noise)} seeds")
    schedule, dtype = step.schedule, x.dtype
    step.reset()
    reset_state(denoiser)

    def eps_fn(x_t: torch.Tensor, t: float) -> torch.Tensor:
        return denoiser(x_t, torch.full((x_t.shape[0],), t, device=x_t.device), cond)

    pairs = list(zip(levels[:-1], levels[1:]))
    for i, (t, s) in enumerate(tqdm(pairs, desc="sampling", disable=not progress, leave=False)):
        if s > t:
            x = renoise(x, float(schedule.alpha_bar(t)), float(schedule.alpha_bar(s)), noise)
            step.reset()
            x0 = None
        else:  # an x0/v network's ε is float64 (x̂0 precision); x stays in its own dtype
            x, x0 = step(eps_fn, x, t, s, noise)
            x, x0 = x.to(dtype), x0.to(dtype)
        for constrain in constraints:
            x = constrain(x, s, noise)
        if callback is not None:
            callback(StepInfo(i, len(pairs), t, s, x, x0, rows or slice(0, x.shape[0])))
    return x


def batches(n: int, batch_size: int | None, noise, cond: Cond, device) -> Iterator[tuple[slice, object, dict]]:
    """(rows, their noise, their cond on device) per batch of a sampling call: images never depend on the batch."""
    for k, v in cond.items():
        check(isinstance(v, torch.Tensor), f"cond[{k!r}] must be a tensor with one row per image, got "
                                           f"{type(v).__name__}")
        check(v.shape[0] == n, f"cond[{k!r}] has {v.shape[0]} rows but there are {n} seeds")
    batch_size = batch_size or n
    check(isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, n, batch_size):
        rows = slice(i, min(i + batch_size, n))
        yield rows, noise.rows(rows.start, rows.stop), {k: v[rows].to(device) for k, v in cond.items()}
