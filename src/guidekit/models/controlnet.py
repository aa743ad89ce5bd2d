"""ControlNet (Zhang et al. 2023): y_c = F(x; Θ) + Z(F(x + Z(c; a1, b1); Θ_c); a2, b2) on a guidekit backbone.

A backbone is guidekit's UNet or a DiffusersUNet (a pretrained diffusers UNet2DModel): anything with config,
embed / encode / middle / decode, skip_shapes(), mid_channels, drop_decoder() and _check_inputs.
`ControlNet` is the trainable copy Θ_c of a backbone's embedding, encoder and middle block; the hint c enters through
a small conv encoder ending in a zero 1×1 conv Z(·; a1, b1) added to the copy's first feature map, and leaves
through zero 1×1 convs Z(·; a2, b2) on every skip and on the middle block. `ControlledUNet` adds those residuals
to a frozen base UNet, so at initialization it is exactly the base model.

Trajectory window: a sampler runs t from T−1 (pure noise) down to −1 (clean); trajectory fraction
f(t) = (T − 1 − t) / T, so f = 0 at t = T−1 and f = 1 at t = −1, with T the base UNet's num_train_timesteps
(the schedule's T). A ControlNet is applied to a row only when control_start ≤ f(t) ≤ control_end, i.e. when
T − 1 − control_end·T ≤ t ≤ T − 1 − control_start·T. Respaced samplers pass the original timesteps, so the window
means the same for any number of steps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from guidekit.errors import check, check_config_keys
from guidekit.models.layers import zero_
from guidekit.models.unet import UNet, UNetConfig, _shape

BASE_KINDS = ("guidekit", "diffusers")


def backbone_kind(net) -> str:
    """'guidekit' for a guidekit UNet, 'diffusers' for a DiffusersUNet; anything else is an error."""
    if isinstance(net, UNet):
        return "guidekit"
    from guidekit.models.diffusers_unet import DiffusersUNet  # no diffusers import needed for this check

    check(isinstance(net, DiffusersUNet), f"need a guidekit UNet or a DiffusersUNet (a diffusers UNet2DModel "
                                          f"loaded by guidekit.checkpoints.load_model), got {type(net).__name__}")
    return "diffusers"


@dataclass
class ControlNetConfig:
    """Shape of a ControlNet: its base model's kind and config, the hint's channels and the hint encoder's widths."""

    unet: dict  # config.to_dict() of the base model the ControlNet copies (UNetConfig or DiffusersUNetConfig)
    hint_channels: int = 1  # channels of the condition image (the hint), which has the image's H×W
    hint_widths: tuple = (16, 32)  # widths of the hint encoder's 3×3 conv + SiLU layers
    base_kind: str = "guidekit"  # 'guidekit' (UNet) or 'diffusers' (DiffusersUNet over a UNet2DModel)

    def __post_init__(self):
        """Accept a list (e.g. from JSON) for hint_widths."""
        if isinstance(self.hint_widths, list):
            self.hint_widths = tuple(self.hint_widths)

    def to_dict(self) -> dict:
        """JSON-serializable dict of every field."""
        d = dataclasses.asdict(self)
        d["hint_widths"] = list(self.hint_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ControlNetConfig":
        """Rebuild and validate a config from to_dict() output; every field but base_kind (older files: guidekit)
        must be present."""
        if isinstance(d, dict) and "base_kind" not in d:
            d = dict(d, base_kind="guidekit")
        check_config_keys(cls, d)
        return cls(**d).validate()

    def unet_config(self):
        """The base model's config: a UNetConfig, or a DiffusersUNetConfig for base_kind 'diffusers'."""
        check(self.base_kind in BASE_KINDS, f"ControlNetConfig.base_kind must be one of {BASE_KINDS}, "
                                            f"got {self.base_kind!r}")
        check(isinstance(self.unet, dict), f"ControlNetConfig.unet must be a config dict, got "
                                           f"{type(self.unet).__name__}; pass unet.config.to_dict()")
        if self.base_kind == "diffusers":
            from guidekit.models.diffusers_unet import DiffusersUNetConfig

            return DiffusersUNetConfig.from_dict(self.unet)
        return UNetConfig.from_dict(self.unet)

    def build_backbone(self):
        """A randomly initialized base model of this config, with its decoder dropped (the copy Θ_c)."""
        if self.base_kind == "diffusers":
            from guidekit.models.diffusers_unet import DiffusersUNet

            return DiffusersUNet.from_config(self.unet_config()).drop_decoder()
        return UNet(self.unet_config()).drop_decoder()

    def validate(self) -> "ControlNetConfig":
        """Raise GuidekitError naming the first bad field; return self when all are fine."""
        self.unet_config()
        h = self.hint_channels
        check(isinstance(h, int) and not isinstance(h, bool) and h >= 1,
              f"ControlNetConfig.hint_channels must be a positive integer, got {h!r}")
        w = self.hint_widths
        check(isinstance(w, tuple) and len(w) >= 1 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                            for v in w),
              f"ControlNetConfig.hint_widths must be a non-empty tuple of positive integers, got {w!r}")
        return self


