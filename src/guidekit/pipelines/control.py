"""A loaded model steered by ControlNets (Zhang et al. 2023): hints, the controlled network, sampling."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from guidekit.checkpoints import LoadedControlNet, LoadedModel
from guidekit.conditions import Condition, get_condition
from guidekit.errors import GuidekitError, check
from guidekit.models.controlnet import ControlledUNet, ControlNet
from guidekit.pipelines.sample import sample_guided
from guidekit.pipelines.settings import Guidance, SamplerSettings
from guidekit.sampling.loop import Callback


def as_nets(controlnets) -> list[torch.nn.Module]:
    """A list of ControlNet modules (guidekit's, or diffusers ControlNetModels for a latent base) from one or
    several ControlNets or LoadedControlNets."""
    items = list(controlnets) if isinstance(controlnets, (list, tuple)) else [controlnets]
    nets = [c.net if isinstance(c, LoadedControlNet) else c for c in items]
    check(len(nets) >= 1 and all(isinstance(n, ControlNet) or type(n).__name__ == "ControlNetModel" for n in nets),
          "controlnets must be a ControlNet (or load_controlnet result) or a non-empty list of them")
    return nets


def condition_of(controlnet: LoadedControlNet) -> Condition:
    """The hint extractor a ControlNet was trained with (its config's `condition`)."""
    try:
        return get_condition(controlnet.condition)
    except GuidekitError as e:
        raise GuidekitError(f"the ControlNet {controlnet.path} was trained on condition {controlnet.condition!r}, "
                            f"which guidekit cannot extract ({e}); pass a hint image you made instead") from e


def controlled(model: LoadedModel, controlnets, scale=1.0, start=0.0, end=1.0,
               hint_uncond: bool = True) -> LoadedModel:
    """The model with its UNet steered by the ControlNets (ControlledUNet; ControlledCondUNet on a latent base, whose
    hints are pixel-size images); validates scales and windows."""
    if model.latent is not None:
        from guidekit.models.diffusers_cond_unet import ControlledCondUNet

        check(hint_uncond, "--hint-cond-only needs a class-conditional base; a latent text model's ∅ half is the "
                           "empty or negative prompt: drop it")
        return dataclasses.replace(model, net=ControlledCondUNet(model.net, as_nets(controlnets), scale, start, end))
    net = ControlledUNet(model.net, as_nets(controlnets), scale, start, end, hint_uncond)
    return dataclasses.replace(model, net=net)


def hint_shape(net, size: int | None = None) -> tuple[int, int]:
    """(channels, side) of a ControlNet's hint: guidekit's at its model's size; a diffusers ControlNetModel's at the
    pixel size of the images (size)."""
    if isinstance(net, ControlNet):
        return net.config.hint_channels, net.copy.config.image_size
    check(size is not None, "a diffusers ControlNetModel's hint is an image at the pixel size: pass size")
    return int(net.config.conditioning_channels), size


def join_hints(hints: Sequence[torch.Tensor], nets: list, n: int, size: int | None = None) -> torch.Tensor:
    """One (n, sum of hint channels, H, W) tensor from one hint per ControlNet, each (n or 1, C_k, H, W)."""
    check(len(hints) == len(nets), f"got {len(hints)} hints for {len(nets)} ControlNets; pass one hint each")
    out = []
    for i, (h, net) in enumerate(zip(hints, nets)):
        c, side = hint_shape(net, size)
        ok = isinstance(h, torch.Tensor) and h.dim() == 4 and h.shape[0] in (1, n) and \
            tuple(h.shape[1:]) == (c, side, side)
        check(ok, f"hint {i} must be a ({n} or 1, {c}, {side}, {side}) tensor in [0, 1], got "
                  f"{tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__}")
        out.append(h.float().cpu().expand(n, -1, -1, -1))
    return torch.cat(out, 1).contiguous()


def control_samples(model: LoadedModel, controlnets, hints: Sequence[torch.Tensor], labels: torch.Tensor,
                    seeds: list[int] | None, scale, settings: SamplerSettings, device: torch.device | str = "cpu",
                    guidance: Guidance | None = None, start=0.0, end=1.0, hint_uncond: bool = True,
                    progress: bool = False, cond: dict[str, torch.Tensor] | None = None,
                    callback: Callback | None = None, noise=None) -> torch.Tensor:
    """Images (N, C, H, W) in [−1, 1] of the model steered by ControlNets (Zhang et al. 2023) with hints[k] each.

    scale, start, end: one value or one per ControlNet. All scales 0 is the base model itself (no ControlNet runs),
    so it equals sample_guided with the same seeds exactly. cond: further conditions, N rows each (a text base's
    {"text", "text_negative"} from prompt_cond), which the base and the ControlNets see together with the hint.
    """
    guidance, cond = guidance or Guidance(), dict(cond or {})
    steered = controlled(model, controlnets, scale, start, end, hint_uncond)
    if all(s == 0 for s in steered.net.control_scale):
        steered = model
    else:
        cond["hint"] = join_hints(hints, list(steered.net.controlnets), len(labels), model.image_size)
    return sample_guided(steered, labels, seeds, guidance, settings, device, progress, cond, callback, noise)


def extract_hints(condition: Condition, images: torch.Tensor, seed: int = 0, batch: int = 512) -> torch.Tensor:
    """condition(x0, generator) over images in batches, with one generator seeded by seed (sketch jitter)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([condition(images[i:i + batch], generator=g) for i in range(0, len(images), batch)]).float()


def hint_image(hint: torch.Tensor, channels: int) -> torch.Tensor:
    """A (C_k, H, W) hint in [0, 1] shown as a (channels, H, W) image in [-1, 1] (gray when the counts differ)."""
    h = hint.float().cpu() * 2 - 1
    if h.shape[0] != channels:
        h = h.mean(0, keepdim=True).expand(channels, -1, -1)
    return h
