"""RePaint (Lugmayr et al. 2022) of a loaded model under guidance, and the errors of the generated region."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.pipelines.denoiser import guided
from guidekit.pipelines.policy import network_labels
from guidekit.latent.edges import latent_mask, restore_known
from guidekit.pipelines.sample import check_samples, pixels
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.pipelines.text import with_prompt
from guidekit.sampling.loop import Callback
from guidekit.sampling.repaint import inpaint


def inpaint_guided(model: LoadedModel, x0: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                   seeds: list[int] | None, guidance: Guidance, settings: SamplerSettings, jump_length: int,
                   jump_n_sample: int, device: torch.device | str = "cpu", progress: bool = False,
                   cond: dict[str, torch.Tensor] | None = None, callback: Callback | None = None,
                   noise=None) -> tuple[torch.Tensor, int]:
    """(images, NFE per image): RePaint of x0 (1 or N rows) under mask (1 = known) for labels[i] from seeds[i] (or
    row i of noise); callback(StepInfo) after every move. On a latent model RePaint runs on latents (the mask on the
    latent grid: a cell is known only if all its pixels are) and the known pixels come back exactly after decoding,
    with the decoder's error at the border carried into the completion (guidekit.latent.edges.restore_known)."""
    check(isinstance(x0, torch.Tensor) and x0.is_floating_point() and bool(torch.isfinite(x0).all()),
          "the image to inpaint must be a float tensor without NaN or infinite values (its known pixels are kept "
          "as they are); fix or re-load the image")
    known, kept = x0, mask
    if model.latent is not None:
        c, side, f = model.image_channels, model.image_size, model.latent.factor
        check(x0.dim() == 4 and tuple(x0.shape[1:]) == (c, side, side),
              f"the image to inpaint must be (N, {c}, {side}, {side}) pixels for this latent model (its VAE makes "
              f"{side // f}×{side // f} latents of it), got {tuple(x0.shape)}")
        check(isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[1] == 1
              and tuple(mask.shape[2:]) == (side, side),
              f"the mask must be (N or 1, 1, {side}, {side}) at the pixel size (guidekit puts it on the {side // f}"
              f"×{side // f} latent grid itself), got {tuple(getattr(mask, 'shape', ()))}")
        # RePaint on latents: the known cells follow q(z_t | E(x0)), the pixels are put back after decoding
        known = model.latent.encode(x0.to(device)).cpu()
        kept = latent_mask(mask, model.latent.factor)
        empty = (kept.flatten(1).amax(1) == 0) & (mask.flatten(1).amax(1) > 0)
        check(not bool(empty.any()), f"mask {int(empty.int().argmax())} keeps no whole {f}×{f} pixel cell, so on "
              f"the {side // f}×{side // f} latent grid it keeps nothing (thin or scattered masks such as "
              f"every-second-line or sr2 do this): RePaint on a latent model keeps known regions cell by cell; use "
              f"a mask of blocks (half, wide, expand, your own), or a pixel-space model")
    stack = guided(model, guidance, settings)
    out, nfe = inpaint(stack.denoiser, model.schedule, known, kept,
                       {"y": network_labels(model, labels, guidance), **with_prompt(model, cond, len(labels))},
                       stack.step, seeds,
                       settings.steps, jump_length, jump_n_sample, spacing=settings.spacing, eta=settings.eta,
                       device=device, batch_size=settings.batch_size, callback=callback, progress=progress,
                       noise=noise)
    images = check_samples(pixels(model, check_samples(out)))
    if model.latent is not None:
        images = restore_known(images, x0.expand_as(images), mask, model.latent.factor / 2)
    return images, nfe


def masked_errors(images: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (L2, PSNR) over the generated pixels (mask 0): L2 = RMS error in [0, 1] units, PSNR = −20·log10 L2."""
    unknown = (1 - mask).expand_as(images).flatten(1).double()
    diff2 = (((images.double() - truth.double()) / 2) ** 2).flatten(1)  # [−1, 1] → [0, 1] units
    l2 = ((diff2 * unknown).sum(1) / unknown.sum(1).clamp(min=1)).sqrt()
    return l2, -20 * torch.log10(l2.clamp(min=1e-8))
