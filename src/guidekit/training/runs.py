"""Run folders shared by every trainer: OUT/checkpoints/step-N, the newest complete one, pruning, warm-up."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from guidekit.errors import check
from guidekit.io import recover_leftovers, slow_point

# what a checkpoint written before state.json listed its files must hold
LEGACY_FILES = ("state.json", "config.json", "model.safetensors", "optimizer.safetensors")


def is_complete(ckpt: Path) -> bool:
    """Whether a checkpoint folder holds a readable state.json and every file it lists."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    files = state.get("files", LEGACY_FILES) if isinstance(state, dict) else None
    return isinstance(files, (list, tuple)) and all((ckpt / str(name)).is_file() for name in files)


def complete_checkpoints(out: str | Path) -> list[Path]:
    """OUT/checkpoints/step-* folders that hold every file they should (see is_complete), oldest first."""
    folder = Path(out) / "checkpoints"
    return [c for c in sorted(folder.glob("step-*")) if is_complete(c)] if folder.is_dir() else []


def recover_run(out: str | Path) -> list[Path]:
    """Clean up after a killed save: restore folders moved aside, delete stale temp folders (see guidekit.io)."""
    return recover_leftovers(Path(out) / "checkpoints") + recover_leftovers(out)


def newest_checkpoint(out: str | Path) -> Path:
    """The checkpoint --resume continues from (after recover_run), or an error saying there is none."""
    recover_run(out)
    ckpts = complete_checkpoints(out)
    check(bool(ckpts), f"--resume: no checkpoint found under {Path(out) / 'checkpoints'}; "
                       f"drop --resume to start a new run")
    return ckpts[-1]


def refuse_existing(out: str | Path) -> None:
    """A new run must not write over an earlier run's (complete) checkpoints."""
    check(not complete_checkpoints(out),
          f"{out} already holds checkpoints: pass --resume to continue that run, or choose another --out")


def prune(out: str | Path, keep: int) -> None:
    """Delete every checkpoint but the newest `keep` complete ones; each is first renamed to `.step-N.del-PID`,
    so a kill mid-delete never leaves a half-deleted step-N behind."""
    kept = set(complete_checkpoints(out)[-keep:])
    if not kept:
        return
    for folder in sorted((Path(out) / "checkpoints").glob("step-*")):
        if folder not in kept:
            doomed = folder.with_name(f".{folder.name}.del-{os.getpid()}")
            os.replace(folder, doomed)
            slow_point()
            shutil.rmtree(doomed, ignore_errors=True)


def warmup_lr(lr: float, warmup: int, step: int) -> float:
    """Linear warm-up to lr over `warmup` steps, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup else lr
