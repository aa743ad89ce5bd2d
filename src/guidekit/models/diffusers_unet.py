"""A pretrained diffusers `UNet2DModel` behind guidekit's backbone protocol (embed / encode / middle / decode).

`DiffusersUNet` holds the UNet2DModel's own submodules (so its state dict has diffusers' key names) and calls them
in UNet2DModel.forward's order; its output equals `UNet2DModel(x, t, class_labels=y).sample`. t is the raw
training timestep (diffusers' convention, fractional allowed). Labels use guidekit's convention: 0..K-1 are the
classes and K = `config.num_classes` is the null class ∅, which exists only when `null_class_index` names the
embedding row the model was trained with as ∅ (then K = num_class_embeds − 1 and the classes are the other rows,
in order). Without it every embedding row is a class and CFG refuses to run. diffusers is imported lazily.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn as nn

from guidekit.errors import GuidekitError, check, check_config_keys
from guidekit.models.unet import PREDICTION_TYPES, check_labels, check_x_and_t, forward_with_residuals

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")
PARTS = ("conv_in", "time_proj", "time_embedding", "class_embedding", "down_blocks", "mid_block", "up_blocks",
         "conv_norm_out", "conv_act", "conv_out")
DECODER = ("up_blocks", "conv_norm_out", "conv_act", "conv_out")


def import_diffusers():
    """The diffusers package, or a GuidekitError saying how to install it."""
    try:
        import diffusers
    except ImportError as e:
        raise GuidekitError("diffusers models need the optional diffusers package: "
                            "pip install 'guidekit[diffusers]'") from e
    return diffusers


def plain_config(unet2d) -> dict:
    """A UNet2DModel's config as a JSON-plain dict, without diffusers' private '_' keys."""
    return json.loads(json.dumps({k: v for k, v in dict(unet2d.config).items() if not k.startswith("_")}))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class DiffusersUNetConfig:
    """A UNet2DModel config plus what guidekit needs beside it; exposes the fields guidekit code reads."""

    unet2d: dict  # the UNet2DModel config (config.json without '_' keys)
    num_train_timesteps: int = 1000  # T of the scheduler the model was trained with
    prediction_type: str = "eps"  # eps | v | x0 (the scheduler's epsilon | v_prediction | sample)
    null_class_index: int | None = None  # the class-embedding row that is the null class ∅, if any

    def to_dict(self) -> dict:
        """JSON-serializable dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusersUNetConfig":
        """Rebuild and validate a config from to_dict() output; every field must be present."""
        check_config_keys(cls, d)
        return cls(**d).validate()

    def get(self, key: str):
        """A UNet2DModel config value; a missing key is an error naming it."""
        check(isinstance(self.unet2d, dict) and key in self.unet2d,
              f"the UNet2DModel config lacks {key!r}; re-save the model with UNet2DModel.save_pretrained")
        return self.unet2d[key]

    @property
    def image_size(self) -> int:
        s = self.get("sample_size")
        return s if _is_int(s) else s[0]

    @property
    def in_channels(self) -> int:
        return self.get("in_channels")

    @property
    def out_channels(self) -> int:
        return self.get("out_channels")

    @property
    def channels(self) -> int:
        """Width of the first block (conv_in's output)."""
        return self.get("block_out_channels")[0]

    @property
    def mid_channels(self) -> int:
        return self.get("block_out_channels")[-1]

    @property
    def num_classes(self) -> int:
        """Real classes: num_class_embeds, less the null row when null_class_index is set (0 = unconditional)."""
        n = self.get("num_class_embeds") or 0
        return n - 1 if self.null_class_index is not None else n

    @property
    def has_null(self) -> bool:
        """Whether label num_classes (∅, the CFG null) exists."""
        return self.null_class_index is not None

    @property
    def factor(self) -> int:
        """H and W of an input must be divisible by this (one halving per down block but the last)."""
        return 2 ** (len(self.get("block_out_channels")) - 1)

    def validate(self) -> "DiffusersUNetConfig":
        """Raise GuidekitError naming the first unsupported or bad field; return self when all are fine."""
        check(isinstance(self.unet2d, dict), f"DiffusersUNetConfig.unet2d must be a dict, got {type(self.unet2d)}")
        s = self.get("sample_size")
        check((_is_int(s) and s >= 1) or (isinstance(s, (list, tuple)) and len(s) == 2 and s[0] == s[1]
                                          and _is_int(s[0]) and s[0] >= 1),
              f"UNet2DModel sample_size={s!r}: guidekit needs the square training resolution; set \"sample_size\": "
              f"N in config.json")
        kind = self.get("time_embedding_type")
        check(kind == "positional", f"UNet2DModel time_embedding_type={kind!r} is not supported: guidekit runs "
                                    f"DDPM-type models with the 'positional' embedding ('fourier' is a score-SDE "
                                    f"σ-model, 'learned' cannot take the fractional timesteps guidekit uses)")
        kind = self.get("class_embed_type")
        check(kind is None, f"UNet2DModel class_embed_type={kind!r} is not supported: guidekit feeds integer class "
                            f"labels, i.e. class_embed_type null with num_class_embeds")
        for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
            for name in self.get(key):
                base = name[7:] if name.startswith("UNetRes") else name
                check(base in allowed, f"UNet2DModel {key} has {name!r}, which guidekit does not support (skip "
                                       f"blocks carry a second image path); supported: {', '.join(allowed)}")
        mid = self.get("mid_block_type")
        check(mid in (None, "UNetMidBlock2D"), f"UNet2DModel mid_block_type={mid!r} is not supported; "
                                               f"use 'UNetMidBlock2D' or null")
        chans = self.get("block_out_channels")
        check(isinstance(chans, (list, tuple)) and len(chans) >= 1 and all(_is_int(c) and c >= 1 for c in chans),
              f"UNet2DModel block_out_channels must be a list of positive integers, got {chans!r}")
        check(self.image_size % self.factor == 0, f"UNet2DModel sample_size={self.image_size} must be divisible "
                                                  f"by 2**(len(block_out_channels)-1)={self.factor}")
        cin, cout = self.in_channels, self.out_channels
        check(cin == cout, f"UNet2DModel out_channels={cout} differs from in_channels={cin}: guidekit needs one "
                           f"prediction per image channel (learned-variance models are not supported)")
        n = self.get("num_class_embeds")
        check(n is None or (_is_int(n) and n >= 1), f"UNet2DModel num_class_embeds must be null or >= 1, got {n!r}")
        i = self.null_class_index
        if i is not None:
            check(n is not None and n >= 2, f"null_class_index={i!r} needs a class-conditional model with "
                                             f"num_class_embeds >= 2, but num_class_embeds={n!r}; drop it")
            check(_is_int(i) and 0 <= i < n, f"null_class_index must be an integer in [0, {n - 1}] (a row of "
                                             f"the {n} class embeddings), got {i!r}")
        T = self.num_train_timesteps
        check(_is_int(T) and T >= 2, f"num_train_timesteps must be an integer >= 2, got {T!r}")
        own = self.unet2d.get("num_train_timesteps")
        check(own in (None, T), f"the UNet2DModel config says num_train_timesteps={own}, the scheduler {T}")
        check(self.prediction_type in PREDICTION_TYPES,
              f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        return self


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel as a guidekit backbone: net(x, t, y=None, down_residuals=None, mid_residual=None)."""

    def __init__(self, unet2d: nn.Module, num_train_timesteps: int = 1000, prediction_type: str = "eps",
                 null_class_index: int | None = None):
        super().__init__()
        diffusers = import_diffusers()
        check(isinstance(unet2d, diffusers.UNet2DModel),
              f"DiffusersUNet wraps a diffusers UNet2DModel, got {type(unet2d).__name__}")
        self.config = DiffusersUNetConfig(plain_config(unet2d), num_train_timesteps, prediction_type,
                                          null_class_index).validate()
        extra = sorted({name for name, _ in unet2d.named_children()} - set(PARTS))
        check(not extra, f"this UNet2DModel has submodules {extra} that guidekit does not know (diffusers "
                         f"{diffusers.__version__}); use a diffusers version whose UNet2DModel has only {PARTS}")
        for name in PARTS:
            setattr(self, name, getattr(unet2d, name, None))
        c = self.config
        self.mid_channels = c.mid_channels
        size, shapes = c.image_size, [(c.channels, c.image_size)]
        for block, ch in zip(self.down_blocks, c.get("block_out_channels")):
            shapes += [(ch, size)] * len(block.resnets)
            if block.downsamplers is not None:
                size //= 2
                shapes.append((ch, size))
        self._skip_shapes = shapes

    @classmethod
    def from_config(cls, config: DiffusersUNetConfig) -> "DiffusersUNet":
        """A randomly initialized DiffusersUNet of this config (weights are loaded afterwards)."""
        config.validate()
        unet2d = import_diffusers().UNet2DModel.from_config(config.unet2d)
        return cls(unet2d, config.num_train_timesteps, config.prediction_type, config.null_class_index)

    def skip_shapes(self) -> list[tuple[int, int]]:
        """(channels, resolution at image_size) of every skip tensor that encode() returns, in order."""
        return list(self._skip_shapes)

    def drop_decoder(self) -> "DiffusersUNet":
        """Delete the up blocks and output head in place (a ControlNet's copy keeps only the encoder half)."""
        for name in DECODER:
            delattr(self, name)
        return self

    def embed(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """time_proj + time_embedding (+ class_embedding) of raw timesteps t (B,) and guidekit labels y (None = ∅)."""
        dtype = self.conv_in.weight.dtype
        t = torch.as_tensor(t, device=self.conv_in.weight.device).reshape(-1)
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(self._embedding_rows(y, t.shape[0], t.device)).to(dtype)
        return emb

    def _embedding_rows(self, y: torch.Tensor | None, B: int, device) -> torch.Tensor:
        """Class-embedding rows of guidekit labels: classes skip the null row, label num_classes is the null row."""
        c = self.config
        K, n = c.num_classes, c.null_class_index
        if y is None:
            check(c.has_null, self._no_null_message())
            y = torch.full((B,), K, dtype=torch.long, device=device)
        if n is None:
            return y
        return torch.where(y == K, torch.full_like(y, n), y + (y >= n).long())

    def _no_null_message(self) -> str:
        K = self.config.num_classes
        return (f"this diffusers model has no null class ∅ (needed by classifier-free guidance and unconditional "
                f"rows): all its num_class_embeds={K} embeddings are classes. If it was trained with one row as ∅, "
                f"name that row with null_class_index (guidekit.json next to config.json, or --null-class-index); "
                f"else sample with --w 0")

    def encode(self, x: torch.Tensor, emb: torch.Tensor,
               hint_features: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """conv_in (plus a ControlNet's encoded hint) and the down blocks; return h and every residual output."""
        if self.config.get("center_input_sample"):
            x = 2 * x - 1.0
        h = self.conv_in(x)
        if hint_features is not None:
            h = h + hint_features
        skips = [h]
        for block in self.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            skips.extend(res)
        return h, skips

    def middle(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The mid block (identity when mid_block_type is null)."""
        return h if self.mid_block is None else self.mid_block(h, emb)

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Up blocks, each consuming its number of skips from the end, then conv_norm_out, conv_act, conv_out."""
        skips = list(skips)
        for block in self.up_blocks:
            n = len(block.resnets)
            h = block(h, tuple(skips[-n:]), emb)
            del skips[-n:]
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None,
                down_residuals: list[torch.Tensor] | None = None,
                mid_residual: torch.Tensor | None = None) -> torch.Tensor:
        """Prediction (B, out_channels, H, W) for x (B, in_channels, H, W); residuals come from a ControlNet."""
        return forward_with_residuals(self, x, t, y, down_residuals, mid_residual)

    def _check_inputs(self, x, t, y) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate x, t, y; return t as a tensor (B,) and y as int64 (B,) guidekit labels or None."""
        c = self.config
        t = check_x_and_t(x, t, c.in_channels, c.factor)
        if y is None:
            check(c.num_classes == 0 or c.has_null, self._no_null_message())
            return t, None
        check_labels(y, x.shape[0])
        K = c.num_classes
        if K == 0:
            check(bool((y == 0).all()), "this diffusers UNet2DModel is unconditional (num_class_embeds null): "
                                        f"pass y=None, got labels {y.tolist()[:8]}")
            return t, None
        check(c.has_null or not bool((y == K).any()), self._no_null_message())
        top = K if c.has_null else K - 1
        check(bool(((y >= 0) & (y <= top)).all()), f"y labels must be in [0, {top}]"
              + (f" ({K} = null)" if c.has_null else "") + f", got {y.tolist()[:8]}")
        return t, y.long()
