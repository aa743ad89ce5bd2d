"""Diffusion core: noise schedules, forward process, parameterizations, the denoiser interface."""

from guidekit.diffusion.denoiser import NULL, Cond, Denoiser, ModelDenoiser
from guidekit.diffusion.parameterization import PREDICTION_TYPES, eps_to_x0, q_sample, target, to_eps, x0_to_eps
from guidekit.diffusion.schedule import NoiseSchedule

__all__ = ["NULL", "Cond", "Denoiser", "ModelDenoiser", "PREDICTION_TYPES", "eps_to_x0", "q_sample", "target",
           "to_eps", "x0_to_eps", "NoiseSchedule"]
