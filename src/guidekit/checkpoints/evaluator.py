"""Evaluator folders ("guidekit-evaluator/1"): config.json (evaluator, weights_dtype, evaluator_id, metrics, info)
+ model.safetensors (float16 or float32); the shipped one lies in guidekit/metrics/weights/fmnist-evaluator."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import torch

from guidekit.checkpoints.files import (check_format, check_not_pickle, format_of, load_weights, read_json,
                                        read_tensors, write_folder)
from guidekit.errors import GuidekitError, check
from guidekit.models.evaluator import Evaluator, EvaluatorConfig

FORMAT = format_of("evaluator")
SHIPPED = Path(__file__).resolve().parents[1] / "metrics" / "weights" / "fmnist-evaluator"


def _stored(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A state-dict tensor as it is stored: floating tensors in dtype, others unchanged, contiguous on the CPU."""
    v = v.detach().cpu()
    return (v.to(dtype) if v.is_floating_point() else v).contiguous()


def save_evaluator(model: Evaluator, folder: str | Path, metrics: dict | None = None, dtype: str | None = None,
                   info: dict | None = None) -> Path:
    """Write config.json (config, metrics, info) + model.safetensors into folder atomically; dtype float16|float32."""
    metrics = dict(metrics or {})
    dtype = dtype or metrics.get("weights_dtype", "float16")
    check(dtype in ("float16", "float32"), f"save_evaluator: dtype must be 'float16' or 'float32', got {dtype!r}")
    info = {"date": datetime.date.today().isoformat(), **(info or {})}
    config = {"format": FORMAT, "evaluator": model.config.to_dict(), "weights_dtype": dtype,
              "evaluator_id": evaluator_id(model), "metrics": metrics, **info}
    tensors = {k: _stored(v, getattr(torch, dtype)) for k, v in model.state_dict().items()}
    # readable by all, like any installed file (the shipped evaluator is one)
    return write_folder(Path(folder), {"config.json": config, "model.safetensors": tensors}, public=True)


def _read(folder: Path) -> Evaluator:
    """The evaluator of a folder that holds config.json and model.safetensors, float32 on the CPU."""
    file = folder / "config.json"
    config = read_json(file)
    check_format(config, "evaluator", file)
    try:
        model = Evaluator(EvaluatorConfig.from_dict(config.get("evaluator")))
    except GuidekitError as e:
        raise GuidekitError(f"{file}: {e}") from e
    load_weights(model, read_tensors(folder / "model.safetensors"), folder / "model.safetensors")
    return model


def load_evaluator(path: str | Path | None = None, device: torch.device | str = "cpu") -> Evaluator:
    """Load an evaluator folder (config.json + model.safetensors; None: the shipped one) in eval mode, float32."""
    folder = SHIPPED if path is None else Path(path)
    check_not_pickle(folder)
    if folder.is_file() and folder.suffix == ".safetensors":
        folder = folder.parent
    fix = "re-install guidekit" if path is None else "pass a folder written by save_evaluator / train-evaluator"
    check(folder.is_dir(), f"evaluator not found: {folder}; {fix}")
    for name in ("config.json", "model.safetensors"):
        check((folder / name).is_file(), f"{folder / name} is missing; {fix}")
    try:
        model = _read(folder)
    except GuidekitError as e:
        raise GuidekitError(f"{e}; {fix}") from e
    return model.to(device, memory_format=torch.channels_last).eval()


def evaluator_id(model: Evaluator) -> str:
    """12 hex digits of SHA-256 of the config and the float16-rounded weights (equal before save and after load)."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        v = _stored(v, torch.float16)
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:12]
