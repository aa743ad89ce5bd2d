"""What a pipeline call runs with: the sampler settings and the guidance stack to build."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class SamplerSettings:
    """How to integrate: sampler, model evaluations, DDIM η, step spacing, x̂0 clipping, batch size."""

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    spacing: str = "trailing"
    clip_x0: bool = True
    batch_size: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Guidance:
    """Which guidance to stack: CFG weight w, a classifier with its weight, and whether the model sees y."""

    w: float = 0.0  # classifier-free guidance weight (Ho & Salimans 2021)
    classifier: torch.nn.Module | None = None  # noise-aware p_φ(y|x_t,t), or a clean classifier when clean=True
    classifier_w: float = 0.0  # classifier guidance weight (Dhariwal & Nichol 2021)
    clean: bool = False  # the classifier sees x̂0 (not the paper's method)
    base_null: bool = False  # hand the model ∅: its null class is the unconditional base of classifier guidance

    def describe(self) -> dict:
        return {"w": self.w, "classifier_w": self.classifier_w if self.classifier is not None else None,
                "clean_classifier": self.clean, "base_null": self.base_null}
