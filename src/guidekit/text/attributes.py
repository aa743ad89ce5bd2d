"""Attributes measured on images in [-1, 1] (dark/light, small/large, plain/patterned): captions from facts, for text CFG (Ho & Salimans 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from guidekit.errors import check

# attribute -> (word for a low value, word for a high value)
ATTRIBUTES = {"brightness": ("dark", "light"), "size": ("small", "large"), "texture": ("plain", "patterned")}
INK = -0.8  # a pixel belongs to the garment when above this (the Fashion-MNIST background is -1)
QUANTILES = (1 / 3, 1 / 2, 2 / 3)  # low / median / high cut points, per class


def garment_mask(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) float mask of garment pixels of images x (N, C, H, W) in [-1, 1] (channel mean above INK)."""
    check(isinstance(x, torch.Tensor) and x.dim() == 4, f"images must be (N, C, H, W), got {getattr(x, 'shape', x)}")
    return (x.float().mean(1, keepdim=True) > INK).float()


def brightness(x: torch.Tensor) -> torch.Tensor:
    """Mean intensity in [0, 1] over the garment's pixels (0 for an empty image): dark vs light."""
    v, m = (x.float().mean(1, keepdim=True) + 1) / 2, garment_mask(x)
    return (v * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp(min=1)


def size(x: torch.Tensor) -> torch.Tensor:
    """Fraction of the image covered by the garment, in [0, 1]: small vs large."""
    return garment_mask(x).mean((1, 2, 3))


def texture(x: torch.Tensor) -> torch.Tensor:
    """Texture energy: mean |v − 3×3 box blur of v| (v in [0, 1]) inside the garment eroded by one pixel, so the
    silhouette's edge does not count: plain vs patterned."""
    v = (x.float().mean(1, keepdim=True) + 1) / 2
    m = -F.max_pool2d(-garment_mask(x), 3, stride=1, padding=1)  # erosion
    hi = (v - F.avg_pool2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs()
    return (hi * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp(min=1)


MEASURES = {"brightness": brightness, "size": size, "texture": texture}


def measure(x: torch.Tensor, batch: int = 4096) -> dict[str, torch.Tensor]:
    """Every attribute's raw value (N,) for images x (N, C, H, W) in [-1, 1]."""
    parts = [{k: f(x[i:i + batch]) for k, f in MEASURES.items()} for i in range(0, len(x), batch)]
    return {k: torch.cat([p[k] for p in parts]) if parts else torch.zeros(0) for k in MEASURES}


@dataclass
class Thresholds:
    """Per-class (and overall, key "all") low / median / high cut points of each attribute, from training quantiles."""

    cuts: dict  # attribute -> {"all" | str(class index): [low, median, high]}

    @classmethod
    def fit(cls, values: dict[str, torch.Tensor], labels: torch.Tensor | None) -> "Thresholds":
        """Quantiles QUANTILES of the training set's measured values, per class and overall."""
        q = torch.tensor(QUANTILES, dtype=torch.float64)
        cuts = {}
        for k, v in values.items():
            v = v.double()
            check(len(v) > 0, "cannot fit attribute thresholds on an empty dataset")
            per = {"all": [round(float(a), 6) for a in torch.quantile(v, q)]}
            if labels is not None:
                for c in sorted(set(labels.tolist())):
                    per[str(c)] = [round(float(a), 6) for a in torch.quantile(v[labels == c], q)]
            cuts[k] = per
        return cls(cuts)

    def _cut(self, attr: str, cls_idx) -> list[float]:
        per = self.cuts[attr]
        return per.get(str(cls_idx), per["all"]) if cls_idx is not None and cls_idx >= 0 else per["all"]

    def levels(self, values: dict[str, torch.Tensor], labels: torch.Tensor | None) -> list[dict[str, str | None]]:
        """Per image: attribute -> 'low' (below the low cut), 'high' (above the high cut) or None (the middle third)."""
        n = len(next(iter(values.values())))
        out = []
        for i in range(n):
            c = int(labels[i]) if labels is not None else None
            d = {}
            for k in ATTRIBUTES:
                lo, _, hi = self._cut(k, c)
                v = float(values[k][i])
                d[k] = "low" if v < lo else "high" if v > hi else None
            out.append(d)
        return out

    def side(self, attr: str, values: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(N,) bool: value above the class median (the 'high' word's side), for adherence."""
        med = torch.tensor([self._cut(attr, None if labels is None else int(c))[1]
                            for c in (labels if labels is not None else [None] * len(values))])
        return values.double() > med.double()

    def to_dict(self) -> dict:
        return {"quantiles": list(QUANTILES), "ink": INK, "cuts": self.cuts}

    @classmethod
    def from_dict(cls, d: dict) -> "Thresholds":
        check(isinstance(d, dict) and isinstance(d.get("cuts"), dict) and set(d["cuts"]) == set(ATTRIBUTES),
              f"attribute thresholds must hold cuts for {sorted(ATTRIBUTES)}; the model's config.json is damaged")
        return cls(d["cuts"])


def adherence(x: torch.Tensor, wanted: list[dict[str, str]], classes: list[int | None],
              thresholds: Thresholds) -> dict[str, float | None]:
    """Fraction of images whose re-measured attribute lies on the requested side of its class median, per attribute
    and over all requested attributes ('all'); None where no prompt asked for the attribute."""
    return adherence_of(measure(x), wanted, classes, thresholds)


def adherence_of(values: dict[str, torch.Tensor], wanted: list[dict[str, str]], classes: list[int | None],
                 thresholds: Thresholds) -> dict[str, float | None]:
    """adherence from attributes already measured (measure(x)), e.g. sliced from one measurement of a larger set."""
    hits = {k: [] for k in ATTRIBUTES}
    for k in ATTRIBUTES:
        for i, w in enumerate(wanted):
            if w.get(k):
                med = thresholds._cut(k, classes[i])[1]
                hits[k].append((float(values[k][i]) > med) == (w[k] == "high"))
    out = {k: (sum(h) / len(h) if h else None) for k, h in hits.items()}
    every = [b for h in hits.values() for b in h]
    out["all"] = sum(every) / len(every) if every else None
    return out
