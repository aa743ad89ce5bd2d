"""CADS (Sadat et al. 2023): the condition annealed with noise, ĉ = √γ(t)·c + s·√(1−γ(t))·n, then rescaled, ψ."""

from __future__ import annotations

import hashlib
import math
from typing import Callable

import torch

from guidekit.diffusion.denoiser import CLASS_EMBEDDING, NULL, TEXT, Cond, Denoiser, reset_state
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check


def gamma(t: torch.Tensor, tau1: float, tau2: float) -> torch.Tensor:
    """CADS's schedule over t ∈ [0, 1] (1 = pure noise): 1 up to τ1, linear to 0 at τ2, 0 beyond."""
    return ((tau2 - t) / (tau2 - tau1)).clamp(0.0, 1.0)


def row_noise(x: torch.Tensor, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """One N(0, I) draw of `shape` per row, seeded by that row's x_t and t: the same image gets the same noise in
    any batch, and a different one at every step."""
    out = []
    for row, level in zip(x.detach().float().cpu(), t.detach().float().cpu()):
        digest = hashlib.blake2b(row.numpy().tobytes() + level.numpy().tobytes(), digest_size=8).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2 ** 63 - 1))
        out.append(torch.randn(shape, generator=g))
    return torch.stack(out)


def anneal(c: torch.Tensor, g: torch.Tensor, n: torch.Tensor, scale: float, psi: float) -> torch.Tensor:
    """ĉ = √γ·c + s·√(1−γ)·n, rescaled per row to c's mean and std and mixed with ĉ by ψ (Sadat et al. eq. 4–5)."""
    dims = tuple(range(1, c.dim()))
    g = g.view(-1, *[1] * (c.dim() - 1)).to(c)
    noisy = g.sqrt() * c + scale * (1 - g).sqrt() * n.to(c)
    mean, std = c.mean(dims, keepdim=True), c.std(dims, keepdim=True)
    rescaled = (noisy - noisy.mean(dims, keepdim=True)) / noisy.std(dims, keepdim=True).clamp(min=1e-12) * std + mean
    return psi * rescaled + (1 - psi) * noisy


class CADS:
    """Denoiser → denoiser placed above CFG: the prompt embedding (cond["text"]) or, through `embed` (labels →
    the network's class embedding), the class condition is annealed; ∅ rows and CFG's null half stay clean."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, tau1: float = 0.6, tau2: float = 0.9,
                 noise_scale: float = 0.25, psi: float = 1.0, embed: Callable[[torch.Tensor], torch.Tensor] | None = None):
        check(all(math.isfinite(v) for v in (tau1, tau2)) and 0 <= tau1 < tau2 <= 1,
              f"CADS needs 0 <= τ1 < τ2 <= 1 (t = 1 is pure noise; the paper's 0.6, 0.9), got τ1 = {tau1}, τ2 = {tau2}")
        check(math.isfinite(noise_scale) and noise_scale >= 0, f"CADS's noise scale s must be >= 0, got {noise_scale}")
        check(math.isfinite(psi) and 0 <= psi <= 1, f"CADS's mixing factor ψ must lie in [0, 1], got {psi}")
        self.denoiser, self.schedule, self.embed = denoiser, schedule, embed
        self.tau1, self.tau2, self.noise_scale, self.psi = float(tau1), float(tau2), float(noise_scale), float(psi)

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        g = gamma(t.detach().double().cpu() / self.schedule.num_timesteps, self.tau1, self.tau2)
        if bool((g >= 1).all()):
            return self.denoiser(x, t, cond)
        cond = dict(cond)
        if TEXT in cond:
            c = cond[TEXT]
            cond[TEXT] = anneal(c, g, row_noise(x, t, tuple(c.shape[1:])), self.noise_scale, self.psi).to(c.dtype)
        else:
            check("y" in cond and self.embed is not None,
                  "CADS anneals a condition: this model takes neither a prompt nor class labels through an embedding "
                  "guidekit can reach (a guidekit UNet's class embedding, or a text model's prompt)")
            y = cond["y"]
            c = self.embed(y)
            annealed = anneal(c, g, row_noise(x, t, tuple(c.shape[1:])), self.noise_scale, self.psi)
            keep = (y == NULL).view(-1, *[1] * (c.dim() - 1)).to(c.device)
            cond[CLASS_EMBEDDING] = torch.where(keep, c, annealed.to(c.dtype))
        return self.denoiser(x, t, cond)
