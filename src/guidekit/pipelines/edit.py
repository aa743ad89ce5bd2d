"""SDEdit (Meng et al. 2022) of a loaded model under guidance, and its faithfulness to the guide."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.pipelines.denoiser import guided_denoiser
from guidekit.pipelines.policy import network_labels
from guidekit.pipelines.sample import check_samples
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.sampling.loop import Callback
from guidekit.sampling.sdedit import sdedit
from guidekit.sampling.steps import make_step


def edit_guided(model: LoadedModel, guide: torch.Tensor, labels: torch.Tensor, seeds: list[int] | None, t0: float,
                guidance: Guidance, settings: SamplerSettings, repeats: int = 1, mask: torch.Tensor | None = None,
                device: torch.device | str = "cpu", progress: bool = False,
                cond: dict[str, torch.Tensor] | None = None, callback: Callback | None = None,
                noise=None) -> torch.Tensor:
    """SDEdit of guide (B or 1, C, H, W) for labels[i] (NULL = ∅) from seeds[i] (or row i of noise), under
    `guidance`; checked finite. cond: further conditions, one row per seed (a text model's prompt_cond)."""
    step = make_step(settings.sampler, model.schedule, settings.eta)
    out = sdedit(guided_denoiser(model, guidance, settings.clip_x0), model.schedule, guide, t0,
                 {"y": network_labels(model, labels, guidance), **(cond or {})}, step, seeds, settings.steps,
                 repeats, mask, settings.spacing, device=device, callback=callback, progress=progress,
                 batch_size=settings.batch_size, noise=noise)
    return check_samples(out, "edits")


def faithfulness(images: torch.Tensor, guides: torch.Tensor) -> dict:
    """SDEdit's faithfulness (Meng et al. 2022, Sec. 5): mean per-pixel RMSE and mean L2 to the guide, [0, 1] units."""
    diff = (images.double() - guides.double()).flatten(1) / 2
    return {"rmse": diff.square().mean(1).sqrt().mean().item(), "l2": diff.norm(dim=1).mean().item()}
