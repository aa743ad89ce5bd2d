"""The Fashion-MNIST evaluator network: a small CNN whose features feed FID/KID/P&R and whose probabilities feed
IS/accuracy. Trained by guidekit.metrics.evaluator; its folders are read and written by guidekit.checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn

from guidekit.data.dataset import FASHION_MNIST_CLASSES
from guidekit.errors import check, check_config_keys

HEADS = ("flatten", "average")


@dataclass
class EvaluatorConfig:
    """Shape of an Evaluator; stored in config.json so the network can be rebuilt from its file."""

    in_channels: int = 1  # image channels (1 for Fashion-MNIST)
    image_size: int = 32  # square input size; the stride-2 stem and each stage but the last halve it
    widths: tuple = (32, 64, 128)  # channels of each stage (stage 1 runs at image_size / 2)
    depths: tuple = (1, 2, 2)  # conv-BN-ReLU blocks of each stage
    feature_dim: int = 256  # width of the penultimate features (after BN + ReLU)
    head: str = "flatten"  # flatten: last feature map -> linear -> features; average: 1x1 conv -> global average pool
    mirror: bool = True  # in eval mode, average the features of the image and of its left-right mirror
    num_classes: int = 10  # outputs of the linear classifier
    class_names: tuple = tuple(FASHION_MNIST_CLASSES)  # one name per class

    def __post_init__(self):
        """Accept lists (e.g. from JSON) for the tuple fields."""
        for k in ("widths", "depths", "class_names"):
            if isinstance(getattr(self, k), list):
                setattr(self, k, tuple(getattr(self, k)))

    def to_dict(self) -> dict:
        """JSON-serializable dict of every field (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> EvaluatorConfig:
        """Rebuild and validate a config from to_dict() output; every field must be present."""
        check_config_keys(cls, d)
        return cls(**d).validate()

    def validate(self) -> EvaluatorConfig:
        """Raise GuidekitError naming the first bad field; return self when all are fine."""
        def pos_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for k in ("in_channels", "image_size", "feature_dim", "num_classes"):
            v = getattr(self, k)
            check(pos_int(v), f"EvaluatorConfig.{k} must be a positive integer, got {v!r}")
        check(isinstance(self.widths, tuple) and len(self.widths) >= 1 and all(pos_int(w) for w in self.widths),
              f"EvaluatorConfig.widths must be a non-empty tuple of positive integers, got {self.widths!r}")
        check(isinstance(self.depths, tuple) and len(self.depths) == len(self.widths)
              and all(pos_int(d) for d in self.depths), f"EvaluatorConfig.depths must hold one positive integer "
              f"per stage ({len(self.widths)} stages), got {self.depths!r}")
        factor = 2 ** len(self.widths)
        check(self.image_size % factor == 0, f"EvaluatorConfig.image_size={self.image_size} must be divisible by "
                                             f"2**len(widths)={factor}; change image_size or use fewer stages")
        check(isinstance(self.mirror, bool), f"EvaluatorConfig.mirror must be true or false, got {self.mirror!r}")
        check(self.head in HEADS, f"EvaluatorConfig.head must be one of {HEADS}, got {self.head!r}")
        check(isinstance(self.class_names, tuple) and len(self.class_names) == self.num_classes
              and all(isinstance(n, str) for n in self.class_names),
              f"EvaluatorConfig.class_names must hold num_classes={self.num_classes} strings, got {self.class_names!r}")
        return self


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Evaluator(nn.Module):
    """4x4 stride-2 stem, conv-BN-ReLU stages joined by max-pooling, a feature layer (config.head), a classifier."""

    metric_tag = "FMNIST"  # a metrics.network.FeatureNetwork: metrics read FID-FMNIST, KID-FMNIST, IS-FMNIST
    has_requested_classes = True  # its probabilities are over the Fashion-MNIST classes: accuracy is measured

    def __init__(self, config: EvaluatorConfig | None = None):
        super().__init__()
        self.config = c = (config or EvaluatorConfig()).validate()
        layers = [conv_bn_relu(c.in_channels, c.widths[0], kernel=4, stride=2, padding=1)]
        cin = c.widths[0]
        for i, (w, d) in enumerate(zip(c.widths, c.depths)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(d):
                layers.append(conv_bn_relu(cin, w))
                cin = w
        if c.head == "average":
            layers += [conv_bn_relu(cin, c.feature_dim, kernel=1, padding=0), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        else:
            side = c.image_size // 2 ** len(c.widths)
            layers += [nn.Flatten(), nn.Linear(cin * side * side, c.feature_dim, bias=False),
                       nn.BatchNorm1d(c.feature_dim), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c.feature_dim, c.num_classes)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        """Refuse anything but float (N, C, S, S) with the configured C and S; return x in channels-last layout."""
        c = self.config
        want = f"(N, {c.in_channels}, {c.image_size}, {c.image_size})"
        check(isinstance(x, torch.Tensor) and x.ndim == 4 and tuple(x.shape[1:]) == (c.in_channels, c.image_size,
              c.image_size), f"the evaluator needs images of shape {want} in [-1, 1], got "
              f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; pad or resize them to "
              f"{c.image_size}x{c.image_size} (28x28 Fashion-MNIST: pad 2 px with -1)")
        check(x.is_floating_point(), f"the evaluator needs float images in [-1, 1], got {x.dtype}; "
                                     f"convert uint8 with x / 127.5 - 1")
        p = next(self.parameters())
        return x.to(p.device, p.dtype).contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim), non-negative (after BN + ReLU; mirror-averaged in eval mode)."""
        x = self._check(x)
        if not (self.config.mirror and not self.training):
            return self.body(x)
        f = self.body(torch.cat([x, x.flip(3)]))
        return (f[:len(x)] + f[len(x):]) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.classifier(self.features(x))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes): softmax of the logits."""
        return self.forward(x).softmax(dim=1)

    def features_and_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features(x) and probs(x) from one pass over the network."""
        f = self.features(x)
        return f, self.classifier(f).softmax(dim=1)