class ControlNet(nn.Module):
    """Trainable copy of a backbone's encoder half; forward returns residuals for every skip and the middle block."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        check(isinstance(config, ControlNetConfig), f"ControlNet needs a ControlNetConfig, got "
                                                    f"{type(config).__name__}; use ControlNet.from_unet(unet)")
        self.config = config.validate()
        self.copy = config.build_backbone()  # Θ_c: embedding, conv_in, encoder and middle block; the decoder
        # stays with the frozen base
        layers, ch = [], config.hint_channels
        for width in config.hint_widths:
            layers += [nn.Conv2d(ch, width, 3, padding=1), nn.SiLU()]
            ch = width
        # Z(c; a1, b1) into the first block's channels, Z(·; a2, b2) on every skip and the middle block
        self.hint_encoder = nn.Sequential(*layers, zero_(nn.Conv2d(ch, self.copy.config.channels, 1)))
        self.zero_convs = nn.ModuleList(zero_(nn.Conv2d(c, c, 1)) for c, _ in self.copy.skip_shapes())
        self.mid_zero_conv = zero_(nn.Conv2d(self.copy.mid_channels, self.copy.mid_channels, 1))

    @classmethod
    def from_unet(cls, unet: nn.Module, hint_channels: int = 1,
                  hint_widths: Sequence[int] = (16, 32)) -> "ControlNet":
        """A ControlNet whose copy Θ_c starts as unet's weights (Θ_c = Θ, decoder dropped), on unet's device;
        unet is a guidekit UNet or a DiffusersUNet."""
        kind = backbone_kind(unet)
        net = cls(ControlNetConfig(unet.config.to_dict(), hint_channels, tuple(hint_widths), kind))
        keys = net.copy.state_dict().keys()
        net.copy.load_state_dict({k: v for k, v in unet.state_dict().items() if k in keys})
        return net.to(next(unet.parameters()).device)

    def skip_shapes(self) -> list[tuple[int, int]]:
        """(channels, resolution at image_size) of every down residual, as the base's skip_shapes()."""
        return self.copy.skip_shapes()

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, hint: torch.Tensor | None = None,
                text: torch.Tensor | None = None,
                w: torch.Tensor | None = None,
                class_embedding: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(down_residuals, mid_residual) for the base, from x (B, C, H, W), hint (B, hint_channels, H, W) and, on a
        text base, the prompt embeddings text (B, text_dim) that the copy sees as the base does (None = ∅); w: the
        (B,) CFG weights of a guidance-distilled base (guidance_embed), which its copy embeds too."""
        t, y = self.copy._check_inputs(x, t, y)
        c = self.config.hint_channels
        check(isinstance(hint, torch.Tensor) and hint.shape == (x.shape[0], c, *x.shape[2:]),
              f"hint must be a ({x.shape[0]}, {c}, {x.shape[2]}, {x.shape[3]}) tensor (one condition image per "
              f"row of x), got {_shape(hint)}")
        extra = {k: v for k, v in (("w", w), ("class_embedding", class_embedding)) if v is not None}
        emb = self.copy.embed(t, y, **text_kwargs(self.copy, text, x), **extra)
        h, skips = self.copy.encode(x, emb, self.hint_encoder(hint.to(x.dtype)))
        h = self.copy.middle(h, emb)
        return [z(s) for z, s in zip(self.zero_convs, skips)], self.mid_zero_conv(h)


def text_kwargs(net: nn.Module, text, x) -> dict:
    """{"text": text} checked against a text backbone and x's batch, or {} for text None (∅ on a text base)."""
    if text is None:
        return {}
    check(getattr(net.config, "text_dim", 0) > 0, "this base model takes no text prompt (it was trained on class "
                                                  "labels or unconditionally): drop --prompt, or use a base trained "
                                                  "with 'guidekit train --captions'")
    check(isinstance(x, torch.Tensor) and x.dim() == 4, f"x must be a (B, C, H, W) tensor, got {_shape(x)}")
    return {"text": net._check_text(text, x.shape[0])}


