"""Run folders shared by every trainer: OUT/checkpoints/step-N, the newest complete one, pruning, warm-up."""

from __future__ import annotations

import shutil
from pathlib import Path

from guidekit.errors import check


def complete_checkpoints(out: str | Path) -> list[Path]:
    """OUT/checkpoints/step-* folders that hold a state.json, oldest first."""
    folder = Path(out) / "checkpoints"
    return [c for c in sorted(folder.glob("step-*")) if (c / "state.json").exists()] if folder.is_dir() else []


def newest_checkpoint(out: str | Path) -> Path:
    """The checkpoint --resume continues from, or an error saying there is none."""
    ckpts = complete_checkpoints(out)
    check(bool(ckpts), f"--resume: no checkpoint found under {Path(out) / 'checkpoints'}; "
                       f"drop --resume to start a new run")
    return ckpts[-1]


def refuse_existing(out: str | Path) -> None:
    """A new run must not write over an earlier run's checkpoints."""
    folder = Path(out) / "checkpoints"
    check(not (folder.exists() and any(folder.glob("step-*"))),
          f"{out} already holds checkpoints: pass --resume to continue that run, or choose another --out")


def prune(out: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for folder in sorted((Path(out) / "checkpoints").glob("step-*"))[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def warmup_lr(lr: float, warmup: int, step: int) -> float:
    """Linear warm-up to lr over `warmup` steps, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr
