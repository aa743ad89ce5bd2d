"""Denoiser-level guidance: functions Denoiser → Denoiser, stacked in an explicit order, and the rules that combine
CFG's two halves (cfg_rule, APG, Rescale, CFGZeroStar, CFGPlusPlus)."""

from guidekit.guidance.apg import APG
from guidekit.guidance.autoguidance import Autoguidance
from guidekit.guidance.cads import CADS
from guidekit.guidance.cfg import ClassifierFreeGuidance, cfg_rule, guidance_scale_to_w, null_cond
from guidekit.guidance.cfg_zero import CFGZeroStar, ZeroInit
from guidekit.guidance.cfgpp import CFGPlusPlus, CFGPPStep
from guidekit.guidance.classifier import ClassifierGuidance, CleanClassifierGuidance
from guidekit.guidance.clip import ClipX0
from guidekit.guidance.distilled import DistilledGuidance
from guidekit.guidance.interval import GuidanceInterval, sigma_of
from guidekit.guidance.rescale import Rescale
from guidekit.guidance.threshold import DynamicThreshold

__all__ = ["APG", "Autoguidance", "CADS", "CFGPPStep", "CFGPlusPlus", "CFGZeroStar", "ClassifierFreeGuidance",
           "ClassifierGuidance", "CleanClassifierGuidance", "ClipX0", "DistilledGuidance", "DynamicThreshold", "GuidanceInterval", "Rescale",
           "ZeroInit", "cfg_rule", "guidance_scale_to_w", "null_cond", "sigma_of"]