def trajectory_fraction(t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """f(t) = (T − 1 − t) / T: 0 at pure noise (t = T−1), 1 at the clean image (t = −1)."""
    return (num_timesteps - 1 - torch.as_tensor(t, dtype=torch.float64)) / num_timesteps


def _per_net(value, k: int, name: str) -> list[float]:
    """A number for every ControlNet, from one number or a sequence of k."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * k
    check(len(values) == k and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values),
          f"{name} must be a number or a list of {k} numbers (one per ControlNet), got {value!r}")
    return [float(v) for v in values]


class ControlledUNet(nn.Module):
    """A frozen base (UNet or DiffusersUNet) steered by ControlNets (Zhang et al. 2023): net(x, t, y, hint, text).

    hint: one tensor for one ControlNet; for several, a list/tuple (None entries switch one off) or one tensor
    with their hint channels concatenated (what guidekit's cond dicts, CFG and generate() can batch). Residuals
    are summed, each times its control_scale, over the rows whose t lies in its [control_start, control_end]
    trajectory window (module docstring). hint_uncond=False gives the null-class rows (y = num_classes, or y None
    on a class-conditional base: the CFG null half) no control. No hint at all is exactly the base model.
    """

    def __init__(self, base: nn.Module, controlnets: ControlNet | Sequence[ControlNet], control_scale=1.0,
                 control_start=0.0, control_end=1.0, hint_uncond: bool = True):
        super().__init__()
        kind = backbone_kind(base)
        nets = [controlnets] if isinstance(controlnets, ControlNet) else list(controlnets)
        check(len(nets) >= 1 and all(isinstance(n, ControlNet) for n in nets),
              "controlnets must be a ControlNet or a non-empty list of them")
        for i, n in enumerate(nets):
            check(n.config.base_kind == kind and n.config.unet == base.config.to_dict(),
                  f"ControlNet {i} was built for another base model ({n.config.base_kind} config "
                  f"{n.config.unet}); use ControlNet.from_unet(base)")
        self.base = base.requires_grad_(False)  # Θ stays frozen
        self.controlnets = nn.ModuleList(nets)
        self.config = base.config
        k = len(nets)
        self.control_scale = _per_net(control_scale, k, "control_scale")
        self.control_start = _per_net(control_start, k, "control_start")
        self.control_end = _per_net(control_end, k, "control_end")
        check(all(math.isfinite(s) and s >= 0 for s in self.control_scale),
              f"control_scale must be finite and >= 0 (0 = off, 1 = as trained), got {self.control_scale}")
        for s, e in zip(self.control_start, self.control_end):
            check(0 <= s <= e <= 1, f"need 0 <= control_start <= control_end <= 1 (fractions of the trajectory, "
                                    f"0 = pure noise, 1 = clean), got start={s}, end={e}")
        self.hint_uncond = bool(hint_uncond)
        self.base.eval()

    def train(self, mode: bool = True) -> "ControlledUNet":
        """Train mode for the ControlNets only; the frozen base always runs in eval mode (no dropout)."""
        super().train(mode)
        self.base.eval()
        return self

    def _hints(self, hint) -> list:
        """One hint (or None) per ControlNet."""
        chans = [n.config.hint_channels for n in self.controlnets]
        if isinstance(hint, (list, tuple)):
            check(len(hint) == len(chans), f"hint list has {len(hint)} entries but there are {len(chans)} "
                                           f"ControlNets; pass one hint (or None) per ControlNet")
            return list(hint)
        check(isinstance(hint, torch.Tensor), f"hint must be a tensor or a list of tensors, got {type(hint).__name__}")
        if len(chans) == 1:
            return [hint]
        check(hint.dim() == 4 and hint.shape[1] == sum(chans),
              f"one hint tensor for {len(chans)} ControlNets must have their channels {chans} concatenated "
              f"({sum(chans)} channels), got shape {tuple(hint.shape)}; or pass a list with one hint each")
        return list(hint.split(chans, dim=1))

    @property
    def graph_safe(self) -> bool:
        """No data-dependent branches (full windows, hint to both CFG halves): CUDA-graph capture is exact."""
        full = all((s, e) == (0.0, 1.0) for s, e in zip(self.control_start, self.control_end))
        return full and (self.hint_uncond or self.config.num_classes == 0) and getattr(self.base, "graph_safe", False)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, hint=None,
                text: torch.Tensor | None = None, w: torch.Tensor | None = None,
                class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """The base model's prediction with the ControlNets' residuals added; text: a text base's prompt embeddings
        (B, text_dim), seen by the base and by every ControlNet's copy (None = the empty prompt ∅); w: a
        guidance-distilled base's (B,) CFG weights, seen by the base and every copy likewise."""
        kw = text_kwargs(self.base, text, x)
        if w is not None:
            check(getattr(self.config, "guidance_embed", False), "this base model takes no guidance weight w (it is "
                  "not a guidance-distilled student from 'guidekit distill'): drop w= / cond['w']")
            kw["w"] = w
        if class_embedding is not None:  # CADS's annealed class embedding, seen by the base and every copy
            kw["class_embedding"] = class_embedding
        if hint is None:
            return self.base(x, t, y, **kw)
        hints = self._hints(hint)
        t_b, y_b = self.base._check_inputs(x, t, y)
        n_cls, B = self.config.num_classes, x.shape[0]
        rows = None  # None = every row; else a (B,) bool mask of the rows that get control
        if not self.hint_uncond and n_cls > 0:
            rows = torch.zeros(B, dtype=torch.bool, device=x.device) if y_b is None else y_b != n_cls
        down, mid = None, None
        for i, (net, h) in enumerate(zip(self.controlnets, hints)):
            scale, start, end = self.control_scale[i], self.control_start[i], self.control_end[i]
            on = rows
            if (start, end) != (0.0, 1.0):
                f = trajectory_fraction(t_b.detach().cpu(), self.config.num_train_timesteps)
                window = ((f >= start - 1e-9) & (f <= end + 1e-9)).to(x.device)
                on = window if on is None else on & window
            if on is not None and bool(on.all()):
                on = None
            if h is None or scale == 0 or (on is not None and not bool(on.any())):
                continue
            if on is None:
                d, m = net(x, t_b, y_b, h, text, w, class_embedding)
                d, m = [r * scale for r in d], m * scale
            else:  # run only the controlled rows; the others get exactly zero
                sel = on.nonzero().squeeze(1)
                d, m = net(x[sel], t_b[sel], None if y_b is None else y_b[sel], h[sel],
                           None if text is None else text[sel], None if w is None else w[sel],
                           None if class_embedding is None else class_embedding[sel])
                d = [r.new_zeros((B, *r.shape[1:])).index_add(0, sel, r * scale) for r in d]
                m = m.new_zeros((B, *m.shape[1:])).index_add(0, sel, m * scale)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        return self.base(x, t, y, down_residuals=down, mid_residual=mid, **kw)
