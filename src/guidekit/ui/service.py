"""The web UI's work as pure functions (no gradio): load models by name or folder, run one method, return images."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from guidekit import zoo
from guidekit.diffusion import NULL
from guidekit.errors import GuidekitError, check
from guidekit.sampling.steps import SAMPLERS as STEP_SAMPLERS
from guidekit.ui.inputs import to_uint8

METHODS = ("sample", "classifier", "controlnet", "sdedit", "repaint")
SAMPLERS = ("ddim", *(s for s in STEP_SAMPLERS if s != "ddim"))  # ddim first: the default
MAX_STEPS = 250  # sampler steps of one request
MAX_N = 8  # images of one request
MAX_NFE = 2000  # model evaluations per image (RePaint's resampling multiplies the steps)
CACHE_SIZE = 6  # loaded networks kept
MAX_PROMPT = 300  # characters of a prompt
Progress = Callable[[float, str], None]


@dataclass
class Params:
    """One request's settings; each method reads the ones it needs."""

    cls: str | None = None  # class name, prefix or index; None or "null" = ∅
    w: float = 0.0  # classifier-free guidance weight (ignored for ∅)
    classifier: str = "fmnist-classifier"
    classifier_w: float = 5.0
    base_null: bool = True  # classifier guidance of the model's null class (the paper's unconditional base)
    controlnet: str = "fmnist-sketch"
    control_scale: float = 1.0
    extract_hint: bool | None = None  # True: run the ControlNet's condition on the canvas (a garment); False: the
    # canvas is the hint; None: by the canvas's origin (a picture under the strokes is extracted, a drawing is not)
    t0: float = 0.5
    jump_length: int = 5
    jump_n_sample: int = 2
    invert: bool = False  # the drawing is dark on white paper
    steps: int = 20
    seed: int = 0
    n: int = 1
    sampler: str = "ddim"
    prompt: str = ""  # text-conditioned models only (guidekit train --captions): the prompt; "" = ∅
    negative_prompt: str = ""  # replaces ∅ in CFG (text models only)
    guidance_rule: str = "cfg"  # how CFG's halves combine: cfg | apg | cfg-zero-star | cfgpp (w = λ, DDIM)
    rescale: float = 0.0  # CFG rescale φ (Lin et al. 2023)
    guidance_interval: str = ""  # "lo,hi" in σ: guide only there (Kynkäänniemi et al. 2024); "" = everywhere
    guide_model: str = ""  # autoguidance's weaker model (Karras et al. 2024); "" = CFG's ∅
    dynamic_threshold: bool = False  # Imagen's dynamic thresholding (p = 0.995) instead of clipping
    cads: bool = False  # CADS (Sadat et al. 2023) at its paper settings (τ = 0.6, 0.9; s = 0.25)


@dataclass
class Result:
    """uint8 images (n, H, W[, 3]), what the model was given (uint8, model resolution), and a summary."""

    images: np.ndarray
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


def _cached(key: tuple, load: Callable):
    """load() once per key (LRU of CACHE_SIZE); the path's mtime is in the key, so a rewritten folder reloads."""
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        value = load()
        _cache[key] = value
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return value


def _stamp(name: str) -> tuple:
    check(isinstance(name, str) and name.strip() != "", "choose a model: a zoo name or a local model folder")
    path = zoo.resolve(name.strip())
    return str(path.resolve()), path.stat().st_mtime_ns if path.exists() else None


def load_model(name: str, device="cpu"):
    """A zoo model or local model folder (cached)."""
    from guidekit.checkpoints import load_model as load

    return _cached(("model", *_stamp(name), str(device)), lambda: load(name.strip(), device))


def load_controlnet(name: str, model, device="cpu"):
    """A ControlNet for the loaded model (cached; refused if trained on another base)."""
    from guidekit.checkpoints import load_controlnet as load

    key = ("controlnet", *_stamp(name), *_stamp(str(model.path)), str(device))
    return _cached(key, lambda: load(name.strip(), model.net))


def load_classifier(name: str, model, device="cpu"):
    """A noise-aware classifier for the loaded model (cached; its schedule must match the model's)."""
    from guidekit.pipelines import load_guiding_classifier

    key = ("classifier", *_stamp(name), *_stamp(str(model.path)), str(device))
    return _cached(key, lambda: load_guiding_classifier(name.strip(), model, device))


def image_size(name: str, device="cpu") -> int:
    """The model's image side, or 32 (Fashion-MNIST) when it cannot be loaded (running it will say why)."""
    try:
        return load_model(name, device).image_size
    except (GuidekitError, OSError):
        return 32


@lru_cache(maxsize=1)
def _test_images():
    from guidekit.data import load_dataset

    try:
        return load_dataset("fashion-mnist", split="test")
    except GuidekitError:
        return load_dataset("samples")  # the 500 images shipped in the package


def dataset_image(index: int, stroke: bool = False) -> tuple[np.ndarray, str]:
    """Test image `index` of Fashion-MNIST (else the embedded samples) as uint8 32x32, optionally a stroke painting."""
    from guidekit.guides import stroke_painting

    data = _test_images()
    i = _integer(index, "image index", 0, len(data) - 1)
    x = data.images(slice(i, i + 1))
    x = stroke_painting(x) if stroke else x
    return to_uint8(x)[0], f"{data.name}[{i}] {dataset_class(i) or ''}".strip()


def dataset_class(index: int) -> str | None:
    """The class name of test image `index` (as dataset_image numbers them), or None for an unlabelled set."""
    data = _test_images()
    i = _integer(index, "image index", 0, len(data) - 1)
    return data.class_names[int(data.labels[i])] if data.labels is not None and data.class_names else None


