"""Classifier-free guidance (Ho & Salimans 2021): ε̂ = (1+w)·ε(x, y) − w·ε(x, ∅), both halves in one forward."""

from __future__ import annotations

import math
import numbers

import torch

from guidekit.diffusion.denoiser import NEGATIVE_TEXT, NULL, TEXT, Cond, Denoiser, reset_state
from guidekit.errors import check


def as_weight(w) -> float:
    """A guidance weight as a float (a real number or a one-element tensor); NaN, which every check refuses, else."""
    if isinstance(w, torch.Tensor) and w.numel() == 1:
        return float(w)
    return float(w) if isinstance(w, numbers.Real) and not isinstance(w, bool) else math.nan


def null_cond(cond: Cond) -> dict:
    """The same condition with every label replaced by the null label ∅ and every prompt embedding by the empty
    prompt's (zeros), or, where cond holds negative-prompt embeddings, by those (ε(x, c_neg) replaces ε(x, ∅))."""
    out = dict(cond)
    if "y" in out:
        out["y"] = torch.full_like(out["y"], NULL)
    negative = out.pop(NEGATIVE_TEXT, None)
    if TEXT in out:
        out[TEXT] = negative.to(out[TEXT]) if negative is not None else torch.zeros_like(out[TEXT])
    return out


def positive_cond(cond: Cond) -> dict:
    """The condition of the conditional half: cond without the negative prompt."""
    return {k: v for k, v in cond.items() if k != NEGATIVE_TEXT}


def _cat(a: Cond, b: Cond) -> dict:
    """Concatenate two cond dicts along the batch."""
    return {k: torch.cat([a[k], b[k]]) for k in a}


def cfg_rule(eps_c: torch.Tensor, eps_u: torch.Tensor, w: float, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Ho & Salimans 2021's combination ε_c + w·(ε_c − ε_u); every rule of guidekit.guidance has this signature."""
    return eps_c + w * (eps_c - eps_u)


class ClassifierFreeGuidance:
    """Denoiser → denoiser: ε̂ = (1+w)·ε(x, c) − w·ε(x, ∅); w = 0 is the plain conditional model. c is a class label
    (cond["y"]) or a prompt embedding (cond["text"]); cond["text_negative"] replaces ∅ (negative prompt).

    `rule` replaces the combination of the two halves (APG, CFG rescale, CFG-Zero*, CFG++: guidekit.guidance);
    `interval` (a GuidanceInterval) guides only at the noise levels it holds, elsewhere one conditional pass."""

    def __init__(self, denoiser: Denoiser, w: float, rule=None, interval=None):
        check(math.isfinite(as_weight(w)) and as_weight(w) >= 0,
              f"guidance weight w must be >= 0 and finite (w = 0 is the plain conditional model), got {w!r}; "
              f"with --guidance-scale s, w = s - 1")
        self.denoiser, self.w = denoiser, as_weight(w)
        self.rule, self.interval = rule or cfg_rule, interval

    def reset(self) -> None:
        reset_state(self.denoiser)
        reset_state(self.rule)

    def pair(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε(x, c), ε(x, ∅)) in one batched forward."""
        n = x.shape[0]
        eps = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), _cat(positive_cond(cond), null_cond(cond)))
        return eps[:n], eps[n:]

    def single(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The unguided prediction: one pass with the condition."""
        return self.denoiser(x, t, positive_cond(cond))

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        plain = getattr(self.rule, "plain_at", lambda w: w == 0)(self.w)  # the rule gives ε_c at this w
        active = None if self.interval is None else self.interval.active(t)
        if plain or (active is not None and not bool(active.any())):
            return self.single(x, t, cond)
        eps_c, eps_u = self.pair(x, t, cond)
        out = self.rule(eps_c, eps_u, self.w, x, t)
        if active is not None and not bool(active.all()):
            out = torch.where(active.view(-1, *[1] * (x.dim() - 1)).to(out.device), out, eps_c.to(out.dtype))
        return out


def guidance_scale_to_w(s: float) -> float:
    """Convert the diffusers/Imagen guidance scale s to the paper's w = s − 1."""
    check(math.isfinite(s) and s >= 1, f"--guidance-scale must be >= 1 (it is 1 + w) and finite, got {s}")
    return s - 1.0
