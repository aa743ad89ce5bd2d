"""Sampling a loaded model under guidance: the one path used by `sample`, `eval` and `sweep`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.guidance import ClassifierFreeGuidance, ClassifierGuidance, CleanClassifierGuidance, ClipX0
from guidekit.sampling import generate


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
    texted = model.takes_text
    check(guidance.w == 0 or conditional or texted,
          f"w = {guidance.w}: classifier-free guidance needs a class-conditional (or text-conditioned) model, and "
          f"this one is unconditional; use w = 0")
    check(not (texted and guidance.classifier is not None),
          "classifier guidance needs class labels, and this model is text-conditioned; guide it with --w")
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
    bad = int((~torch.isfinite(images.flatten(1))).any(1).sum())
    check(bad == 0, f"{bad} of {len(images)} samples contain NaN/inf: the network's outputs are not finite (broken "
                    f"weights, or an fp16 overflow: try --precision fp32); reload the checkpoint or re-train it")
    return images


def load_guiding_classifier(path: str, model: LoadedModel, device, clean: bool = False) -> torch.nn.Module:
    """A noise-aware classifier folder (schedule checked against the model), or for clean=True an evaluator."""
    if clean:
        from guidekit.checkpoints import load_evaluator

        net = load_evaluator(None if path == "evaluator" else path, device)
        net.class_names = getattr(net.config, "class_names", None)
        return net
    from guidekit.checkpoints import load_classifier

    loaded = load_classifier(path, device)
    check(torch.allclose(loaded.schedule.alpha_bar_table, model.schedule.alpha_bar_table),
          f"the classifier {path} was trained on another noise schedule than the model; retrain it with "
          f"'guidekit train-classifier --like MODEL'")
    check(model.class_names is None or loaded.class_names is None or loaded.class_names == model.class_names,
          f"the classifier's classes {loaded.class_names} differ from the model's {model.class_names}")
    loaded.net.class_names = loaded.class_names
    return loaded.net.eval()


def prompt_cond(model: LoadedModel, prompts: list[str], negative: str | list[str] | None = None,
                encoder=None) -> dict[str, torch.Tensor]:
    """cond {"text": (N, D)[, "text_negative": (N, D)]} of a text-conditioned model for prompts (one per image) and
    a negative prompt (one, or one per image) that replaces ∅ in CFG; "" is the empty prompt ∅ (zeros)."""
    from guidekit.diffusion.denoiser import NEGATIVE_TEXT, TEXT
    from guidekit.text.encoder import ENCODER_NAME, shared_encoder

    meta = model.text or {}
    check(model.takes_text,
          f"{model.path} takes no text prompt: it was trained on class labels (use --class), or unconditionally")
    check(meta.get("encoder") == ENCODER_NAME, f"{model.path} was trained with text encoder {meta.get('encoder')!r}; "
                                               f"guidekit encodes prompts with {ENCODER_NAME} only")
    encoder = encoder or shared_encoder()
    cond = {TEXT: encoder.encode(prompts)}
    if negative is not None:
        negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        check(len(negative) == len(prompts), f"{len(negative)} negative prompts for {len(prompts)} prompts")
        cond[NEGATIVE_TEXT] = encoder.encode(negative)
    return cond


def class_prompt_cond(model: LoadedModel, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """cond naming each image's Fashion-MNIST class on a text model (class_prompt): a sweep's class protocol run with
    prompts instead of labels."""
    from guidekit.text.captions import class_prompts

    return prompt_cond(model, class_prompts([int(y) for y in labels.tolist()]))
