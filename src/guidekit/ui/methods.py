"""One function per UI method: (model, params, class, arrays, device, progress) → (images, inputs, info).

Each mirrors its experiments/ counterpart (sample_guided, control_samples, edit_guided, inpaint_guided; tests check
they agree) but calls the sampling functions directly so every move of the trajectory reports progress.
"""

from __future__ import annotations

import torch

from guidekit.diffusion import NULL
from guidekit.errors import check
from guidekit.experiments.generation import Guidance, guided_denoiser
from guidekit.sampling import generate
from guidekit.sampling.steps import make_step
from guidekit.ui.inputs import channels_last, known_mask, model_image, need


def reporter(progress, moves: int, what: str):
    """A sampling-loop callback that reports (fraction done, text) after each of `moves` moves."""
    if progress is None:
        return None
    return lambda info: progress(min(1.0, (info.i + 1) / moves), f"{what}: {info.i + 1}/{moves}")


def _seeds(p) -> list[int]:
    return list(range(p.seed, p.seed + p.n))


def _labels(model, y: int, n: int) -> torch.Tensor:
    """y for every image on a class-conditional model, ∅ on an unconditional one."""
    return torch.full((n,), y if model.net.config.num_classes > 0 else NULL, dtype=torch.long)


def _cfg(model, y: int, p) -> Guidance:
    """CFG at weight w; ∅ against ∅ changes nothing, so the null class (or the empty prompt) runs without it."""
    active = bool(p.prompt) if model.takes_text else y != NULL
    return Guidance(w=p.w if active else 0.0)


def _cond(model, y: int, p) -> dict:
    """The condition: the prompt's embedding (and the negative prompt's) on a text model, else class labels."""
    from guidekit.experiments.generation import prompt_cond

    if model.takes_text:
        return prompt_cond(model, [p.prompt] * p.n, p.negative_prompt or None)
    return {"y": _labels(model, y, p.n)}


def _generate(model, guidance, p, cond, device, progress, what):
    c = model.net.config
    moves = len(model.schedule.timesteps(p.steps)) - 1
    return generate(guided_denoiser(model, guidance), model.schedule, (c.in_channels, c.image_size, c.image_size),
                    _seeds(p), cond, sampler=p.sampler, steps=p.steps, device=device,
                    callback=reporter(progress, moves, what))


def sample(model, p, y, image, mask, sketch, device, progress):
    """Plain sampling of class y under classifier-free guidance w (Ho & Salimans 2021)."""
    guidance = _cfg(model, y, p)
    images = _generate(model, guidance, p, _cond(model, y, p), device, progress, "sampling")
    return images, {}, {"w": guidance.w}


def classifier(model, p, y, image, mask, sketch, device, progress):
    """Classifier guidance toward y (Dhariwal & Nichol 2021) with a noise-aware classifier."""
    from guidekit.ui.service import load_classifier

    check(not model.takes_text, f"{model.path} is text-conditioned: classifier guidance needs a class model (or "
                              f"use the sample method with a prompt)")
    check(y != NULL, "classifier guidance steers toward a class: choose one (not null)")
    clf = load_classifier(p.classifier, model, device)
    conditional = model.net.config.num_classes > 0
    base_null = p.base_null and conditional
    w = 0.0 if base_null else _cfg(model, y, p).w
    guidance = Guidance(w=w, classifier=clf, classifier_w=p.classifier_w, base_null=base_null)
    images = _generate(model, guidance, p, {"y": torch.full((p.n,), y)}, device, progress, "classifier guidance")
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
    from guidekit.experiments.control import condition_of, controlled, extract_hints, hint_image, join_hints
    from guidekit.ui.service import load_controlnet

    cn = load_controlnet(p.controlnet, model, device)
    drawing = need(sketch, "the ControlNet's hint", "draw white strokes on the black canvas or upload an image")
    size, channels = model.net.config.image_size, cn.net.config.hint_channels
    extract = extracts(p, image)
    if extract:
        hint = extract_hints(condition_of(cn), model_image(drawing, size, model.net.config.in_channels,
                                                           "drawing", p.invert), p.seed)
    else:
        hint = (model_image(drawing, size, channels, "drawing", p.invert) + 1) / 2
    steered, cond = model, _cond(model, y, p)
    if p.control_scale > 0:  # scale 0 is the base model itself, as in control_samples
        steered = controlled(model, [cn], p.control_scale)
        cond["hint"] = join_hints([hint], [cn.net], p.n)
    guidance = _cfg(model, y, p)
    images = _generate(steered, guidance, p, cond, device, progress, "ControlNet")
    shown = hint_image(hint[0], model.net.config.in_channels)[None]
    return images, {"hint": shown}, {"controlnet": p.controlnet, "condition": cn.condition, "extract_hint": extract,
                                     "control_scale": p.control_scale, "w": guidance.w}


def sdedit(model, p, y, image, mask, sketch, device, progress):
    """SDEdit (Meng et al. 2022): noise the drawing to level t0, then denoise it."""
    from guidekit.experiments.sdedit import faithfulness
    from guidekit.sampling.sdedit import sdedit as run, sdedit_levels

    c = model.net.config
    drawing = need(sketch, "the SDEdit guide", "draw on the canvas (light garment on black) or upload an image")
    guide = model_image(drawing, c.image_size, c.in_channels, "guide", p.invert)
    guidance = _cfg(model, y, p)
    moves = len(sdedit_levels(model.schedule, p.t0, p.steps))
    images = run(guided_denoiser(model, guidance), model.schedule, guide, p.t0, _cond(model, y, p),
                 make_step(p.sampler, model.schedule), _seeds(p), p.steps, device=device,
                 callback=reporter(progress, moves, "SDEdit"))
    return images, {"guide": guide}, {"t0": p.t0, "w": guidance.w, **faithfulness(images, guide)}


def repaint(model, p, y, image, mask, sketch, device, progress):
    """RePaint (Lugmayr et al. 2022): regenerate the unknown pixels (mask 0) of the image."""
    from guidekit.masks import check_mask
    from guidekit.sampling.repaint import inpaint, repaint_levels

    c = model.net.config
    x0 = model_image(need(image, "the image to inpaint", "upload one or load a test image"), c.image_size,
                     c.in_channels)
    m = known_mask(need(mask, "the mask", "paint the region to regenerate over the image"), c.image_size)
    check(bool((m == 0).any()), "nothing to inpaint: the painted region vanished at the model's resolution; paint "
                                "a larger region")
    check(bool((m == 1).any()), "the painted region covers the whole image: that is plain sampling; leave part of "
                                "the image unpainted")
    m = check_mask(m, x0)
    guidance = _cfg(model, y, p)
    levels = repaint_levels(model.schedule.timesteps(p.steps), p.jump_length, p.jump_n_sample)
    images, nfe = inpaint(guided_denoiser(model, guidance), model.schedule, x0, m, _cond(model, y, p),
                          p.sampler, _seeds(p), p.steps, p.jump_length, p.jump_n_sample, device=device,
                          callback=reporter(progress, len(levels) - 1, "RePaint"))
    return images, {"masked": x0 * m, "mask": m * 2 - 1}, {
        "w": guidance.w, "jump_length": p.jump_length, "jump_n_sample": p.jump_n_sample, "nfe": nfe,
        "known_fraction": round(float(m.mean()), 4)}


RUNNERS = {"sample": sample, "classifier": classifier, "controlnet": controlnet, "sdedit": sdedit,
           "repaint": repaint}
