"""SDEdit (Meng et al. 2022) of a loaded model under guidance, and its faithfulness to the guide."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.pipelines.denoiser import guided
from guidekit.pipelines.policy import network_labels
from guidekit.latent.edges import latent_mask, restore_known
from guidekit.pipelines.sample import check_samples, pixels
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.pipelines.text import with_prompt
from guidekit.sampling.loop import Callback
from guidekit.sampling.sdedit import sdedit


def edit_guided(model: LoadedModel, guide: torch.Tensor, labels: torch.Tensor, seeds: list[int] | None, t0: float,
                guidance: Guidance, settings: SamplerSettings, repeats: int = 1, mask: torch.Tensor | None = None,
                device: torch.device | str = "cpu", progress: bool = False,
                cond: dict[str, torch.Tensor] | None = None, callback: Callback | None = None,
                noise=None, guide_generator: torch.Generator | None = None) -> torch.Tensor:
    """SDEdit of guide (B or 1, C, H, W) in pixels for labels[i] (NULL = ∅) from seeds[i] (or row i of noise), under
    `guidance`; checked finite. cond: further conditions, one row per seed (a text model's prompt_cond). On a latent
    model the guide is encoded first (the VAE posterior's mean, or a draw with guide_generator, as diffusers'
    img2img), the edit runs on latents and is decoded; a mask's known pixels come back exactly (restore_known)."""
    stack = guided(model, guidance, settings)
    start, known = guide, mask
    if model.latent is not None:
        start = model.latent.encode(guide.to(device), guide_generator).cpu()
        known = None if mask is None else latent_mask(mask, model.latent.factor)
    out = sdedit(stack.denoiser, model.schedule, start, t0,
                 {"y": network_labels(model, labels, guidance), **with_prompt(model, cond, len(labels))}, stack.step,
                 seeds, settings.steps,
                 repeats, known, settings.spacing, device=device, callback=callback, progress=progress,
                 batch_size=settings.batch_size, noise=noise, bounded=model.latent is None)
    images = check_samples(pixels(model, check_samples(out, "edits")), "edits")
    if model.latent is not None and mask is not None:
        images = restore_known(images, guide.expand_as(images), mask, model.latent.factor / 2)
    return images


def faithfulness(images: torch.Tensor, guides: torch.Tensor) -> dict:
    """SDEdit's faithfulness (Meng et al. 2022, Sec. 5): mean per-pixel RMSE and mean L2 to the guide, [0, 1] units."""
    diff = (images.double() - guides.double()).flatten(1) / 2
    return {"rmse": diff.square().mean(1).sqrt().mean().item(), "l2": diff.norm(dim=1).mean().item()}
