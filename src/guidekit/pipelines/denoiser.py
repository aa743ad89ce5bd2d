"""The guidance stack of one call: ModelDenoiser → CFG → classifier guidance → x̂0 clipping."""

from __future__ import annotations

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.guidance import ClassifierFreeGuidance, ClassifierGuidance, CleanClassifierGuidance, ClipX0
from guidekit.pipelines.settings import Guidance


def guided_denoiser(model: LoadedModel, guidance: Guidance, clip_x0: bool = True):
    """ModelDenoiser → CFG (w > 0) → classifier guidance (if a classifier) → x̂0 clipping (pixel models)."""
    conditional = model.net.config.num_classes > 0
    texted = model.takes_text
    check(guidance.w == 0 or conditional or texted,
          f"w = {guidance.w}: classifier-free guidance needs a class-conditional (or text-conditioned) model, and "
          f"this one is unconditional; use w = 0")
    check(not (texted and guidance.classifier is not None and (guidance.clean or guidance.base_null)),
          "on a text model classifier guidance takes a noise-aware classifier (guidekit train-classifier --like "
          "MODEL) and conditions the model on the prompt (\"\" for ∅): drop --clean-classifier / --base-null")
    check(not (guidance.base_null and guidance.w > 0), "base_null hands the model ∅, so CFG (w > 0) cannot apply; "
                                                       "use w = 0 with --base-null")
    den = model.denoiser()
    if guidance.w > 0:
        den = ClassifierFreeGuidance(den, guidance.w)
    if guidance.classifier is not None:
        kind = CleanClassifierGuidance if guidance.clean else ClassifierGuidance
        den = kind(den, guidance.classifier, model.schedule, guidance.classifier_w,
                   condition_model="prompt" if texted else conditional and not guidance.base_null)
    # x̂0 clipping keeps pixels in [-1, 1]; latents have no such range, so a latent model's x̂0 is never clipped
    return ClipX0(den, model.schedule) if clip_x0 and model.latent is None else den


def load_guiding_classifier(path: str, model: LoadedModel, device, clean: bool = False) -> torch.nn.Module:
    """A noise-aware classifier folder (schedule checked against the model), or for clean=True an evaluator."""
    if clean:
        from guidekit.checkpoints import load_evaluator

        net = load_evaluator(None if path == "evaluator" else path, device)
        net.class_names = getattr(net.config, "class_names", None)
        return net
    from guidekit.checkpoints import load_classifier

    loaded = load_classifier(path, device)
    c = loaded.net.config
    check((c.in_channels, c.image_size, c.image_size) == tuple(model.sample_shape),
          f"the classifier {path} reads {c.in_channels}×{c.image_size}² inputs, the model samples "
          f"{'×'.join(map(str, model.sample_shape))} {'latents' if model.latent is not None else 'images'}; train "
          f"one for it with 'guidekit train-classifier --like MODEL'")
    check(torch.allclose(loaded.schedule.alpha_bar_table, model.schedule.alpha_bar_table),
          f"the classifier {path} was trained on another noise schedule than the model; retrain it with "
          f"'guidekit train-classifier --like MODEL'")
    check(model.class_names is None or loaded.class_names is None or loaded.class_names == model.class_names,
          f"the classifier's classes {loaded.class_names} differ from the model's {model.class_names}")
    loaded.net.class_names = loaded.class_names
    return loaded.net.eval()
