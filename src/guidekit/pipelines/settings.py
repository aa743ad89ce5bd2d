"""What a pipeline call runs with: the sampler settings and the guidance stack to build."""

from __future__ import annotations

import math
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


RULES = ("cfg", "apg", "cfg-zero-star", "cfgpp")
"""How CFG (or autoguidance) combines its two predictions: guidekit.guidance's cfg_rule, APG, CFGZeroStar, CFGPlusPlus."""


@dataclass
class Guidance:
    """Which guidance to stack: CFG weight w and how its halves combine, autoguidance's guiding model, a classifier
    with its weight, the x̂0 thresholding, CADS, and whether the model sees y."""

    w: float = 0.0  # classifier-free guidance weight (Ho & Salimans 2021); autoguidance's w with guide_model
    classifier: torch.nn.Module | None = None  # noise-aware p_φ(y|x_t,t), or a clean classifier when clean=True
    classifier_w: float = 0.0  # classifier guidance weight (Dhariwal & Nichol 2021)
    clean: bool = False  # the classifier sees x̂0 (not the paper's method)
    base_null: bool = False  # hand the model ∅: its null class is the unconditional base of classifier guidance
    rule: str = "cfg"  # one of RULES; cfgpp reads w as its λ ∈ [0, 1]
    interval: tuple[float, float] | None = None  # guide only for σ in (lo, hi] (Kynkäänniemi et al. 2024)
    guide_model: object = None  # a LoadedModel: autoguidance's bad model in place of ∅ (Karras et al. 2024)
    apg_eta: float = 0.0  # APG's share of the parallel part (Sadat et al. 2024)
    apg_momentum: float = 0.0  # APG's momentum β (< 0 in the paper)
    apg_threshold: float = math.inf  # APG's norm cap r on the update
    rescale: float = 0.0  # CFG rescale φ (Lin et al. 2023); 0 = none
    zero_steps: int = 1  # CFG-Zero*'s zeroed first steps (rule cfg-zero-star)
    dynamic_threshold: float | None = None  # Imagen's percentile p in place of static clipping; None = static
    cads: tuple[float, float] | None = None  # CADS's (τ1, τ2) (Sadat et al. 2023); None = off
    cads_noise: float = 0.25  # CADS's noise scale s
    cads_psi: float = 1.0  # CADS's rescale mix ψ

    def describe(self) -> dict:
        out = {"w": self.w, "classifier_w": self.classifier_w if self.classifier is not None else None,
               "clean_classifier": self.clean, "base_null": self.base_null}
        if self.rule != "cfg":
            out["rule"] = self.rule
        if self.rule == "apg":
            out.update(apg_eta=self.apg_eta, apg_momentum=self.apg_momentum,
                       apg_threshold=None if math.isinf(self.apg_threshold) else self.apg_threshold)
        if self.rule == "cfg-zero-star":
            out["zero_steps"] = self.zero_steps
        for key in ("interval", "rescale", "dynamic_threshold", "cads"):
            value = getattr(self, key)
            if value not in (None, 0.0):  # an open-ended interval's σ_hi is written "inf" (JSON has no infinity)
                out[key] = [v if math.isfinite(v) else "inf" for v in value] if isinstance(value, tuple) else value
        if self.cads is not None:
            out.update(cads_noise=self.cads_noise, cads_psi=self.cads_psi)
        if self.guide_model is not None:
            out["guide_model"] = str(getattr(self.guide_model, "path", self.guide_model))
        return out
