"""Classifier guidance (Dhariwal & Nichol 2021): ε̄ = ε − w·√(1−ᾱ_t)·∇_{x_t} log p_φ(y | x_t, t)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from guidekit.diffusion.denoiser import NULL, Cond, Denoiser, reset_state
from guidekit.diffusion.parameterization import _bcast
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.guidance.cfg import as_weight, null_cond


def log_prob_grad(classifier: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_x Σ_i log softmax(classifier(x, t))[i, y_i] over images with y_i ≠ ∅ (others get 0)."""
    check(isinstance(y, torch.Tensor) and y.shape == (x.shape[0],) and not y.is_floating_point()
          and y.dtype != torch.bool, f"y must be an integer tensor of shape ({x.shape[0]},), got {y!r:.80}")
    keep = (y != NULL).to(x.dtype)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits = classifier(x_in, t)
        check(bool((y < logits.shape[1]).all() & (y >= NULL).all()),
              f"y labels must be in [0, {logits.shape[1] - 1}] (or ∅ = {NULL}), got {y.tolist()[:8]}")
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        logp = F.log_softmax(logits, dim=-1).gather(1, y.clamp(min=0).long().view(-1, 1))[:, 0]
        (grad,) = torch.autograd.grad((logp * keep).sum(), x_in)
    return grad


class ClassifierGuidance:
    """Denoiser → denoiser adding the gradient of a noise-aware classifier; w = 0 is the base denoiser exactly.

    `condition_model=False` (an unconditional base model) hands the inner denoiser ∅; True (a class-conditional
    model, or CFG below this transform) passes the labels through; "prompt" (a text model) passes its prompt
    through and hands it ∅ labels, which only the classifier reads.
    """

    def __init__(self, denoiser: Denoiser, classifier: torch.nn.Module, schedule: NoiseSchedule, w: float,
                 condition_model: bool = False):
        check(math.isfinite(as_weight(w)) and as_weight(w) >= 0,
              f"classifier guidance weight must be >= 0 and finite (0 = no guidance), got {w!r}; e.g. 1")
        self.denoiser, self.classifier, self.schedule, self.w = denoiser, classifier, schedule, as_weight(w)
        check(condition_model in (False, True, "prompt"), f"condition_model must be False, True or 'prompt', got "
                                                          f"{condition_model!r}")
        self.condition_model = condition_model

    def inner_cond(self, cond: Cond) -> Cond:
        """What the inner denoiser sees (see condition_model)."""
        if self.condition_model == "prompt":
            return {**cond, "y": torch.full_like(cond["y"], NULL)}
        return cond if self.condition_model else null_cond(cond)

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        check("y" in cond, "classifier guidance needs the requested classes in cond['y']")
        eps = self.denoiser(x, t, self.inner_cond(cond))
        if self.w == 0:
            return eps
        grad = log_prob_grad(self.classifier, x, t, cond["y"])
        ab = _bcast(self.schedule.alpha_bar(t.detach().cpu()), x)
        return eps - self.w * (1 - ab).sqrt() * grad.to(eps.dtype)


class CleanClassifierGuidance(ClassifierGuidance):
    """NOT the paper's method: an ordinary classifier on clean images, applied to the predicted x̂0.

    ∇_{x_t} log p(y | x̂0) is taken with ε held fixed, so ∂x̂0/∂x_t = 1/√ᾱ_t; then ε̄ = ε − w·√(1−ᾱ_t)·that gradient.
    The classifier is called as classifier(x̂0) (no timestep).
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        check("y" in cond, "classifier guidance needs the requested classes in cond['y']")
        eps = self.denoiser(x, t, self.inner_cond(cond))
        if self.w == 0:
            return eps
        ab = _bcast(self.schedule.alpha_bar(t.detach().cpu()), x, eps)
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1).to(x.dtype).detach()
        grad = log_prob_grad(lambda z, _t: self.classifier(z), x0, t, cond["y"]) / ab.sqrt()
        return eps - self.w * (1 - ab).sqrt() * grad.to(eps.dtype)
