"""Dynamic thresholding (Saharia et al. 2022, Imagen): x̂0 clipped to ±s and divided by s, s its p-th |pixel| quantile."""

from __future__ import annotations

import math

import torch

from guidekit.diffusion.denoiser import Denoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.guidance.clip import X0Transform


class DynamicThreshold(X0Transform):
    """Denoiser → denoiser: s = max(1, quantile_p |x̂0|) per image, x̂0 ← clamp(x̂0, −s, s)/s, ε recomputed.
    Where no pixel leaves [−1, 1] it changes nothing; where s = 1 it is static clipping."""

    def __init__(self, denoiser: Denoiser, schedule: NoiseSchedule, p: float = 0.995):
        check(math.isfinite(p) and 0 < p <= 1, f"the dynamic-thresholding percentile p must lie in (0, 1] (Imagen "
                                               f"uses 0.995; 1 = the largest |pixel|), got {p}")
        super().__init__(denoiser, schedule)
        self.p = float(p)

    def x0(self, x0):
        s = torch.quantile(x0.abs().flatten(1).float(), self.p, dim=1).clamp(min=1.0)
        s = s.to(x0.dtype).view(-1, *[1] * (x0.dim() - 1))
        return torch.maximum(torch.minimum(x0, s), -s) / s
