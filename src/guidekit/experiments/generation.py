"""Sampling a loaded model under guidance: the one path used by `sample`, `eval` and `sweep`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from guidekit.errors import check
from guidekit.guidance import ClassifierFreeGuidance, ClassifierGuidance, CleanClassifierGuidance, ClipX0
from guidekit.sampling import generate
from guidekit.training.checkpoint import LoadedModel


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


def class_names(model: LoadedModel, guidance: Guidance) -> list[str] | None:
    """The requested classes' names: the model's, else (an unconditional model) the classifier's."""
    if model.class_names:
        return model.class_names
    return getattr(guidance.classifier, "class_names", None) if guidance.classifier is not None else None


def guided_denoiser(model: LoadedModel, guidance: Guidance, clip_x0: bool = True):
    """ModelDenoiser → CFG (w > 0) → classifier guidance (if a classifier) → x̂0 clipping."""
    conditional = model.net.config.num_classes > 0
    check(guidance.w == 0 or conditional,
          f"w = {guidance.w}: classifier-free guidance needs a class-conditional model, and this one is "
          f"unconditional; use w = 0")
    check(not (guidance.base_null and guidance.w > 0), "base_null hands the model ∅, so CFG (w > 0) cannot apply; "
                                                       "use w = 0 with --base-null")
    den = model.denoiser()
    if guidance.w > 0:
        den = ClassifierFreeGuidance(den, guidance.w)
    if guidance.classifier is not None:
        kind = CleanClassifierGuidance if guidance.clean else ClassifierGuidance
        den = kind(den, guidance.classifier, model.schedule, guidance.classifier_w,
                   condition_model=conditional and not guidance.base_null)
    return ClipX0(den, model.schedule) if clip_x0 else den


def sample_guided(model: LoadedModel, labels: torch.Tensor, seeds: list[int], guidance: Guidance,
                  settings: SamplerSettings, device: torch.device | str = "cpu", progress: bool = False,
                  cond: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [−1, 1] for labels[i] (NULL = ∅) from seeds[i]; checked finite.

    cond: further per-image conditions handed to the network (e.g. a ControlNet's "hint"), N rows each.
    """
    c = model.net.config
    images = generate(guided_denoiser(model, guidance, settings.clip_x0), model.schedule,
                      (c.in_channels, c.image_size, c.image_size), seeds, {"y": labels, **(cond or {})},
                      sampler=settings.sampler, steps=settings.steps, eta=settings.eta, spacing=settings.spacing,
                      device=device, progress=progress, batch_size=settings.batch_size)
    check(bool(torch.isfinite(images).all()), "the samples contain NaN/inf: the model weights are broken")
    return images


def load_guiding_classifier(path: str, model: LoadedModel, device, clean: bool = False) -> torch.nn.Module:
    """A noise-aware classifier folder (schedule checked against the model), or for clean=True an evaluator."""
    if clean:
        from guidekit.metrics.evaluator import load_evaluator

        net = load_evaluator(None if path == "evaluator" else path, device)
        net.class_names = getattr(net.config, "class_names", None)
        return net
    from guidekit.models.classifier import load_classifier

    loaded = load_classifier(path, device)
    check(torch.allclose(loaded.schedule.alpha_bar_table, model.schedule.alpha_bar_table),
          f"the classifier {path} was trained on another noise schedule than the model; retrain it with "
          f"'guidekit train-classifier --like MODEL'")
    check(model.class_names is None or loaded.class_names is None or loaded.class_names == model.class_names,
          f"the classifier's classes {loaded.class_names} differ from the model's {model.class_names}")
    loaded.net.class_names = loaded.class_names
    return loaded.net.eval()
