"""Zero-shot restoration on the one loop: each method is a denoiser transform (DDNM, ΠGDM), a step (DPS, DDNM+), a
constraint (RePaint) or a step plus a constraint (MCG) around the same sampler, guidance and jump schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from guidekit.diffusion.denoiser import Cond, Denoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.restoration.ddnm import DDNM, DDNMPlus
from guidekit.restoration.dps import DPS
from guidekit.restoration.operators import Operator
from guidekit.restoration.pigdm import PiGDM
from guidekit.restoration.projection import MeasurementConstraint
from guidekit.sampling.loop import Callback, batches, sample
from guidekit.sampling.noise import noise_for
from guidekit.sampling.repaint import count_nfe, repaint_levels
from guidekit.sampling.steps import DDIM, DDPM, Step

METHODS = ("repaint", "dps", "mcg", "ddnm", "pigdm")
GRADIENT_METHODS = ("dps", "mcg", "pigdm")  # a backward pass through the network at every step
NOISE_AWARE = ("dps", "ddnm", "pigdm")  # built for σ_y > 0 (ddnm as DDNM+)


@dataclass
class Method:
    """Which restoration method, with its own settings: DPS/MCG's step size ζ, ΠGDM's weight w."""

    name: str = "ddnm"
    zeta: float = 1.0
    pigdm_w: float = 1.0

    def __post_init__(self):
        check(self.name in METHODS, f"unknown restoration method {self.name!r}: use one of {', '.join(METHODS)}")

    def describe(self) -> dict:
        out = {"method": self.name}
        if self.name in ("dps", "mcg"):
            out["zeta"] = self.zeta
        if self.name == "pigdm":
            out["pigdm_w"] = self.pigdm_w
        return out


def ddnm_plus_eta(step: Step) -> float:
    """The η of the stochastic step DDNM+ rebuilds (DDPM = 1), refused for any other sampler with the reason."""
    check(type(step) in (DDPM, DDIM),
          f"DDNM+ (ddnm with --sigma-y > 0) replaces the step by its own DDPM/DDIM form, which spends the step's "
          f"noise on y's; use --sampler ddpm or ddim (with --eta > 0), not {type(step).__name__}")
    return 1.0 if type(step) is DDPM else step.eta


def check_method(method: Method, step: Step, sigma_y: float) -> None:
    """Refuse what a method cannot do before any work."""
    if method.name == "ddnm" and sigma_y > 0:
        DDNMPlus(step.schedule, None, None, sigma_y, ddnm_plus_eta(step))


def stack_for(method: Method, denoiser: Denoiser, step: Step, schedule: NoiseSchedule, op: Operator, y: torch.Tensor,
              sigma_y: float, clip=None):
    """(denoiser, step, constraints) of one batch: the method put around the guidance stack and the sampler. `clip`
    (x̂0 clipping) wraps the stack below DDNM (its paper clips, then projects, so A x̂0 = y holds) and above ΠGDM
    (whose score should see the network's own x̂0)."""
    clip = clip or (lambda den: den)
    if method.name == "ddnm" and sigma_y > 0:
        return clip(denoiser), DDNMPlus(schedule, op, y, sigma_y, ddnm_plus_eta(step)), []
    if method.name == "ddnm":
        return DDNM(clip(denoiser), schedule, op, y), step, []
    if method.name == "pigdm":
        return clip(PiGDM(denoiser, schedule, op, y, sigma_y, method.pigdm_w)), step, []
    if method.name == "dps":
        return clip(denoiser), DPS(step, op, y, method.zeta), []
    constraint = [MeasurementConstraint(op, y, schedule)]
    return clip(denoiser), (DPS(step, op, y, method.zeta) if method.name == "mcg" else step), constraint


@torch.no_grad()
def restore(denoiser: Denoiser, schedule: NoiseSchedule, op: Operator, y: torch.Tensor, shape: Sequence[int],
            method: Method, cond: Cond, step: Step, seeds: Sequence[int] | None, steps: int, sigma_y: float = 0.0,
            jump_length: int = 1, jump_n_sample: int = 1, spacing: str = "trailing", clip=None,
            device: torch.device | str = "cpu", batch_size: int | None = None, callback: Callback | None = None,
            progress: bool = False, noise=None) -> tuple[torch.Tensor, int]:
    """Restore x from y = A(x) + σ_y·n (one row of y per seed) → (images, NFE per image). `clip` is x̂0 clipping, put
    where each method needs it (stack_for); jumps are RePaint's (DDNM's time travel)."""
    noise = noise_for(seeds, noise, device)
    n = len(noise)
    check(isinstance(y, torch.Tensor) and y.shape[0] == n, f"y must have one row per image ({n}), got "
                                                           f"{tuple(getattr(y, 'shape', ()))}")
    check(bool(torch.isfinite(y).all()), "the measurement y holds NaN or infinite values; fix the input image")
    check_method(method, step, sigma_y)
    levels = repaint_levels(schedule.timesteps(steps, spacing), jump_length, jump_n_sample)
    parts = list(batches(n, batch_size, noise, cond, device))
    out = []
    for rows, part_noise, part in tqdm(parts, desc=f"{method.name}-{steps}", disable=not progress or len(parts) == 1,
                                       leave=False):
        den, stp, constraints = stack_for(method, denoiser, step, schedule, op.rows(rows), y[rows].to(device),
                                          sigma_y, clip)
        x = sample(den, part_noise.randn(tuple(shape)), levels, part, stp, part_noise, constraints, callback,
                   progress and len(parts) == 1, rows)
        out.append(x.detach().cpu())
    return torch.cat(out), count_nfe(levels)
