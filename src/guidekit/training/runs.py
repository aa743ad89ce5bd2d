"""The write side of run folders shared by every trainer: refusing an earlier run's folder, pruning, warm-up.
The read side (complete checkpoints, the newest, recovery) is guidekit.checkpoints.runs, re-exported here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from guidekit.checkpoints.runs import LEGACY_FILES, complete_checkpoints, is_complete, newest_checkpoint, recover_run
from guidekit.errors import check
from guidekit.io import LEFTOVER, slow_point

__all__ = ["LEGACY_FILES", "complete_checkpoints", "is_complete", "newest_checkpoint", "recover_run", "refuse_existing",
           "prune", "warmup_lr"]


def refuse_existing(out: str | Path, export: str = "model", allowed: tuple[str, ...] = ()) -> None:
    """A new run must not write over an earlier run's (complete) checkpoints, nor into a folder that holds anything
    but what a run killed before its first checkpoint leaves (log.csv, checkpoints/, its export folder)."""
    check(not complete_checkpoints(out),
          f"{out} already holds checkpoints: pass --resume to continue that run, or choose another --out")
    folder = Path(out)
    if not folder.is_dir():
        return
    other = sorted(p.name for p in folder.iterdir()
                   if not (p.name in ("log.csv", "checkpoints", *allowed) or LEFTOVER.match(p.name)
                           or (p.name == export and _is_export(p))))
    check(not other, f"{out} is not empty and is not a guidekit run (it holds {', '.join(other[:5])}"
                     f"{', …' if len(other) > 5 else ''}); a new run needs a new or empty --out")


def _is_export(folder: Path) -> bool:
    """Whether folder is a guidekit export (its config.json names a guidekit format)."""
    for name in ("config.json", "guidekit.json"):  # a model folder; a pipeline folder trained here
        try:
            if str(json.loads((folder / name).read_text()).get("format", "")).startswith("guidekit-"):
                return True
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            pass
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
