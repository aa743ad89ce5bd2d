"""Plain generation: pure noise at the top level, integrated to x0 by the one loop, in batches."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.sampling.loop import Callback, Constraint, batches, sample
from guidekit.sampling.noise import noise_for
from guidekit.sampling.steps import Step, make_step


@torch.no_grad()
def generate(denoiser: Denoiser, schedule: NoiseSchedule, shape: Sequence[int], seeds: Sequence[int] | None,
             cond: Cond, sampler: str | Step = "ddim", steps: int = 50, eta: float = 0.0, spacing: str = "trailing",
             constraints: Sequence[Constraint] = (), device: torch.device | str = "cpu",
             callback: Callback | None = None, progress: bool = False, batch_size: int | None = None,
             noise=None) -> torch.Tensor:
    """Sample images of `shape` (C, H, W), image i from seeds[i] (or row i of `noise`: a GivenNoise, a Noise or a
    list of CPU generators) and cond[i], never from its batch; callback(StepInfo) after every move."""
    noise = noise_for(seeds, noise, device)
    n = len(noise)
    check(n >= 1, "at least one seed is needed: pass seeds=[0] or more")
    step = sampler if isinstance(sampler, Step) else make_step(sampler, schedule, eta)
    name = type(step).__name__ if isinstance(sampler, Step) else sampler
    levels = schedule.timesteps(steps, spacing)
    parts = list(batches(n, batch_size, noise, cond, device))
    out = []
    for rows, part_noise, part in tqdm(parts, desc=f"{name}-{steps}", disable=not progress or len(parts) == 1,
                                       leave=False):
        x = sample(denoiser, part_noise.randn(shape), levels, part, step, part_noise, constraints, callback,
                   progress and len(parts) == 1, rows)
        out.append(x.cpu())
    return torch.cat(out)
