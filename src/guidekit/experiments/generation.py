"""Sampling a loaded model with classifier-free guidance: the one path used by `sample`, `eval` and `sweep`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from guidekit.errors import check
from guidekit.guidance import ClassifierFreeGuidance, ClipX0
from guidekit.sampling import generate
from guidekit.training.checkpoint import LoadedModel


@dataclass
class SamplerSettings:
    """How to integrate: sampler, model evaluations, DDIM η, step spacing, x̂0 clipping, batch size."""

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    spacing: str = "trailing"
    clip_x0: bool = True
    batch_size: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def cfg_denoiser(model: LoadedModel, w: float, clip_x0: bool = True):
    """ModelDenoiser → CFG (if w > 0) → x̂0 clipping: ε̂ = (1+w)·ε(x, y) − w·ε(x, ∅) (Ho & Salimans 2021)."""
    check(w == 0 or model.net.config.num_classes > 0,
          f"w = {w}: classifier-free guidance needs a class-conditional model, and this one is unconditional; "
          f"use w = 0")
    den = model.denoiser()
    if w > 0:
        den = ClassifierFreeGuidance(den, w)
    return ClipX0(den, model.schedule) if clip_x0 else den


def sample_cfg(model: LoadedModel, labels: torch.Tensor, seeds: list[int], w: float, settings: SamplerSettings,
               device: torch.device | str = "cpu", progress: bool = False) -> torch.Tensor:
    """Images (N, C, H, W) in [−1, 1] for labels[i] (NULL = ∅) from seeds[i]; checked finite."""
    c = model.net.config
    images = generate(cfg_denoiser(model, w, settings.clip_x0), model.schedule,
                      (c.in_channels, c.image_size, c.image_size), seeds, {"y": labels}, sampler=settings.sampler,
                      steps=settings.steps, eta=settings.eta, spacing=settings.spacing, device=device,
                      progress=progress, batch_size=settings.batch_size)
    check(bool(torch.isfinite(images).all()), "the samples contain NaN/inf: the model weights are broken")
    return images
