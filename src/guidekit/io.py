"""Atomic output folders: everything is written to a temp folder, fsynced, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from guidekit.errors import check


def fsync_path(path: Path) -> None:
    """fsync a file or folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output(dest: str | Path, overwrite: bool) -> Path:
    """Refuse an output folder that exists (unless overwrite) or is a file; call before long work."""
    dest = Path(dest)
    check(not dest.exists() or dest.is_dir(), f"{dest} exists and is a file; choose another --out")
    check(overwrite or not (dest.exists() and any(dest.iterdir())),
          f"{dest} already exists and is not empty; choose another --out or pass --overwrite")
    return dest


@contextlib.contextmanager
def atomic_folder(dest: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside dest; on success it replaces dest, on error it is removed."""
    dest = check_output(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: give the result the usual permissions
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~umask)
                fsync_path(f)
        fsync_path(tmp)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        fsync_path(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
