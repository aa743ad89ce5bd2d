"""The model zoo: Fashion-MNIST models trained with guidekit's own commands, shipped as fp16 safetensors."""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"
REGISTRY = Path(__file__).parent / "zoo.json"


def registry() -> dict[str, dict]:
    """Name → {kind, description, base, command, compute, metrics} for every shipped model."""
    return json.loads(REGISTRY.read_text())


def names() -> list[str]:
    """Names of the shipped models, e.g. fmnist-cfg."""
    return sorted(registry())


def resolve(path_or_name: str | Path) -> Path:
    """A zoo name → its folder; anything else (a path) is returned unchanged."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in registry():
        return WEIGHTS / str(path_or_name)
    return path


def size_mb(name: str) -> float:
    """Bytes on disk of a zoo model's folder, in MB."""
    return sum(f.stat().st_size for f in (WEIGHTS / name).iterdir()) / 1e6
