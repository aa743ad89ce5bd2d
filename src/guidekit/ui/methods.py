"""One function per UI method: (model, params, class, arrays, device, progress) → (images, inputs, info).

Each turns the canvas into the model's inputs and calls the same pipeline as the command line (sample_guided,
control_samples, edit_guided, inpaint_guided), whose callback reports every move of the trajectory as progress.
"""

from __future__ import annotations

import torch

from guidekit.diffusion import NULL
from guidekit.errors import check
from guidekit.pipelines import (Guidance, SamplerSettings, condition_of, control_samples, edit_guided, extract_hints,
                                faithfulness, hint_image, inpaint_guided, prompt_cond, sample_guided)
from guidekit.pipelines.policy import default_w
from guidekit.ui.inputs import channels_last, known_mask, model_image, need


def reporter(progress, what: str):
    """A pipeline callback that reports (fraction done, text) after every move of the trajectory."""
    if progress is None:
        return None
    return lambda info: progress(min(1.0, (info.i + 1) / info.total), f"{what}: {info.i + 1}/{info.total}")


def _seeds(p) -> list[int]:
    return list(range(p.seed, p.seed + p.n))


def _labels(y: int, n: int) -> torch.Tensor:
    return torch.full((n,), y, dtype=torch.long)


def _cfg(model, y: int, p, device="cpu") -> Guidance:
    """CFG at the UI's weight w, or none where the policy gives none (a request of ∅: the null class, no prompt),
    combined by the UI's rule, rescale, interval, thresholding and CADS; autoguidance where a guide model is named."""
    from guidekit.ui.service import load_model

    unconditional = not p.prompt if model.takes_text else y == NULL
    bad = load_model(p.guide_model, device) if p.guide_model else None
    w = p.w if bad is not None or default_w(model, unconditional) > 0 else 0.0
    pair = w > 0 or p.guidance_rule == "cfgpp"
    interval = tuple(float(v) for v in p.guidance_interval.split(",")) if p.guidance_interval and pair else None
    return Guidance(w=w, rule=p.guidance_rule if pair else "cfg", rescale=p.rescale if pair else 0.0,
                    interval=interval, guide_model=bad, dynamic_threshold=0.995 if p.dynamic_threshold else None,
                    cads=(0.6, 0.9) if p.cads else None)


def _frontier(guidance: Guidance) -> dict:
    """The info of the methods after CFG that a request used."""
    return {k: v for k, v in guidance.describe().items() if k not in ("w", "classifier_w", "clean_classifier",
                                                                      "base_null")}


def _cond(model, p) -> dict:
    """A text model's prompt (and negative prompt) embeddings, else nothing beyond the labels."""
    if model.takes_text:
        return prompt_cond(model, [p.prompt] * p.n, p.negative_prompt or None)
    return {}


def _settings(p) -> SamplerSettings:
    """The UI's sampler, at its steps, for its few images in one batch."""
    return SamplerSettings(p.sampler, p.steps, batch_size=max(p.n, 1))


def sample(model, p, y, image, mask, sketch, device, progress):
    """Plain sampling of class y under classifier-free guidance w (Ho & Salimans 2021)."""
    guidance = _cfg(model, y, p, device)
    images = sample_guided(model, _labels(y, p.n), _seeds(p), guidance, _settings(p), device, cond=_cond(model, p),
                           callback=reporter(progress, "sampling"))
    return images, {}, {"w": guidance.w, **_frontier(guidance)}


def classifier(model, p, y, image, mask, sketch, device, progress):
    """Classifier guidance toward y (Dhariwal & Nichol 2021) with a noise-aware classifier."""
    from guidekit.ui.service import load_classifier

    check(not model.takes_text, f"{model.path} is text-conditioned: classifier guidance needs a class model (or "
                              f"use the sample method with a prompt)")
    check(y != NULL, "classifier guidance steers toward a class: choose one (not null)")
    clf = load_classifier(p.classifier, model, device)
    conditional = model.net.config.num_classes > 0
    base_null = p.base_null and conditional
    w = 0.0 if base_null else _cfg(model, y, p, device).w
    guidance = Guidance(w=w, classifier=clf, classifier_w=p.classifier_w, base_null=base_null)
    images = sample_guided(model, _labels(y, p.n), _seeds(p), guidance, _settings(p), device,
                           callback=reporter(progress, "classifier guidance"))
    return images, {}, {"classifier": p.classifier, "classifier_w": p.classifier_w, "base_null": base_null,
                        "w": guidance.w}


