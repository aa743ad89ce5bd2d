"""Text prompts for classifier-free guidance (Ho & Salimans 2021) through a frozen sentence encoder (Rombach et al. 2022)."""

from guidekit.text.attributes import ATTRIBUTES, Thresholds, measure
from guidekit.text.captions import CLASS_PHRASES, caption, parse_prompt

__all__ = ["ATTRIBUTES", "Thresholds", "measure", "CLASS_PHRASES", "caption", "parse_prompt"]
