"""The read side of run folders (OUT/checkpoints/step-N): which checkpoints are complete, the newest, recovery."""

from __future__ import annotations

import json
from pathlib import Path

from guidekit.errors import check
from guidekit.io import recover_leftovers

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
