"""RePaint (Lugmayr et al. 2022): inpainting on the one loop — a jump schedule of levels + a known-region constraint.

NFE: with T' sampler steps, jump length j and r = jump_n_sample, the jump points are the level indices
k = 0, j, 2j, … < T' − j (index T'−1 is the top level, −1 the clean image), J = max(0, ⌈T'/j⌉ − 1) of them; at each
the trajectory goes back up j levels r − 1 times and descends again, so

    NFE = T' + (r − 1)·j·J,    len(levels) = T' + 1 + 2·(r − 1)·j·J.

(The paper's T' = 250, j = 10, r = 10 gives 2410 model evaluations and 4570 moves.)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from tqdm.auto import tqdm

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.parameterization import q_sample
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.masks import check_mask
from guidekit.sampling.loop import Callback, Constraint, batches, sample
from guidekit.sampling.noise import Noise, noise_for
from guidekit.sampling.steps import Step, make_step


def _positive_int(value, name: str) -> int:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          f"{name} must be an integer >= 1, got {value!r}")
    return value


def jump_count(steps: int, jump_length: int) -> int:
    """J, the number of jump points k = 0, j, 2j, … < T' − j of RePaint's resampling (Lugmayr et al. 2022)."""
    return max(0, math.ceil(steps / jump_length) - 1)


def jump_length_for(jump_timesteps: int, steps: int, num_timesteps: int) -> int:
    """Sampler steps j that span jump_timesteps training timesteps when T' = steps cover num_timesteps (≥ 1)."""
    _positive_int(jump_timesteps, "jump_timesteps")
    check(jump_timesteps < num_timesteps, f"jump_timesteps {jump_timesteps} must be below the model's "
                                          f"{num_timesteps} training timesteps")
    return max(1, round(jump_timesteps * steps / num_timesteps))


def repaint_levels(timesteps: Sequence[float], jump_length: int = 10, jump_n_sample: int = 10) -> list[float]:
    """RePaint's resampling schedule (Lugmayr et al. 2022, "Resampling") over descending timesteps ending at −1."""
    _positive_int(jump_length, "jump_length")
    _positive_int(jump_n_sample, "jump_n_sample")
    ts = [float(t) for t in timesteps]
    check(len(ts) >= 2 and ts[-1] == -1.0, f"timesteps must descend to -1 (clean), got {ts[:3]}…{ts[-2:]}; "
                                           f"use schedule.timesteps(steps)")
    check(all(a > b for a, b in zip(ts, ts[1:])), f"timesteps must strictly descend, got {ts}")
    steps = len(ts) - 1  # T'
    check(jump_n_sample == 1 or jump_length < steps,
          f"jump_length {jump_length} leaves no room to jump back within {steps} steps; use a jump_length below "
          f"{steps}, more steps, or jump_n_sample 1 (no resampling)")
    level = lambda k: ts[steps - 1 - k]  # noqa: E731  index k = T'−1 (top) … 0, −1 (clean)
    left = {k: jump_n_sample - 1 for k in range(0, steps - jump_length, jump_length)}
    k, out = steps - 1, [level(steps - 1)]
    while k > -1:
        k -= 1
        out.append(level(k))
        if left.get(k, 0) > 0:  # jump back up j levels, then descend again
            left[k] -= 1
            for _ in range(jump_length):
                k += 1
                out.append(level(k))
    return out


def count_nfe(levels: Sequence[float]) -> int:
    """Model evaluations per image of a trajectory: its downward moves (upward re-noising is free)."""
    return sum(1 for t, s in zip(levels[:-1], levels[1:]) if s < t)


def expected_nfe(steps: int, jump_length: int, jump_n_sample: int) -> int:
    """NFE = T' + (r − 1)·j·J in closed form (see the module docstring)."""
    return steps + (jump_n_sample - 1) * jump_length * jump_count(steps, jump_length)


class RePaintConstraint:
    """After a move to level s: x = m ⊙ q_sample(x0, ᾱ_s, n) + (1 − m) ⊙ x (Lugmayr et al. 2022, Alg. 1); s = −1: x0."""

    def __init__(self, x0_known: torch.Tensor, mask: torch.Tensor, schedule: NoiseSchedule):
        check(isinstance(x0_known, torch.Tensor) and x0_known.ndim == 4,
              f"x0_known must be a (B, C, H, W) image tensor, got {getattr(x0_known, 'shape', type(x0_known))}")
        ref = x0_known
        if isinstance(mask, torch.Tensor) and mask.ndim == 4 and x0_known.shape[0] == 1 < mask.shape[0]:
            ref = x0_known.expand(mask.shape[0], *x0_known.shape[1:])
        self.x0, self.schedule = x0_known, schedule
        self.known = check_mask(mask, ref).bool()

    def __call__(self, x: torch.Tensor, level: float, noise: Noise) -> torch.Tensor:
        x0 = self.x0.to(device=x.device, dtype=x.dtype)
        ab = float(self.schedule.alpha_bar(level))
        known = x0 if ab >= 1.0 else q_sample(x0, ab, noise.randn_like(x))
        return torch.where(self.known.to(x.device), known, x)


@torch.no_grad()
def inpaint(denoiser: Denoiser, schedule: NoiseSchedule, x0_known: torch.Tensor, mask: torch.Tensor, cond: Cond,
            step: Step | str, seeds: Sequence[int] | None, steps: int, jump_length: int = 10,
            jump_n_sample: int = 10, spacing: str = "trailing", eta: float = 0.0,
            constraints: Sequence[Constraint] = (), device: torch.device | str = "cpu", batch_size: int | None = None,
            callback: Callback | None = None, progress: bool = False, noise=None) -> tuple[torch.Tensor, int]:
    """RePaint (Lugmayr et al. 2022, Alg. 1): image i from seeds[i], x0_known[i or 0], mask[i or 0] → (images, NFE).

    `step` is a Step or a sampler name (ddpm | ddim | dpmpp-2m); guidance and ControlNet enter as the denoiser and
    cond (e.g. cond["hint"]). Extra constraints run before the RePaint one, so x0's pixels stay exact. `noise`
    replaces seeds as in generate.
    """
    noise = noise_for(seeds, noise, device)
    n = len(noise)
    check(isinstance(x0_known, torch.Tensor) and x0_known.ndim == 4 and x0_known.shape[0] in (1, n),
          f"x0_known must be (1 or {n}, C, H, W), got {tuple(getattr(x0_known, 'shape', ()))}")
    mask = check_mask(mask, x0_known.expand(n, *x0_known.shape[1:]))
    if isinstance(step, str):
        step = make_step(step, schedule, eta)
    levels = repaint_levels(schedule.timesteps(steps, spacing), jump_length, jump_n_sample)
    of = lambda t, rows: t if t.shape[0] == 1 else t[rows]  # noqa: E731
    parts = list(batches(n, batch_size, noise, cond, device))
    out = []
    for rows, part_noise, part in tqdm(parts, desc=f"repaint-{steps}", disable=not progress or len(parts) == 1,
                                       leave=False):
        repaint = RePaintConstraint(of(x0_known, rows).to(device), of(mask, rows), schedule)
        x = sample(denoiser, part_noise.randn(x0_known.shape[1:]), levels, part, step, part_noise,
                   [*constraints, repaint], callback, progress and len(parts) == 1, rows)
        out.append(x.cpu())
    return torch.cat(out), count_nfe(levels)
