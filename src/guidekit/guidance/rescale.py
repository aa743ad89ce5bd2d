"""CFG rescale (Lin et al. 2023, Alg. 2): the guided x̂0 rescaled to the conditional one's std, mixed by φ."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.denoiser import reset_state
from guidekit.diffusion.parameterization import eps_to_x0, x0_to_eps
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.guidance.cfg import cfg_rule


def std_per_image(a: torch.Tensor) -> torch.Tensor:
    """The standard deviation of each image over all its pixels, shaped to broadcast against a."""
    return a.flatten(1).std(1).view(-1, *[1] * (a.dim() - 1))


class Rescale:
    """A rule over another rule (CFG by default): D = φ·D̂·std(D_c)/std(D̂) + (1 − φ)·D̂ in x̂0 space, where D̂ is
    the inner rule's guided x̂0; φ = 0 is the inner rule. (Lin et al. rescale their v-prediction; guidekit rescales
    x̂0, the quantity that over-exposes, for every prediction type alike.)"""

    def __init__(self, schedule: NoiseSchedule, phi: float, inner=None):
        check(math.isfinite(phi) and 0 <= phi <= 1, f"the CFG rescale factor φ must lie in [0, 1] (Lin et al. use 0.7;"
                                                    f" 0 = plain CFG), got {phi}")
        self.schedule, self.phi, self.inner = schedule, float(phi), inner or cfg_rule

    def plain_at(self, w: float) -> bool:
        return getattr(self.inner, "plain_at", lambda v: v == 0)(w)

    def reset(self) -> None:
        reset_state(self.inner)

    def __call__(self, eps_c, eps_u, w, x, t):
        ab = self.schedule.alpha_bar(t.detach().cpu())
        guided = eps_to_x0(x, self.inner(eps_c, eps_u, w, x, t), ab)
        d_c = eps_to_x0(x, eps_c, ab)
        rescaled = guided * std_per_image(d_c) / std_per_image(guided).clamp(min=1e-12)
        return x0_to_eps(x, self.phi * rescaled + (1 - self.phi) * guided, ab)
