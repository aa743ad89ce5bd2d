"""Run folders shared by every trainer: OUT/checkpoints/step-N, the newest complete one, pruning, warm-up."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from guidekit.errors import check
from guidekit.io import LEFTOVER, recover_leftovers, slow_point

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


def refuse_existing(out: str | Path, export: str = "model") -> None:
    """A new run must not write over an earlier run's (complete) checkpoints, nor into a folder that holds anything
    but what a run killed before its first checkpoint leaves (log.csv, checkpoints/, its export folder)."""
    check(not complete_checkpoints(out),
          f"{out} already holds checkpoints: pass --resume to continue that run, or choose another --out")
    folder = Path(out)
    if not folder.is_dir():
        return
    other = sorted(p.name for p in folder.iterdir()
                   if not (p.name in ("log.csv", "checkpoints") or LEFTOVER.match(p.name)
                           or (p.name == export and _is_export(p))))
    check(not other, f"{out} is not empty and is not a guidekit run (it holds {', '.join(other[:5])}"
                     f"{', …' if len(other) > 5 else ''}); a new run needs a new or empty --out")


def _is_export(folder: Path) -> bool:
    """Whether folder is a guidekit export (its config.json names a guidekit format)."""
    try:
        return str(json.loads((folder / "config.json").read_text()).get("format", "")).startswith("guidekit-")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


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
