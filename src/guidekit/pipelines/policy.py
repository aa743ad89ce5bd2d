"""The one place that decides what the network sees and the guidance weight when the user gives none."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.diffusion import NULL
from guidekit.pipelines.settings import Guidance


def conditional(model: LoadedModel) -> bool:
    """Whether the model takes a condition: class labels (with a null class) or a text prompt."""
    return model.net.config.num_classes > 0 or model.takes_text


def default_w(model: LoadedModel, unconditional: bool = False, classifier: bool = False,
              base_null: bool = False) -> float:
    """The paper's w when none is given: 1 on a class-conditional or text model asked for a class or a prompt;
    0 for a request of ∅ (CFG of ∅ against ∅ changes nothing), under classifier guidance (it guides on its own) and
    with base_null (the model is handed ∅)."""
    return 1.0 if conditional(model) and not (unconditional or classifier or base_null) else 0.0


def network_labels(model: LoadedModel, labels: torch.Tensor, guidance: Guidance) -> torch.Tensor:
    """cond["y"] of a call: the requested labels where a class-conditional model or a classifier reads them, ∅ where
    nothing does (an unconditional model, or base_null without a classifier: the class comes from elsewhere, e.g. a
    ControlNet hint). guided_denoiser hands the network itself ∅ under base_null."""
    reads = (model.net.config.num_classes > 0 and not guidance.base_null) or guidance.classifier is not None
    return labels if reads else torch.full_like(labels, NULL)


def class_names(model: LoadedModel, guidance: Guidance) -> list[str] | None:
    """The requested classes' names: the model's, else (an unconditional model) the classifier's."""
    if model.class_names:
        return model.class_names
    return getattr(guidance.classifier, "class_names", None) if guidance.classifier is not None else None
