"""The guidance stack of one call: ModelDenoiser → CFG or autoguidance (with its rule and interval) → CADS →
CFG-Zero*'s zeroed steps → classifier guidance → x̂0 clipping or dynamic thresholding; and the step that drives it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.diffusion.denoiser import NULL, CountedDenoiser, reset_state
from guidekit.diffusion.parameterization import eps_to_x0
from guidekit.errors import check
from guidekit.guidance import (APG, CADS, CFGPlusPlus, CFGPPStep, CFGZeroStar, ClassifierFreeGuidance,
                               ClassifierGuidance, CleanClassifierGuidance, ClipX0, DistilledGuidance, DynamicThreshold,
                               GuidanceInterval,
                               Rescale, ZeroInit)
from guidekit.guidance.autoguidance import Autoguidance
from guidekit.pipelines.settings import RULES, Guidance, SamplerSettings
from guidekit.sampling.steps import Step, make_step


class ClippedShare:
    """Denoiser → denoiser that records the share of the guided x̂0's pixels outside [−1, 1] (what clipping or
    thresholding will change), averaged over its calls: the over-saturation column of guidekit sweep guidance."""

    def __init__(self, denoiser, schedule):
        self.denoiser, self.schedule, self.outside, self.pixels = denoiser, schedule, 0.0, 0

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x, t, cond):
        eps = self.denoiser(x, t, cond)
        x0 = eps_to_x0(x, eps, self.schedule.alpha_bar(t.detach().cpu()))
        self.outside += float((x0.abs() > 1).sum())
        self.pixels += x0.numel()
        return eps

    @property
    def share(self) -> float:
        return self.outside / max(self.pixels, 1)


@dataclass
class Guided:
    """What a pipeline call integrates: the denoiser stack, the step, and the counters behind its NFE."""

    denoiser: object
    step: Step
    counters: list
    clipped: ClippedShare | None = None

    def nfe(self, n_images: int) -> float:
        """Network evaluations per image so far (a batched CFG pass of N images counts 2 per image)."""
        return sum(c.images for c in self.counters) / max(n_images, 1)


def class_embedder(model: LoadedModel):
    """labels → a guidekit UNet's class embedding (∅ → its null row), for CADS; None where the net has none."""
    net, k = model.net, model.net.config.num_classes
    table = getattr(getattr(net, "base", net), "class_embed", None)  # a ControlledUNet's base holds it
    if k == 0 or not isinstance(table, torch.nn.Embedding):
        return None
    return lambda y: table(torch.where(y == NULL, torch.full_like(y, k), y).to(table.weight.device))


def check_guide_model(model: LoadedModel, bad: LoadedModel) -> None:
    """Autoguidance's two models must read the same inputs: sample space, conditioning, noise schedule."""
    check(tuple(bad.sample_shape) == tuple(model.sample_shape) and (bad.latent is None) == (model.latent is None),
          f"the guiding model {bad.path} samples {'×'.join(map(str, bad.sample_shape))}, the model "
          f"{'×'.join(map(str, model.sample_shape))}; autoguidance needs the same sample space")
    check(bad.net.config.num_classes == model.net.config.num_classes and bad.takes_text == model.takes_text
          and getattr(bad.net.config, "text_dim", 0) == getattr(model.net.config, "text_dim", 0),
          f"the guiding model {bad.path} takes another condition than the model (classes "
          f"{bad.net.config.num_classes} vs {model.net.config.num_classes}, text {bad.takes_text} vs "
          f"{model.takes_text}); autoguidance compares two models of the same conditioning")
    a, b = bad.schedule.alpha_bar_table, model.schedule.alpha_bar_table
    check(a.shape == b.shape and torch.allclose(a, b),
          f"the guiding model {bad.path} was trained on another noise schedule than the model; autoguidance needs a "
          f"weaker model of the same kind (an earlier checkpoint, or a smaller preset trained the same way)")


def combination_rule(model: LoadedModel, guidance: Guidance, settings: SamplerSettings | None):
    """The rule that combines the two predictions (None = CFG's own), checked against the sampler."""
    check(guidance.rule in RULES, f"unknown guidance rule {guidance.rule!r}: use one of {', '.join(RULES)}")
    rule = None
    if guidance.rule == "apg":
        rule = APG(model.schedule, guidance.apg_eta, guidance.apg_momentum, guidance.apg_threshold)
    elif guidance.rule == "cfg-zero-star":
        rule = CFGZeroStar(model.schedule)
    elif guidance.rule == "cfgpp":
        check(settings is None or settings.sampler == "ddim",
              f"CFG++ renoises DDIM's direction term with ε(x, ∅) (Chung et al. 2024, Alg. 1), so it runs with "
              f"--sampler ddim, not {settings.sampler if settings else ''}")
        check(0 <= guidance.w <= 1, f"CFG++'s λ (given as w) must lie in [0, 1] (Chung et al. 2024; λ = 1 is the "
                                    f"conditional x̂0), got w = {guidance.w}")
        rule = CFGPlusPlus()
    if guidance.rescale > 0:
        rule = Rescale(model.schedule, guidance.rescale, rule)
    return rule