def extracts(p, image) -> bool:
    """Whether the ControlNet's hint is extracted from the canvas: p.extract_hint, else (None) by the canvas's
    origin: a picture under the strokes (a loaded or uploaded image) is a garment, strokes on the blank canvas are
    a drawing, which is the hint itself."""
    if p.extract_hint is not None:
        return p.extract_hint
    return image is not None and bool(channels_last(image, "canvas image", 1).max() > 0)


def controlnet(model, p, y, image, mask, sketch, device, progress):
    """ControlNet (Zhang et al. 2023): the drawing (white strokes on black) is the hint, or one is extracted from the
    canvas (a garment; see extracts)."""
    from guidekit.ui.service import load_controlnet

    cn = load_controlnet(p.controlnet, model, device)
    drawing = need(sketch, "the ControlNet's hint", "draw white strokes on the black canvas or upload an image")
    from guidekit.pipelines.control import hint_shape

    size = model.image_size
    channels = hint_shape(cn.net, size)[0]
    extract = extracts(p, image)
    if extract:
        hint = extract_hints(condition_of(cn), model_image(drawing, size, model.image_channels,
                                                           "drawing", p.invert), p.seed)
    else:
        hint = (model_image(drawing, size, channels, "drawing", p.invert) + 1) / 2
    guidance = _cfg(model, y, p, device)
    images = control_samples(model, [cn], [hint], _labels(y, p.n), _seeds(p), p.control_scale, _settings(p), device,
                             guidance, cond=_cond(model, p), callback=reporter(progress, "ControlNet"))
    shown = hint_image(hint[0], model.image_channels)[None]
    return images, {"hint": shown}, {"controlnet": p.controlnet, "condition": cn.condition, "extract_hint": extract,
                                     "control_scale": p.control_scale, "w": guidance.w,
                                     **_frontier(guidance)}


def sdedit(model, p, y, image, mask, sketch, device, progress):
    """SDEdit (Meng et al. 2022): noise the drawing to level t0, then denoise it."""
    drawing = need(sketch, "the SDEdit guide", "draw on the canvas (light garment on black) or upload an image")
    guide = model_image(drawing, model.image_size, model.image_channels, "guide", p.invert)
    guidance = _cfg(model, y, p, device)
    images = edit_guided(model, guide, _labels(y, p.n), _seeds(p), p.t0, guidance, _settings(p), device=device,
                         cond=_cond(model, p), callback=reporter(progress, "SDEdit"))
    return images, {"guide": guide}, {"t0": p.t0, "w": guidance.w, **_frontier(guidance),
                                   **faithfulness(images, guide)}


def repaint(model, p, y, image, mask, sketch, device, progress):
    """RePaint (Lugmayr et al. 2022): regenerate the unknown pixels (mask 0) of the image."""
    from guidekit.masks import check_mask

    x0 = model_image(need(image, "the image to inpaint", "upload one or load a test image"), model.image_size,
                     model.image_channels)
    m = known_mask(need(mask, "the mask", "paint the region to regenerate over the image"), model.image_size)
    check(bool((m == 0).any()), "nothing to inpaint: the painted region vanished at the model's resolution; paint "
                                "a larger region")
    check(bool((m == 1).any()), "the painted region covers the whole image: that is plain sampling; leave part of "
                                "the image unpainted")
    m = check_mask(m, x0)
    guidance = _cfg(model, y, p, device)
    images, nfe = inpaint_guided(model, x0, m, _labels(y, p.n), _seeds(p), guidance, _settings(p), p.jump_length,
                                 p.jump_n_sample, device, cond=_cond(model, p), callback=reporter(progress, "RePaint"))
    return images, {"masked": x0 * m, "mask": m * 2 - 1}, {
        "w": guidance.w, **_frontier(guidance), "jump_length": p.jump_length, "jump_n_sample": p.jump_n_sample, "nfe": nfe,
        "known_fraction": round(float(m.mean()), 4)}


RUNNERS = {"sample": sample, "classifier": classifier, "controlnet": controlnet, "sdedit": sdedit,
           "repaint": repaint}
