"""SDEdit (Meng et al. 2022): noise a guide up to level t0, then denoise it with any sampler on the one loop."""

from __future__ import annotations

from typing import Sequence

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.masks import check_mask
from guidekit.sampling.loop import Callback, Constraint, batches, sample
from guidekit.sampling.noise import noise_for
from guidekit.sampling.repaint import RePaintConstraint
from guidekit.sampling.steps import Step, make_step

RANGE_SLACK = 0.1  # a guide may overshoot [-1, 1] by this much (e.g. a model output); beyond that it is a mistake


def check_t0(t0: float) -> float:
    """SDEdit's t0 must lie in (0, 1]: 0 would return the guide untouched, 1 starts from (almost) pure noise."""
    check(isinstance(t0, (int, float)) and not isinstance(t0, bool) and 0.0 < t0 <= 1.0,
          f"t0 = {t0!r} is not a noise level in (0, 1]: use e.g. 0.5 (small t0 = faithful to the guide, "
          f"1 = start from pure noise)")
    return float(t0)


def sdedit_levels(schedule: NoiseSchedule, t0: float, steps: int, spacing: str = "trailing") -> list[float]:
    """SDEdit's trajectory (Meng et al. 2022, Alg. 1): `steps` reverse steps from the level of t0 down to −1 (clean).

    The start is t_from_fraction(t0) = t0·T − 1 (t0 = 1 → T − 1, pure noise; t0 → 0 → −1, the clean guide), so
    ᾱ(start) follows the schedule's continuous lookup. The levels are the `spacing` grid of plain sampling, rescaled
    in t + 1 so that its top lands on the start: for trailing and linspace spacing (top T − 1) and t0 = 1 they are
    exactly the levels of plain sampling.
    """
    t0 = check_t0(t0)
    grid = schedule.timesteps(steps, spacing)
    start = schedule.t_from_fraction(t0)
    scale = (start + 1.0) / (grid[0] + 1.0)
    return [start] + [-1.0 + (t + 1.0) * scale for t in grid[1:-1]] + [-1.0]


def check_guide(guide: torch.Tensor, n: int, bounded: bool = True) -> torch.Tensor:
    """A guide (B or 1, C, H, W) in [−1, 1] (any finite range with bounded=False: latents) for n images, expanded
    to n rows."""
    check(isinstance(guide, torch.Tensor) and guide.dim() == 4 and guide.is_floating_point(),
          f"the guide must be a float tensor (B or 1, C, H, W) in [-1, 1], got "
          f"{type(guide).__name__ if not isinstance(guide, torch.Tensor) else f'{guide.dtype} {tuple(guide.shape)}'}")
    check(guide.shape[0] in (1, n), f"the guide has {guide.shape[0]} rows but there are {n} seeds: pass one guide "
                                    f"per seed, or a single guide (batch 1) for all of them")
    check(bool(torch.isfinite(guide).all()), "the guide contains NaN or infinite values: check how it was made")
    lo, hi = float(guide.min()), float(guide.max())
    check(not bounded or (lo >= -1 - RANGE_SLACK and hi <= 1 + RANGE_SLACK),
          f"the guide spans {lo:.3g}..{hi:.3g} but must lie in "
          f"[-1, 1]: map [0, 1] images with 2 * x - 1 and uint8 pixels with x / 127.5 - 1")
    return guide.expand(n, -1, -1, -1)


@torch.no_grad()
def sdedit(denoiser: Denoiser, schedule: NoiseSchedule, guide: torch.Tensor, t0: float, cond: Cond,
           step: Step | str, seeds: Sequence[int] | None, steps: int = 50, repeats: int = 1,
           mask: torch.Tensor | None = None, spacing: str = "trailing", constraints: Sequence[Constraint] = (),
           device: torch.device | str = "cpu", callback: Callback | None = None, progress: bool = False,
           batch_size: int | None = None, noise=None, bounded: bool = True) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): x_t0 = √ᾱ·guide + √(1−ᾱ)·n, denoised to x0; `repeats` times, each from the last x0.

    One trajectory on the one loop: [−1] + sdedit_levels × repeats, starting at x = guide, so every noising
    (the first and each repeat's) is the loop's re-noise from the clean level. `mask` (B or 1, 1, H, W), 1 = known:
    masked SDEdit (Meng et al. 2022, Alg. 3) with RePaint's constraint, run after the others — those pixels follow the
    guide's forward process q(x_t | guide) and equal the guide bit-exactly at the end. Image i depends only on
    seeds[i] (or row i of `noise`, as in generate), guide[i] and cond[i]. bounded=False takes a guide in any range
    (a latent model's encoded guide).
    """
    noise = noise_for(seeds, noise, device)
    n = len(noise)
    check(isinstance(repeats, int) and not isinstance(repeats, bool) and repeats >= 1,
          f"repeats = {repeats!r}: SDEdit repeats the noise-then-denoise K >= 1 times; use an integer like 1 or 3")
    guide = check_guide(guide, n, bounded)
    if mask is not None:
        mask = check_mask(mask, guide).expand(n, -1, -1, -1)
    step = make_step(step, schedule) if isinstance(step, str) else step
    levels = [-1.0] + sdedit_levels(schedule, t0, steps, spacing) * repeats
    out = []
    for rows, part_noise, c in batches(n, batch_size, noise, cond, device):
        x = guide[rows].to(device)
        known = [RePaintConstraint(x, mask[rows].to(device), schedule)] if mask is not None else []
        out.append(sample(denoiser, x, levels, c, step, part_noise, [*constraints, *known], callback, progress,
                          rows).cpu())
    return torch.cat(out)