def _integer(value, name: str, lo: int, hi: int) -> int:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value == int(value)
    check(ok and lo <= int(value) <= hi, f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    return int(value)


def _number(value, name: str, lo: float, hi: float = math.inf) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    check(ok and lo <= value <= hi, f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def check_params(method: str, p: Params) -> Params:
    """Validate the settings (ranges and the request's cost); returns a copy with numbers normalised."""
    check(method in METHODS, f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    check(p.sampler in SAMPLERS, f"unknown sampler {p.sampler!r}: use one of {', '.join(SAMPLERS)}")
    q = Params(**asdict(p))
    q.steps = _integer(p.steps, "steps", 1, MAX_STEPS)
    q.n = _integer(p.n, "number of images", 1, MAX_N)
    q.seed = _integer(p.seed, "seed", 0, 2**31 - 1)
    q.w = _number(p.w, "w", 0.0, 100.0)
    q.classifier_w = _number(p.classifier_w, "classifier weight", 0.0, 1000.0)
    q.control_scale = _number(p.control_scale, "control scale", 0.0, 10.0)
    q.t0 = _number(p.t0, "t0", 0.0, 1.0)
    check(q.t0 > 0, "t0 must be above 0 (0 returns the guide untouched); try 0.5")
    q.jump_length = _integer(p.jump_length, "jump length", 1, MAX_STEPS)
    q.jump_n_sample = _integer(p.jump_n_sample, "jump n sample", 1, 100)
    check(p.extract_hint is None or isinstance(p.extract_hint, bool),
          f"extract hint must be True, False or None (by the canvas's origin), got {p.extract_hint!r}")
    for name in ("prompt", "negative_prompt"):
        text = getattr(p, name)
        check(text is None or isinstance(text, str), f"{name.replace('_', ' ')} must be text, got {text!r}")
        setattr(q, name, " ".join((text or "").split()))
        check(len(getattr(q, name)) <= MAX_PROMPT, f"{name.replace('_', ' ')} has {len(getattr(q, name))} "
                                                   f"characters; the limit is {MAX_PROMPT}: shorten it")
    from guidekit.pipelines.settings import RULES

    check(p.guidance_rule in RULES, f"unknown guidance rule {p.guidance_rule!r}: use one of {', '.join(RULES)}")
    q.rescale = _number(p.rescale, "rescale φ", 0.0, 1.0)
    q.guidance_interval = interval_of(p.guidance_interval)
    check(isinstance(p.guide_model, str), f"guide model must be a zoo name or folder, got {p.guide_model!r}")
    q.guide_model = (p.guide_model or "").strip()
    if method == "repaint":
        from guidekit.sampling.repaint import expected_nfe

        nfe = expected_nfe(q.steps, q.jump_length, q.jump_n_sample)
        check(nfe <= MAX_NFE, f"RePaint with {q.steps} steps, jump length {q.jump_length} and jump n sample "
                              f"{q.jump_n_sample} needs {nfe} model evaluations per image; the limit is {MAX_NFE}: "
                              f"lower the steps or jump n sample")
    return q


def interval_of(text) -> str:
    """A guidance interval "lo,hi" (σ; hi may be inf) checked, or "" for none."""
    check(isinstance(text, str), f"guidance interval must be text like 0.3,5, got {text!r}")
    if not text.strip():
        return ""
    parts = text.split(",")
    try:
        lo, hi = (float(v) for v in parts)
    except ValueError:
        lo = hi = math.nan
    check(len(parts) == 2 and math.isfinite(lo) and not math.isnan(hi) and 0 <= lo < hi,
          f"guidance interval must be two σ values lo,hi with 0 <= lo < hi (hi may be inf), like 0.3,5; got {text!r}")
    return f"{lo:g},{hi:g}"


def pick_class(model, text: str | None) -> int:
    """A class index of the model from a name, prefix or index; NULL for None, '' or 'null'."""
    from guidekit.data import class_index

    if text is None or str(text).strip().lower() in ("", "null", "∅", "none"):
        return NULL
    check(bool(model.class_names), f"{model.path} is unconditional: choose the class null")
    return class_index(model.class_names, str(text))


def run_method(method: str, model: str, params: Params, image: np.ndarray | None = None,
               mask: np.ndarray | None = None, sketch: np.ndarray | None = None, device="cpu",
               progress: Progress | None = None) -> Result:
    """Run one method on a zoo name or model folder: sample | classifier | controlnet (sketch → hint) |
    sdedit (sketch = guide) | repaint (image + mask, 1 / white = known). Raises GuidekitError on bad input."""
    from guidekit.ui.methods import RUNNERS

    p = check_params(method, params)
    start = time.time()
    loaded = load_model(model, device)
    text = loaded.takes_text
    check(text or not (p.prompt or p.negative_prompt), f"{loaded.path} takes no text prompt: it was trained on "
                                                        f"class labels; clear the prompt and pick a class")
    y = NULL if text else pick_class(loaded, p.cls)  # a text model reads the prompt; its class field is unused
    images, inputs, info = RUNNERS[method](loaded, p, y, image, mask, sketch, device, progress)
    check(bool(torch.isfinite(images).all()), "the result contains NaN/inf: the model weights are broken")
    name = "null" if y == NULL else loaded.class_names[y]
    said = {"prompt": p.prompt, "negative_prompt": p.negative_prompt} if text else {"class": name}
    info = {"method": method, "model": str(loaded.path), **said, **info, "steps": p.steps,
            "sampler": p.sampler, "seeds": list(range(p.seed, p.seed + p.n)), "seconds": round(time.time() - start, 3)}
    return Result(to_uint8(images), {k: to_uint8(v)[0] for k, v in inputs.items()}, info)


__all__ = ["METHODS", "MAX_N", "MAX_NFE", "MAX_STEPS", "Params", "Result", "dataset_class", "dataset_image",
           "run_method"]
