"""Classifier-free guidance (Ho & Salimans 2021): ε̂ = (1+w)·ε(x, y) − w·ε(x, ∅), both halves in one forward."""

from __future__ import annotations

import torch

from guidekit.diffusion.denoiser import NULL, Cond, Denoiser
from guidekit.errors import check


def null_cond(cond: Cond) -> dict:
    """The same condition with every label replaced by the null label ∅."""
    out = dict(cond)
    if "y" in out:
        out["y"] = torch.full_like(out["y"], NULL)
    return out


def _cat(a: Cond, b: Cond) -> dict:
    """Concatenate two cond dicts along the batch."""
    return {k: torch.cat([a[k], b[k]]) for k in a}


class ClassifierFreeGuidance:
    """Denoiser → denoiser: ε̂ = (1+w)·ε(x, y) − w·ε(x, ∅); w = 0 is the plain conditional model."""

    def __init__(self, denoiser: Denoiser, w: float):
        check(w >= 0, f"guidance weight w must be >= 0 (w = 0 is the plain conditional model), got {w}; "
                      f"with --guidance-scale s, w = s - 1")
        self.denoiser, self.w = denoiser, float(w)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        if self.w == 0:
            return self.denoiser(x, t, cond)
        n = x.shape[0]
        eps = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), _cat(cond, null_cond(cond)))
        eps_cond, eps_null = eps[:n], eps[n:]
        return eps_cond + self.w * (eps_cond - eps_null)


def guidance_scale_to_w(s: float) -> float:
    """Convert the diffusers/Imagen guidance scale s to the paper's w = s − 1."""
    check(s >= 1, f"--guidance-scale must be >= 1 (it is 1 + w), got {s}")
    return s - 1.0
