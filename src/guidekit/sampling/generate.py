"""Plain generation: pure noise at the top level, integrated to x0 by the one loop."""

from __future__ import annotations

from typing import Sequence

import torch

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.sampling.loop import Callback, Constraint, sample
from guidekit.sampling.noise import Noise
from guidekit.sampling.steps import make_step


@torch.no_grad()
def generate(denoiser: Denoiser, schedule: NoiseSchedule, shape: Sequence[int], seeds: Sequence[int], cond: Cond,
             sampler: str = "ddim", steps: int = 50, eta: float = 0.0, spacing: str = "trailing",
             constraints: Sequence[Constraint] = (), device: torch.device | str = "cpu",
             callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """Sample len(seeds) images of `shape` (C, H, W); image i depends only on seeds[i] and cond[i]."""
    step = make_step(sampler, schedule, eta)
    levels = schedule.timesteps(steps, spacing)
    noise = Noise(seeds, device)
    x = noise.randn(shape)
    return sample(denoiser, x, levels, cond, step, noise, constraints, callback, progress)