def guided(model: LoadedModel, guidance: Guidance, settings: SamplerSettings | None = None,
           measure_clipping: bool = False) -> Guided:
    """The stack of one call (see the module) with its step; settings None = clipping on, DDIM's step."""
    clip_x0 = settings.clip_x0 if settings is not None else True
    conditional = model.net.config.num_classes > 0
    texted = model.takes_text
    bad = guidance.guide_model
    pair = guidance.w > 0 or guidance.rule == "cfgpp"
    check(not pair or conditional or texted or bad is not None,
          f"w = {guidance.w}: classifier-free guidance needs a class-conditional (or text-conditioned) model, and "
          f"this one is unconditional; use w = 0, or autoguidance (--guide-model) which guides unconditional models")
    check(pair or (guidance.rule in ("cfg", "cfg-zero-star") and guidance.rescale == 0 and guidance.interval is None),
          f"--guidance-rule {guidance.rule}, --rescale and --guidance-interval change how guidance combines its two "
          f"predictions, and w = 0 runs none: give w > 0")
    check(not (texted and guidance.classifier is not None and (guidance.clean or guidance.base_null)),
          "on a text model classifier guidance takes a noise-aware classifier (guidekit train-classifier --like "
          "MODEL) and conditions the model on the prompt (\"\" for ∅): drop --clean-classifier / --base-null")
    check(not (guidance.base_null and pair), "base_null hands the model ∅, so CFG (w > 0) cannot apply; "
                                             "use w = 0 with --base-null")
    check(guidance.dynamic_threshold is None or model.latent is None,
          "dynamic thresholding keeps x̂0 in the pixels' [−1, 1]; a latent model's latents have no such range: drop "
          "--dynamic-threshold")
    counters = [CountedDenoiser(model.denoiser())]
    den = counters[0]
    w_range = getattr(model, "w_range", None)
    if w_range is not None:  # a guidance-distilled student: CFG is inside the network, one pass per step
        check(guidance.rule == "cfg" and guidance.rescale == 0 and guidance.interval is None and bad is None
              and guidance.cads is None,
              f"{model.path} is a guidance-distilled student (guidekit distill): CFG is built into its one pass, so "
              f"--guidance-rule, --rescale, --guidance-interval, --guide-model and --cads cannot reach its halves; "
              f"drop them, or use the teacher model")
        den, pair = DistilledGuidance(den, guidance.w, w_range), False
    rule = combination_rule(model, guidance, settings)
    interval = None if guidance.interval is None else GuidanceInterval(model.schedule, *guidance.interval)
    if bad is not None:
        check_guide_model(model, bad)
        counters.append(CountedDenoiser(bad.denoiser()))
        den = Autoguidance(den, counters[1], guidance.w, rule, interval)
    elif pair:
        den = ClassifierFreeGuidance(den, guidance.w, rule, interval)
    if guidance.cads is not None:
        embed = class_embedder(model)
        check(texted or embed is not None, "CADS anneals the condition's embedding: it needs a text model or a "
                                           "class-conditional guidekit UNet (its class embedding)")
        den = CADS(den, model.schedule, *guidance.cads, guidance.cads_noise, guidance.cads_psi, embed)
    if guidance.rule == "cfg-zero-star" and guidance.zero_steps > 0:
        den = ZeroInit(den, model.schedule, guidance.zero_steps)
    if guidance.classifier is not None:
        kind = CleanClassifierGuidance if guidance.clean else ClassifierGuidance
        den = kind(den, guidance.classifier, model.schedule, guidance.classifier_w,
                   condition_model="prompt" if texted else conditional and not guidance.base_null)
    clipped = ClippedShare(den, model.schedule) if measure_clipping else None
    den = clipped or den
    if model.latent is None and guidance.dynamic_threshold is not None:
        den = DynamicThreshold(den, model.schedule, guidance.dynamic_threshold)
    elif model.latent is None and clip_x0:  # latents have no [−1, 1] range: a latent model's x̂0 is never clipped
        den = ClipX0(den, model.schedule)
    sampler, eta = (settings.sampler, settings.eta) if settings is not None else ("ddim", 0.0)
    step = CFGPPStep(model.schedule, rule if isinstance(rule, CFGPlusPlus) else rule.inner, eta) \
        if guidance.rule == "cfgpp" else make_step(sampler, model.schedule, eta)
    return Guided(den, step, counters, clipped)


def guided_denoiser(model: LoadedModel, guidance: Guidance, clip_x0: bool = True):
    """The denoiser stack alone (see guided), with static clipping as clip_x0 says."""
    return guided(model, guidance, SamplerSettings(clip_x0=clip_x0)).denoiser


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
