"""Noise-prediction UNet, class-conditional with a learned null class, with ControlNet hooks; optionally
w-conditioned (a guidance-distilled student, Meng et al. 2023)."""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from guidekit.errors import check, check_config_keys
from guidekit.models.layers import (Downsample, ResBlock, SelfAttention, Upsample, cat_channels, timestep_embedding,
                                    zero_)

PREDICTION_TYPES = ("eps", "v", "x0")


@dataclass
class UNetConfig:
    """Shape of a UNet; stored in checkpoints so a model can be rebuilt from its file."""

    image_size: int = 32  # training resolution (square); inputs may be any size divisible by 2**(levels-1)
    in_channels: int = 1  # channels of the noisy image x
    out_channels: int = 1  # channels of the prediction
    channels: int = 32  # base width: level i has channels * channel_mult[i] channels
    channel_mult: tuple = (1, 2, 2)  # width multiplier per resolution level; each level after the first halves H, W
    num_res_blocks: int = 2  # residual blocks per level in the encoder (the decoder has one more)
    attention_resolutions: tuple = (16, 8)  # feature-map sizes (at image_size) that get self-attention
    num_heads: int = 4  # attention heads, used when head_dim == 0
    head_dim: int = 0  # > 0: fixed width per head (heads = channels / head_dim), overriding num_heads
    norm_groups: int = 32  # GroupNorm groups; must divide every level's width
    dropout: float = 0.0  # dropout inside residual blocks, in [0, 1)
    num_classes: int = 0  # 0 = unconditional; else labels 0..num_classes-1 plus the null label num_classes
    num_train_timesteps: int = 1000  # t lives in [0, num_train_timesteps); rescaled to [0, 1000) before embedding
    prediction_type: str = "eps"  # what the network is trained to predict: eps | v | x0 (unused by the network)
    text_dim: int = 0  # > 0: conditioned on a (B, text_dim) text embedding (zeros = the empty prompt ∅), no classes
    guidance_embed: bool = False  # True: takes the CFG weight w (B,) as input (guidekit distill; Meng et al. 2023)

    def __post_init__(self):
        """Accept lists (e.g. from JSON) for the tuple fields."""
        for k in ("channel_mult", "attention_resolutions"):
            if isinstance(getattr(self, k), list):
                setattr(self, k, tuple(getattr(self, k)))

    def to_dict(self) -> dict:
        """JSON-serializable dict of every field (tuples become lists); optional fields at their default are left
        out, so configs (and fingerprints) of models without them are unchanged."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not (k in OPTIONAL_FIELDS and v == OPTIONAL_FIELDS[k])}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """Rebuild and validate a config from to_dict() output; every field must be present except the optional
        ones added later (text_dim, guidance_embed), whose absence means their default."""
        if isinstance(d, dict):
            d = {**OPTIONAL_FIELDS, **d}
        check_config_keys(cls, d)
        return cls(**d).validate()

    @classmethod
    def preset(cls, name: str, **overrides) -> "UNetConfig":
        """A named preset ('tiny', 'small', 'base') with some fields replaced."""
        check(name in PRESETS, f"unknown UNet preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(overrides) - fields)
        check(not bad, f"unknown UNetConfig override(s) {bad}; valid keys are {sorted(fields)}")
        return dataclasses.replace(PRESETS[name], **overrides).validate()

    def heads_at(self, ch: int) -> int:
        """Number of attention heads for a feature map with ch channels."""
        return ch // self.head_dim if self.head_dim > 0 else self.num_heads

    def validate(self) -> "UNetConfig":
        """Raise GuidekitError naming the first bad field; return self when all are fine."""
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for k in ("image_size", "in_channels", "out_channels", "channels", "num_res_blocks", "num_heads",
                  "norm_groups", "num_train_timesteps"):
            v = getattr(self, k)
            check(is_int(v) and v >= 1, f"UNetConfig.{k} must be a positive integer, got {v!r}")
        for k in ("head_dim", "num_classes", "text_dim"):
            v = getattr(self, k)
            check(is_int(v) and v >= 0, f"UNetConfig.{k} must be an integer >= 0, got {v!r}")
        for k in ("channel_mult", "attention_resolutions"):
            v = getattr(self, k)
            check(isinstance(v, tuple) and all(is_int(m) and m >= 1 for m in v),
                  f"UNetConfig.{k} must be a tuple of positive integers, got {v!r}")
        check(self.text_dim == 0 or self.num_classes == 0,
              f"a UNet takes class labels or a text embedding, not both: num_classes={self.num_classes}, "
              f"text_dim={self.text_dim}")
        check(isinstance(self.guidance_embed, bool),
              f"UNetConfig.guidance_embed must be true or false, got {self.guidance_embed!r}")
        check(not self.guidance_embed or self.num_classes > 0 or self.text_dim > 0,
              "UNetConfig.guidance_embed=True needs a conditional UNet (num_classes > 0 or text_dim > 0): "
              "an unconditional model has no guidance weight to take")
        check(len(self.channel_mult) >= 1, "UNetConfig.channel_mult must have at least one level, got ()")
        d = self.dropout
        check(isinstance(d, (int, float)) and not isinstance(d, bool) and 0 <= d < 1,
              f"UNetConfig.dropout must be a number in [0, 1), got {d!r}")
        check(self.prediction_type in PREDICTION_TYPES,
              f"UNetConfig.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        factor = 2 ** (len(self.channel_mult) - 1)
        check(self.image_size % factor == 0,
              f"UNetConfig.image_size={self.image_size} must be divisible by 2**(len(channel_mult)-1)={factor}; "
              f"change image_size or use fewer channel_mult levels")
        sizes = [self.image_size // 2**i for i in range(len(self.channel_mult))]
        for r in self.attention_resolutions:
            check(r in sizes, f"UNetConfig.attention_resolutions has {r}, which no level reaches; "
                              f"the feature-map sizes are {sizes}")
        for m in self.channel_mult:
            ch = self.channels * m
            check(ch % self.norm_groups == 0, f"UNetConfig.norm_groups={self.norm_groups} must divide every "
                                              f"level width, but not {ch} (channels * {m}); change norm_groups")
        attn_chs = [self.channels * m for m, s in zip(self.channel_mult, sizes) if s in self.attention_resolutions]
        for ch in attn_chs + [self.channels * self.channel_mult[-1]]:  # mid block always attends
            heads = self.heads_at(ch)
            check(heads >= 1 and ch % heads == 0 and (self.head_dim == 0 or ch % self.head_dim == 0),
                  f"attention width {ch} is not divisible by UNetConfig.head_dim={self.head_dim} / "
                  f"num_heads={self.num_heads}; pick a head count or head_dim that divides it")
        return self


#: fields newer than the first config.json files: absent = this default
OPTIONAL_FIELDS = {"text_dim": 0, "guidance_embed": False}

GUIDANCE_EMBED_SCALE = 100.0  # w·100 enters the sinusoids: w ∈ [0, 10] spans the [0, 1000) that t's embedding sees

PRESETS = {
    # for tests: ~0.19M parameters
    "tiny": UNetConfig(channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                       num_heads=2, norm_groups=8),
    # for the CPU demo: ~4.1M parameters
    "small": UNetConfig(channels=32, channel_mult=(1, 2, 4), num_res_blocks=2, attention_resolutions=(8,),
                        num_heads=4, norm_groups=8),
    # for GPU training: ~16.8M parameters, the shape of diffusers' UNet2DModel(block_out_channels=(64, 128, 256))
    "base": UNetConfig(channels=64, channel_mult=(1, 2, 4), num_res_blocks=2, attention_resolutions=(16, 8),
                       num_heads=4, norm_groups=32),
}


def count_parameters(module: nn.Module) -> int:
    """Total number of parameters of module."""
    return sum(p.numel() for p in module.parameters())


class Level(nn.Module):
    """One resolution level: residual blocks, each followed by attention (or identity), then resampling."""

    def __init__(self, blocks: list, attns: list, resample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)
        self.resample = resample


class UNet(nn.Module):
    """Predicts eps / v / x0 from a noisy image x, timestep t and optional class label y."""

    graph_safe = True  # no data-dependent control flow: guidekit.fast may capture it as a CUDA graph

    def __init__(self, config: UNetConfig):
        super().__init__()
        check(isinstance(config, UNetConfig), f"UNet needs a UNetConfig, got {type(config).__name__}; "
                                              f"use UNetConfig.preset('tiny') or UNetConfig(...)")
        self.config = c = config.validate()
        emb, g, n = 4 * c.channels, c.norm_groups, c.num_res_blocks
        self.time_embed = nn.Sequential(nn.Linear(c.channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_embed = nn.Embedding(c.num_classes + 1, emb) if c.num_classes > 0 else None  # last row = null
        # a frozen encoder's prompt embedding enters by the class embedding's path: projected, added to time's
        self.text_embed = nn.Linear(c.text_dim, emb) if c.text_dim > 0 else None
        self.conv_in = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)

        def attn(ch, size):
            return SelfAttention(ch, c.heads_at(ch), g) if size in c.attention_resolutions else nn.Identity()

        ch, size, last = c.channels, c.image_size, len(c.channel_mult) - 1
        self._skip_shapes = [(ch, size)]
        self.down = nn.ModuleList()
        for i, m in enumerate(c.channel_mult):
            blocks, attns = [], []
            for _ in range(n):
                blocks.append(ResBlock(ch, c.channels * m, emb, g, c.dropout))
                ch = c.channels * m
                attns.append(attn(ch, size))
                self._skip_shapes.append((ch, size))
            self.down.append(Level(blocks, attns, Downsample(ch) if i < last else None))
            if i < last:
                size //= 2
                self._skip_shapes.append((ch, size))
        self.mid_channels = ch
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, g, c.dropout), SelfAttention(ch, c.heads_at(ch), g),
                                  ResBlock(ch, ch, emb, g, c.dropout)])
        skip_chs = [s[0] for s in self._skip_shapes]
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(c.channel_mult))):
            blocks, attns = [], []
            for _ in range(n + 1):
                blocks.append(ResBlock(ch + skip_chs.pop(), c.channels * m, emb, g, c.dropout))
                ch = c.channels * m
                attns.append(attn(ch, size))
            self.up.append(Level(blocks, attns, Upsample(ch) if i > 0 else None))
            size *= 2
        self.out = nn.Sequential(nn.GroupNorm(g, ch), nn.SiLU(), zero_(nn.Conv2d(ch, c.out_channels, 3, padding=1)))
        # built last, so every other weight draws the same initial values with or without it; the zero last
        # layer makes a student built from a teacher's weights equal the teacher for every w (Meng et al. 2023)
        self.guidance_embed = nn.Sequential(nn.Linear(c.channels, emb), nn.SiLU(), zero_(nn.Linear(emb, emb))) \
            if c.guidance_embed else None

    def skip_shapes(self) -> list[tuple[int, int]]:
        """(channels, resolution at image_size) of every skip tensor that encode() returns, in order."""
        return list(self._skip_shapes)

    def embed(self, t: torch.Tensor, y: torch.Tensor | None = None, text: torch.Tensor | None = None,
              w: torch.Tensor | None = None, class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Time (+ class or text, + guidance weight) embedding (B, 4*channels) for timesteps t (B,), labels y (B,) or
        None (= null), text embeddings (B, text_dim) or None (= zeros, the empty prompt) and, on a guidance_embed
        UNet only (where it is required), the CFG weight w (B,)."""
        c = self.config
        t = torch.as_tensor(t, device=self.conv_in.weight.device).reshape(-1)
        emb = self.time_embed(timestep_embedding(t * (1000.0 / c.num_train_timesteps), c.channels))
        w = self._check_w(w, t.shape[0])
        if w is not None:  # sinusoids of w·GUIDANCE_EMBED_SCALE, as t's (Meng et al. 2023)
            emb = emb + self.guidance_embed(timestep_embedding(w.float() * GUIDANCE_EMBED_SCALE, c.channels))
        if self.class_embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), c.num_classes, dtype=torch.long, device=t.device)
            label = self.class_embed(y)
            if class_embedding is not None:  # CADS's annealed embedding, in the rows that ask for a class
                check(tuple(class_embedding.shape) == tuple(label.shape),
                      f"class_embedding must be {tuple(label.shape)} (one class embedding per image), got "
                      f"{tuple(class_embedding.shape)}")
                label = torch.where((y == c.num_classes)[:, None], label, class_embedding.to(label.dtype))
            emb = emb + label
        if self.text_embed is not None:
            if text is None:
                text = torch.zeros(t.shape[0], c.text_dim, device=emb.device)
            emb = emb + self.text_embed(text.to(emb.dtype))
        return emb

    def encode(self, x: torch.Tensor, emb: torch.Tensor,
               hint_features: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run conv_in (plus a ControlNet's encoded hint, if given) and the encoder levels; return the last
        feature map and every skip tensor."""
        h = self.conv_in(x)
        if hint_features is not None:
            h = h + hint_features
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        return h, skips

    def middle(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Run the bottleneck: residual block, self-attention, residual block."""
        return self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Run the decoder, consuming skips from the end, then the output head."""
        skips = list(skips)
        for level in self.up:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(cat_channels(h, skips.pop()), emb))
            if level.resample is not None:
                h = level.resample(h)
        return self.out(h)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None,
                down_residuals: list[torch.Tensor] | None = None,
                mid_residual: torch.Tensor | None = None, text: torch.Tensor | None = None,
                w: torch.Tensor | None = None, class_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Prediction (B, out_channels, H, W) for x (B, in_channels, H, W); residuals come from a ControlNet;
        text: (B, text_dim) prompt embeddings of a text-conditioned UNet (None = the empty prompt); w: (B,) CFG
        weights of a guidance-distilled UNet (guidance_embed=True; required there, refused elsewhere)."""
        kw = {} if w is None else {"w": w}
        if class_embedding is not None:  # replaces the label's embedding where y is not ∅ (CADS)
            kw["class_embedding"] = class_embedding
        if text is not None or self.text_embed is not None:
            kw["text"] = self._check_text(text, x.shape[0])
        return forward_with_residuals(self, x, t, y, down_residuals, mid_residual, **kw)

    def _check_w(self, w, B: int) -> torch.Tensor | None:
        """w must be a float (B,) tensor of finite CFG weights on a guidance_embed UNet, and None elsewhere."""
        if self.guidance_embed is None:
            check(w is None, "this UNet takes no guidance weight w (guidance_embed=False): drop w= / cond['w'], or "
                             "use a guidance-distilled student made by 'guidekit distill'")
            return None
        check(w is not None, "this UNet is a guidance-distilled student (guidance_embed=True) and needs its CFG "
                             "weight: pass w=torch.full((B,), w) (cond['w'] through ModelDenoiser), w = 0 for the "
                             "plain conditional model")
        check(isinstance(w, torch.Tensor) and w.is_floating_point() and tuple(w.shape) == (B,),
              f"w must be a float tensor of shape ({B},) (one CFG weight per image), got {_shape(w)}")
        if not tracing() and not bool(torch.isfinite(w).all()):  # the message (a sync) is built only on failure
            check(False, f"w must hold finite CFG weights, got {w.tolist()[:8]}")
        return w.to(self.conv_in.weight.device)

    def _check_text(self, text, B: int) -> torch.Tensor | None:
        """text must be a float (B, text_dim) tensor, and only for a text-conditioned UNet."""
        c = self.config
        if text is None:
            return None
        check(c.text_dim > 0, "this UNet takes no text prompt (text_dim=0): drop --prompt, or use a model trained "
                              "with 'guidekit train --captions'")
        check(isinstance(text, torch.Tensor) and text.is_floating_point() and tuple(text.shape) == (B, c.text_dim),
              f"text must be a float tensor of shape ({B}, {c.text_dim}), got {_shape(text)}")
        return text

    def drop_decoder(self) -> "UNet":
        """Delete the decoder and output head in place (a ControlNet's copy keeps only the encoder half)."""
        del self.up, self.out
        return self

    def _check_inputs(self, x, t, y) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate x, t, y; return t as a float/int tensor (B,) and y as int64 (B,) or None."""
        c = self.config
        t = check_x_and_t(x, t, c.in_channels, 2 ** (len(c.channel_mult) - 1))
        if y is None:
            return t, None
        check_labels(y, x.shape[0])
        if tracing():  # CUDA-graph capture or torch.compile: value checks would sync; they ran eagerly first
            return t, (y.long() if c.num_classes else None)
        if c.num_classes == 0:
            if not bool((y == 0).all()):  # the message (a sync) is built only on failure
                check(False, f"this UNet is unconditional (num_classes=0): pass y=None, got labels {y.tolist()[:8]}")
            return t, None
        if not bool(((y >= 0) & (y <= c.num_classes)).all()):
            check(False, f"y labels must be in [0, {c.num_classes}] ({c.num_classes} = null), got {y.tolist()[:8]}")
        return t, y.long()


def forward_with_residuals(net: nn.Module, x: torch.Tensor, t, y, down_residuals, mid_residual,
                           **embed_kwargs) -> torch.Tensor:
    """The backbone protocol's forward: embed, encode, middle (+ mid_residual), skips (+ down_residuals), decode."""
    t, y = net._check_inputs(x, t, y)
    emb = net.embed(t, y, **embed_kwargs)
    h, skips = net.encode(x, emb)
    h = net.middle(h, emb)
    if mid_residual is not None:
        check(isinstance(mid_residual, torch.Tensor) and mid_residual.shape == h.shape,
              f"mid_residual must have shape {tuple(h.shape)}, got {_shape(mid_residual)}")
        h = h + mid_residual
    if down_residuals is not None:
        check(len(down_residuals) == len(skips),
              f"down_residuals needs {len(skips)} tensors (one per skip_shapes() entry), got {len(down_residuals)}")
        for i, (s, r) in enumerate(zip(skips, down_residuals)):
            check(isinstance(r, torch.Tensor) and r.shape == s.shape,
                  f"down_residuals[{i}] must have shape {tuple(s.shape)}, got {_shape(r)}")
        skips = [s + r for s, r in zip(skips, down_residuals)]
    return net.decode(h, skips, emb)


def check_x_and_t(x, t, in_channels: int, factor: int, floating: bool = False) -> torch.Tensor:
    """Validate x (B, in_channels, H, W) (a float tensor if floating) with H, W divisible by factor and t; return
    t as a (B,) tensor."""
    check(isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == in_channels,
          f"x must be a (B, {in_channels}, H, W) tensor, got {_shape(x)}")
    check(not floating or x.is_floating_point(),
          f"x must be a float tensor (images in [-1, 1] plus noise), got {x.dtype}")
    B = x.shape[0]
    check(x.shape[2] % factor == 0 and x.shape[3] % factor == 0,
          f"x height and width must be divisible by {factor}, got {tuple(x.shape[2:])}; resize or pad x")
    t = torch.as_tensor(t, device=x.device)
    check(not t.is_complex() and t.dtype != torch.bool, f"t must be a float or integer tensor, got {t.dtype}")
    check(t.dim() == 0 or (t.dim() == 1 and t.shape[0] in (1, B)),
          f"t must be a scalar or have shape ({B},) to match x, got {tuple(t.shape)}")
    return t.reshape(-1).expand(B)


def tracing() -> bool:
    """True while a CUDA graph is being captured or torch.compile traces: no data-dependent checks then."""
    capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    return capturing or torch.compiler.is_compiling()


def check_labels(y, B: int) -> None:
    """y must be an integer tensor of shape (B,)."""
    check(isinstance(y, torch.Tensor) and y.shape == (B,) and not y.is_floating_point()
          and not y.is_complex() and y.dtype != torch.bool,
          f"y must be an integer tensor of shape ({B},), got {_shape(y)}")


def _shape(v) -> str:
    """Describe v for an error message: its shape if a tensor, else its type."""
    return str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__
