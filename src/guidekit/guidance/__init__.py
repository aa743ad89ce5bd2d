"""Denoiser-level guidance: functions Denoiser → Denoiser, stacked in an explicit order."""

from guidekit.guidance.cfg import ClassifierFreeGuidance, guidance_scale_to_w, null_cond
from guidekit.guidance.classifier import ClassifierGuidance, CleanClassifierGuidance
from guidekit.guidance.clip import ClipX0

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance", "CleanClassifierGuidance", "ClipX0", "guidance_scale_to_w", "null_cond"]
