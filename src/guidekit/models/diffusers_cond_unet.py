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
