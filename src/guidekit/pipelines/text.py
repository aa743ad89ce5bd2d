"""Prompts of a text-conditioned model as the cond its denoiser takes (Ho & Salimans 2021 CFG with prompts)."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check


def prompt_cond(model: LoadedModel, prompts: list[str], negative: str | list[str] | None = None,
                encoder=None) -> dict[str, torch.Tensor]:
    """cond {"text"[, "text_negative"]} of a text-conditioned model for prompts (one per image) and a negative prompt
    (one, or one per image) that replaces ∅ in CFG. A model trained here embeds them with the frozen sentence encoder
    ((N, D); "" is ∅, zeros); a latent pipeline with its own CLIP text encoder ((N, L, D)), whose ∅ is the empty
    prompt's embedding, so its negative is always given ("" without --negative-prompt, as its pipelines do)."""
    from guidekit.diffusion.denoiser import NEGATIVE_TEXT, TEXT
    from guidekit.text.encoder import ENCODER_NAME, shared_encoder

    check(model.takes_text,
          f"{model.path} takes no text prompt: it was trained on class labels (use --class), or unconditionally")
    if model.prompts is not None:
        encoder, negative = model.prompts, "" if negative is None else negative
    else:
        meta = model.text or {}
        check(meta.get("encoder") == ENCODER_NAME, f"{model.path} was trained with text encoder "
                                                   f"{meta.get('encoder')!r}; guidekit encodes prompts with "
                                                   f"{ENCODER_NAME} only")
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


def with_prompt(model: LoadedModel, cond: dict | None, n: int) -> dict:
    """cond, with the empty prompt ∅ for every row where a latent text model is given no prompt (its UNet always
    cross-attends to one); other models' cond unchanged."""
    from guidekit.diffusion.denoiser import TEXT

    cond = dict(cond or {})
    if model.prompts is not None and TEXT not in cond:
        cond.update(prompt_cond(model, [""] * n))
    return cond
