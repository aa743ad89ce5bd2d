"""Noise-aware classifier p_φ(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021).

The network is the encoder half of guidekit's UNet (time embedding, conv_in, down levels, middle block),
conditioned on the timestep only, followed by GroupNorm-SiLU, global pooling and a linear head. Its folders
(config.json + model.safetensors) are read and written by guidekit.checkpoints.classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from guidekit.errors import check, check_config_keys
from guidekit.models.layers import zero_
from guidekit.models.unet import UNet, UNetConfig, check_x_and_t

POOLS = ("attention", "avg")


@dataclass
class ClassifierConfig:
    """Shape of a NoisyClassifier; stored in its config.json so the network can be rebuilt from the folder.

    `unet` gives the trunk (its encoder and middle block are used; its decoder-only fields out_channels and
    prediction_type are ignored). Its num_classes must be 0: the classifier is conditioned on t only.
    """

    unet: UNetConfig  # trunk shape; unet.num_classes must be 0
    num_classes: int  # number of labels the head predicts (>= 2)
    pool: str = "attention"  # global pooling: "attention" (learned positions, query = mean token) or "avg"

    def __post_init__(self):
        """Accept a dict (e.g. from JSON) for the trunk."""
        if isinstance(self.unet, dict):
            self.unet = UNetConfig.from_dict(self.unet)

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    @property
    def in_channels(self) -> int:
        return self.unet.in_channels

    @property
    def num_train_timesteps(self) -> int:
        return self.unet.num_train_timesteps

    def to_dict(self) -> dict:
        """JSON-serializable dict: {"unet": {...}, "num_classes": K, "pool": ...}."""
        return {"unet": self.unet.to_dict(), "num_classes": self.num_classes, "pool": self.pool}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        """Rebuild and validate a config from to_dict() output; every field must be present."""
        check_config_keys(cls, d)
        check(isinstance(d["unet"], dict), f"ClassifierConfig 'unet' must be a dict, got {type(d['unet']).__name__}")
        return cls(UNetConfig.from_dict(d["unet"]), d["num_classes"], d["pool"]).validate()

    @classmethod
    def from_preset(cls, name: str, num_classes: int, pool: str = "attention", **unet_overrides) -> "ClassifierConfig":
        """A classifier on a UNet preset ('tiny', 'small', 'base'), e.g. from_preset("small", 10, image_size=32).

        unet_overrides replace UNetConfig fields (image_size, in_channels, channels, ...); the trunk's own
        num_classes is always 0.
        """
        unet = UNetConfig.preset(name, num_classes=0, **unet_overrides)
        return cls(unet, num_classes, pool).validate()

    def validate(self) -> "ClassifierConfig":
        """Raise GuidekitError naming the first bad field; return self when all are fine."""
        check(isinstance(self.unet, UNetConfig),
              f"ClassifierConfig.unet must be a UNetConfig, got {type(self.unet).__name__}; "
              f"use ClassifierConfig.from_preset('small', num_classes=10)")
        self.unet.validate()
        check(self.unet.num_classes == 0,
              f"ClassifierConfig.unet.num_classes must be 0 (the classifier is conditioned on t only), got "
              f"{self.unet.num_classes}; put the label count in ClassifierConfig.num_classes instead")
        k = self.num_classes
        check(isinstance(k, int) and not isinstance(k, bool) and k >= 2,
              f"ClassifierConfig.num_classes must be an integer >= 2, got {k!r}")
        check(self.pool in POOLS, f"ClassifierConfig.pool must be one of {POOLS}, got {self.pool!r}")
        return self


class UNetEncoder(UNet):
    """A UNet without its decoder and output head: time embedding, conv_in, down levels and middle block."""

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        del self.up, self.out  # no unused parameters

    def decode(self, *args, **kwargs):
        raise TypeError("UNetEncoder has no decoder")

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (B, mid_channels, H/2**(L-1), W/2**(L-1)) of x under embedding emb."""
        h, _ = self.encode(x, emb)
        return self.middle(h, emb)


class AttentionPool(nn.Module):
    """Pool a feature map to one vector: the mean token attends over [mean, pixels], with learned positions."""

    def __init__(self, ch: int, heads: int, size: int):
        super().__init__()
        self.heads, self.size = heads, size
        self.pos = nn.Parameter(torch.randn(size * size + 1, ch) * ch ** -0.5)
        self.q = nn.Linear(ch, ch)
        self.kv = nn.Linear(ch, 2 * ch)
        self.proj = nn.Linear(ch, ch)

    def positions(self, h: int, w: int) -> torch.Tensor:
        """Positional embeddings (1 + h*w, C), bilinearly resized when the map is not size x size."""
        if (h, w) == (self.size, self.size):
            return self.pos
        grid = self.pos[1:].T.reshape(1, -1, self.size, self.size)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([self.pos[:1], grid.reshape(grid.shape[1], h * w).T], 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C)."""
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + self.positions(H, W).to(tokens.dtype)
        k, v = self.kv(tokens).chunk(2, dim=-1)

        def heads(z):
            return z.reshape(B, z.shape[1], self.heads, C // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(tokens[:, :1])), heads(k), heads(v))
        return self.proj(out.transpose(1, 2).reshape(B, C))


class AvgPool(nn.Module):
    """Global average pooling (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class NoisyClassifier(nn.Module):
    """Logits (B, num_classes) of p(y | x_t, t) for a noisy image x_t and a timestep t in [0, T).

    t is in the schedule's scale (fractional allowed; -1 = clean is accepted too). Train it with
    guidekit.training.classifier_trainer.ClassifierTrainer; guidance.classifier.log_prob_grad guides with it.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        check(isinstance(config, ClassifierConfig),
              f"NoisyClassifier needs a ClassifierConfig, got {type(config).__name__}; "
              f"use ClassifierConfig.from_preset('tiny', num_classes=10)")
        self.config = c = config.validate()
        u = c.unet
        self.trunk = UNetEncoder(u)
        ch = self.trunk.mid_channels
        self.norm = nn.GroupNorm(u.norm_groups, ch)
        if c.pool == "attention":
            self.pool = AttentionPool(ch, u.heads_at(ch), u.image_size // 2 ** (len(u.channel_mult) - 1))
        else:
            self.pool = AvgPool()
        self.head = zero_(nn.Linear(ch, c.num_classes))  # uniform p(y) at initialization

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Logits (B, num_classes) for x (B, in_channels, H, W) and t (scalar or (B,), float or int)."""
        t = self._check_inputs(x, t)
        x = x.to(self.head.weight.dtype)  # e.g. float64 samples into a float32 network
        emb = self.trunk.embed(t)
        h = F.silu(self.norm(self.trunk(x, emb)))
        return self.head(self.pool(h))

    def _check_inputs(self, x, t) -> torch.Tensor:
        """Validate x and t; return t as a float tensor (B,) on x's device."""
        c = self.config.unet
        t = check_x_and_t(x, t, c.in_channels, 2 ** (len(c.channel_mult) - 1), floating=True).float()
        T = c.num_train_timesteps
        check(bool(((t >= -1) & (t < T)).all()),
              f"t must lie in [-1, {T}) (the schedule's timesteps), got {t.min().item()}..{t.max().item()}")
        return t

