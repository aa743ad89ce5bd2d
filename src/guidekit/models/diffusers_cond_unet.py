"""A pretrained diffusers `UNet2DConditionModel` (Stable Diffusion 1.x / 2.x) behind guidekit's network call.

`net(x, t, y=None, text=None, down_residuals=None, mid_residual=None)` runs the UNet on latents x with the prompt's
token embeddings `text` (B, L, D) as the cross-attention context (cond["text"] in the loop) and, for ControlNets,
residuals added to its skips and middle block; its output equals `UNet2DConditionModel(x, t, text).sample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from guidekit.errors import check
from guidekit.models.diffusers_unet import import_diffusers, plain_config


@dataclass
class CondUNetConfig:
    """What guidekit reads of a UNet2DConditionModel: latent size and channels, context width, prediction type."""

    unet: dict  # the UNet2DConditionModel config (config.json without '_' keys)
    num_train_timesteps: int = 1000
    prediction_type: str = "eps"

    @property
    def image_size(self) -> int:
        size = self.unet.get("sample_size", 64)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def in_channels(self) -> int:
        return int(self.unet.get("in_channels", 4))

    @property
    def out_channels(self) -> int:
        return int(self.unet.get("out_channels", 4))

    @property
    def channels(self) -> int:
        return int(self.unet.get("block_out_channels", [320])[0])

    @property
    def text_dim(self) -> int:
        dim = self.unet.get("cross_attention_dim", 768)
        return int(dim[0] if isinstance(dim, (list, tuple)) else dim)

    num_classes = 0  # a text model: no class labels, ∅ is the empty prompt

    def to_dict(self) -> dict:
        return {"unet": self.unet, "num_train_timesteps": self.num_train_timesteps,
                "prediction_type": self.prediction_type}


class DiffusersCondUNet(nn.Module):
    """A diffusers UNet2DConditionModel as a guidekit network on latents, prompted through cross-attention."""

    graph_safe = True

    def __init__(self, unet: nn.Module, num_train_timesteps: int = 1000, prediction_type: str = "eps"):
        super().__init__()
        diffusers = import_diffusers()
        check(isinstance(unet, diffusers.UNet2DConditionModel),
              f"DiffusersCondUNet wraps a diffusers UNet2DConditionModel, got {type(unet).__name__}")
        self.unet = unet
        self.config = CondUNetConfig(plain_config(unet), num_train_timesteps, prediction_type)
        c = self.config.unet
        check(c.get("addition_embed_type") is None and c.get("class_embed_type") is None
              and c.get("num_class_embeds") is None,
              "this UNet2DConditionModel takes added or class conditions (SDXL-style 'text_time' embeddings or "
              "class labels) beside the prompt, which guidekit does not pass yet; use a Stable Diffusion 1.x/2.x "
              "pipeline folder")
        check(self.config.in_channels == self.config.out_channels,
              f"this UNet takes {self.config.in_channels} input channels and gives {self.config.out_channels} "
              f"(an inpainting UNet, 9 → 4, reads the mask and masked image); guidekit's RePaint inpaints with the "
              f"base text-to-image UNet instead: pass that pipeline folder")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None, text: torch.Tensor | None = None,
                down_residuals=None, mid_residual=None) -> torch.Tensor:
        check(text is not None and text.dim() == 3,
              "a latent text-to-image UNet needs cond['text']: token embeddings (B, L, D) of the prompt (the empty "
              "prompt's for ∅)")
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return self.unet(x, t, encoder_hidden_states=text.to(x.dtype),
                         down_block_additional_residuals=down_residuals,
                         mid_block_additional_residual=mid_residual).sample


class ControlledCondUNet(nn.Module):
    """A frozen latent UNet steered by public diffusers ControlNetModels (Zhang et al. 2023): net(x, t, y, hint, text).

    hint: the pixel-size condition images in [0, 1] of every ControlNet, channel-concatenated (B, Σ C_k, H·f, W·f)
    or a list; each net's residuals, times its control_scale, are summed into the UNet's skips and middle block over
    the rows whose trajectory fraction f(t) = (T − 1 − t)/T lies in its [control_start, control_end] window (a
    diffusers pipeline's control_guidance_end e at N uniform steps is control_end e − 1/N here: it tests the next
    step's fraction, guidekit the current one's)."""

    graph_safe = False

    def __init__(self, base: DiffusersCondUNet, controlnets, control_scale=1.0, control_start=0.0, control_end=1.0):
        super().__init__()
        from guidekit.models.controlnet import _per_net

        diffusers = import_diffusers()
        nets = list(controlnets) if isinstance(controlnets, (list, tuple)) else [controlnets]
        check(len(nets) >= 1 and all(isinstance(n, diffusers.ControlNetModel) for n in nets),
              "a latent base is steered by diffusers ControlNetModels (a folder written by ControlNetModel."
              "save_pretrained); guidekit's own ControlNets steer the pixel models they were trained for")
        self.base, self.controlnets, self.config = base.requires_grad_(False), nn.ModuleList(nets), base.config
        k = len(nets)
        self.control_scale = _per_net(control_scale, k, "control_scale")
        self.control_start = _per_net(control_start, k, "control_start")
        self.control_end = _per_net(control_end, k, "control_end")
        check(all(s >= 0 for s in self.control_scale), f"control_scale must be >= 0, got {self.control_scale}")
        for s, e in zip(self.control_start, self.control_end):
            check(0 <= s <= e <= 1, f"need 0 <= control_start <= control_end <= 1 (fractions of the trajectory, "
                                    f"0 = pure noise, 1 = clean), got start={s}, end={e}")
        self.channels = [int(n.config.conditioning_channels) for n in nets]

    def _hints(self, hint) -> list:
        """One pixel-size hint per ControlNet."""
        if isinstance(hint, (list, tuple)):
            check(len(hint) == len(self.channels), f"{len(hint)} hints for {len(self.channels)} ControlNets")
            return list(hint)
        check(isinstance(hint, torch.Tensor) and hint.dim() == 4 and hint.shape[1] == sum(self.channels),
              f"the hints of {len(self.channels)} ControlNet(s) must be one (B, {sum(self.channels)}, H, W) tensor "
              f"(their channels {self.channels} concatenated), got {tuple(getattr(hint, 'shape', ()))}")
        return list(hint.split(self.channels, dim=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None, hint=None, text: torch.Tensor | None = None):
        from guidekit.models.controlnet import trajectory_fraction

        if hint is None:
            return self.base(x, t, text=text)
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        f = trajectory_fraction(t.detach().cpu(), self.config.num_train_timesteps)
        down, mid = None, None
        for net, h, scale, start, end in zip(self.controlnets, self._hints(hint), self.control_scale,
                                             self.control_start, self.control_end):
            on = ((f >= start - 1e-9) & (f <= end + 1e-9)).to(x.device, x.dtype).view(-1, 1, 1, 1)
            if scale == 0 or not bool(on.any()):
                continue
            d, m = net(x, t, encoder_hidden_states=text.to(x.dtype), controlnet_cond=h.to(x.dtype),
                       conditioning_scale=scale, return_dict=False)
            d, m = [r * on for r in d], m * on
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        return self.base(x, t, text=text, down_residuals=down, mid_residual=mid)
