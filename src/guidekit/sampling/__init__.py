"""Sampling: per-image noise, sampler steps, the one loop, and plain generation."""

from guidekit.sampling.generate import generate
from guidekit.sampling.loop import renoise, sample
from guidekit.sampling.noise import Noise
from guidekit.sampling.steps import DDIM, DDPM, SAMPLERS, DPMSolverPP2M, DPMSolverPP2MSDE, Step, make_step

__all__ = ["generate", "renoise", "sample", "Noise", "DDIM", "DDPM", "DPMSolverPP2M", "DPMSolverPP2MSDE", "SAMPLERS",
           "Step", "make_step"]
