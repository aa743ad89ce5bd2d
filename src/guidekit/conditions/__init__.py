"""Condition extractors for ControlNet hints (Zhang et al. 2023) and adherence metrics for samples."""

from __future__ import annotations

import inspect

from guidekit.conditions.base import Condition
from guidekit.conditions.canny import Canny
from guidekit.conditions.load import load_condition_image
from guidekit.conditions.lowres import LowRes
from guidekit.conditions.mask import Mask
from guidekit.conditions.sketch import Sketch
from guidekit.errors import GuidekitError, check

_CLASSES = {cls.name: cls for cls in (Canny, Sketch, Mask, LowRes)}
CONDITIONS: tuple[str, ...] = tuple(_CLASSES)


def get_condition(name: str, **options) -> Condition:
    """The condition called `name` (one of CONDITIONS), built with its options (e.g. low_threshold=0.3)."""
    key = name.strip().lower() if isinstance(name, str) else name
    check(key in _CLASSES, f"unknown condition {name!r}: use one of {', '.join(CONDITIONS)}")
    cls = _CLASSES[key]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise GuidekitError(f"unknown option(s) {unknown} for condition {key!r}: valid options are {valid}")
    return cls(**options)


__all__ = ["CONDITIONS", "Canny", "Condition", "GuidekitError", "LowRes", "Mask", "Sketch", "get_condition",
           "load_condition_image"]
