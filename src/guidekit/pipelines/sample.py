"""Sampling a loaded model under guidance: the one path of sample, eval, the sweeps and the UI."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.pipelines.denoiser import guided
from guidekit.pipelines.policy import network_labels
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.pipelines.text import with_prompt
from guidekit.sampling import generate
from guidekit.sampling.loop import Callback


def sample_guided(model: LoadedModel, labels: torch.Tensor, seeds: list[int] | None, guidance: Guidance,
                  settings: SamplerSettings, device: torch.device | str = "cpu", progress: bool = False,
                  cond: dict[str, torch.Tensor] | None = None, callback: Callback | None = None,
                  noise=None, stats: dict | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [−1, 1] for labels[i] (NULL = ∅) from seeds[i] (or row i of noise, as in
    sampling.generate); checked finite. cond: further per-image conditions (a ControlNet's "hint", a prompt's
    "text"), N rows each; callback(StepInfo) after every move. stats (a dict) receives "nfe" (network evaluations
    per image) and "clipped" (the share of x̂0's pixels outside [−1, 1], over the steps; pixel models)."""
    cond = {"y": network_labels(model, labels, guidance), **with_prompt(model, cond, len(labels))}
    stack = guided(model, guidance, settings, measure_clipping=stats is not None and model.latent is None)
    out = generate(stack.denoiser, model.schedule, model.sample_shape, seeds, cond,
                   sampler=stack.step, steps=settings.steps, eta=settings.eta, spacing=settings.spacing,
                   device=device, callback=callback, progress=progress, batch_size=settings.batch_size, noise=noise)
    if stats is not None:
        stats.update(nfe=stack.nfe(len(out)), clipped=stack.clipped.share if stack.clipped is not None else None)
    return check_samples(pixels(model, check_samples(out, "latents") if model.latent is not None else out))


def pixels(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] of what the loop returned: x itself, or a latent model's latents decoded by its VAE."""
    return x if model.latent is None else model.latent.decode(x).cpu()


def check_samples(images: torch.Tensor, what: str = "samples") -> torch.Tensor:
    """images, refused if any holds NaN/inf (broken weights, an fp16 overflow)."""
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    check(bad == 0, f"{bad} of {len(images)} {what} contain NaN/inf: the network's outputs are not finite (broken "
                    f"weights, or an fp16 overflow: try --precision fp32); reload the checkpoint or re-train it")
    return images
