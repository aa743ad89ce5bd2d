"""Plain generation: pure noise at the top level, integrated to x0 by the one loop, in batches."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.sampling.loop import Callback, Constraint, sample
from guidekit.sampling.noise import Noise
from guidekit.sampling.steps import make_step


@torch.no_grad()
def generate(denoiser: Denoiser, schedule: NoiseSchedule, shape: Sequence[int], seeds: Sequence[int], cond: Cond,
             sampler: str = "ddim", steps: int = 50, eta: float = 0.0, spacing: str = "trailing",
             constraints: Sequence[Constraint] = (), device: torch.device | str = "cpu",
             callback: Callback | None = None, progress: bool = False, batch_size: int | None = None) -> torch.Tensor:
    """Sample len(seeds) images of `shape` (C, H, W); image i depends only on seeds[i] and cond[i], not the batch."""
    n = len(seeds)
    check(n >= 1, "at least one seed is needed: pass seeds=[0] or more")
    for k, v in cond.items():
        check(isinstance(v, torch.Tensor), f"cond[{k!r}] must be a tensor with one row per seed, got "
                                           f"{type(v).__name__}")
        check(v.shape[0] == n, f"cond[{k!r}] has {v.shape[0]} rows but there are {n} seeds")
    batch_size = batch_size or n
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    step = make_step(sampler, schedule, eta)
    levels = schedule.timesteps(steps, spacing)
    out = []
    starts = range(0, n, batch_size)
    for i in tqdm(starts, desc=f"{sampler}-{steps}", disable=not progress or len(starts) == 1, leave=False):
        noise = Noise(seeds[i:i + batch_size], device)
        part = {k: v[i:i + batch_size].to(device) for k, v in cond.items()}
        x = sample(denoiser, noise.randn(shape), levels, part, step, noise, constraints, callback,
                   progress and len(starts) == 1)
        out.append(x.cpu())
    return torch.cat(out)
