"""RePaint's known-region constraint for any linear A (Lugmayr et al. 2022; MCG's projection, Chung et al. 2022):
after a move to level s, x ← (I − A†A)x + A†A·q_sample(A†y, ᾱ_s, n); at the clean level the measured part is A†y."""

from __future__ import annotations

import torch

from guidekit.diffusion.parameterization import q_sample
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.restoration.operators import Operator
from guidekit.sampling.noise import Noise


class MeasurementConstraint:
    """Constraint c(x, level, noise) of the one loop; for a mask it is exactly sampling.repaint.RePaintConstraint."""

    def __init__(self, op: Operator, y: torch.Tensor, schedule: NoiseSchedule):
        self.op, self.y, self.schedule = op, y, schedule

    def __call__(self, x: torch.Tensor, level: float, noise: Noise) -> torch.Tensor:
        x0 = self.op.pinv(self.y.to(device=x.device, dtype=x.dtype))
        ab = float(self.schedule.alpha_bar(level))
        return self.op.merge(x, x0 if ab >= 1.0 else q_sample(x0, ab, noise.randn_like(x)))
