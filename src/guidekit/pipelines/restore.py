"""Zero-shot restoration of a loaded model under guidance (guidekit.restoration), and its errors against the truth."""

from __future__ import annotations

from dataclasses import replace

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.guidance import ClipX0
from guidekit.pipelines.denoiser import guided
from guidekit.pipelines.policy import network_labels
from guidekit.pipelines.sample import check_samples
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.restoration import Method, Operator, restore
from guidekit.sampling.loop import Callback


def check_restorable(model: LoadedModel) -> None:
    """Restoration measures pixels, y = A(x), so A must act on what the loop samples: a pixel model of classes or ∅."""
    check(model.latent is None and not model.takes_text,
          f"{model.path} is a latent or text-conditioned model; guidekit restore measures pixels of a pixel-space "
          f"model (inpaint a latent model with 'guidekit inpaint')")


def restore_guided(model: LoadedModel, y: torch.Tensor, op: Operator, method: Method, labels: torch.Tensor,
                   seeds: list[int] | None, guidance: Guidance, settings: SamplerSettings, sigma_y: float = 0.0,
                   jump_length: int = 1, jump_n_sample: int = 1, device: torch.device | str = "cpu",
                   progress: bool = False, callback: Callback | None = None, noise=None,
                   stats: dict | None = None) -> torch.Tensor:
    """Images restored from y = A(x) + σ_y·n (one row per image) for labels[i] (∅ = unconditional) under guidance
    (CFG, classifier guidance, the rules after CFG); stats receives "nfe", network evaluations per image (a CFG pass
    counts 2). x̂0 clipping (settings.clip_x0) applies after DDNM's and ΠGDM's corrections."""
    check_restorable(model)
    stack = guided(model, guidance, replace(settings, clip_x0=False))
    clip = (lambda den: ClipX0(den, model.schedule)) if settings.clip_x0 and guidance.dynamic_threshold is None \
        else None
    cond = {"y": network_labels(model, labels, guidance)}
    out, _ = restore(stack.denoiser, model.schedule, op, y, model.sample_shape, method, cond, stack.step, seeds,
                     settings.steps, sigma_y, jump_length, jump_n_sample, settings.spacing, clip, device,
                     settings.batch_size, callback, progress, noise)
    if stats is not None:
        stats["nfe"] = stack.nfe(len(out))
    return check_samples(out)


def restoration_errors(images: torch.Tensor, truth: torch.Tensor, op: Operator, y: torch.Tensor) -> dict:
    """Per image, in [0, 1] units: whole-image L2 (RMS) and PSNR, the same over the pixels A does not see (an
    inpainting mask's unknown region; None for other tasks), and the consistency ‖y − A(x̂)‖ as an RMS over y."""
    diff = (images.double() - truth.double()) / 2
    l2 = diff.pow(2).flatten(1).mean(1).sqrt()
    out = {"l2": l2, "psnr": -20 * torch.log10(l2.clamp(min=1e-8)), "masked_l2": None, "masked_psnr": None}
    mask = getattr(op, "mask", None)
    if mask is not None:
        unknown = (1 - mask.double()).expand_as(diff).flatten(1)
        ml2 = ((diff.pow(2).flatten(1) * unknown).sum(1) / unknown.sum(1).clamp(min=1)).sqrt()
        out.update(masked_l2=ml2, masked_psnr=-20 * torch.log10(ml2.clamp(min=1e-8)))
    resid = (y.double() - op(images.double())) / 2
    if mask is not None:  # only the measured pixels count
        seen = mask.double().expand_as(resid).flatten(1)
        out["consistency"] = ((resid.pow(2).flatten(1) * seen).sum(1) / seen.sum(1)).sqrt()
    else:
        out["consistency"] = resid.pow(2).flatten(1).mean(1).sqrt()
    return out
