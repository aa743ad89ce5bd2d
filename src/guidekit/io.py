"""Atomic output folders: everything is written to a temp folder, fsynced, then swapped into place.

A kill (SIGKILL, power loss) can land anywhere; what it leaves behind is one of these siblings of the folder
NAME, each tagged with the id of the process that made it:

- `.NAME.tmp-PID-*`: a temp folder being written (or, after an atomic swap, the old NAME being deleted);
- `.NAME.old-PID`: the old NAME, moved aside where the file system cannot swap two folders atomically;
- `.NAME.del-PID`: a folder being deleted (see guidekit.training.runs.prune);
- a file's temp copy, `.NAME.tmp-PID` (e.g. log.csv rewritten on resume).

`recover_leftovers` restores an `.old` folder whose NAME is missing and deletes the rest, once their process is gone.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from guidekit.errors import GuidekitError, check, shown

# Test hook: seconds to pause at each stage of a write, so that a test's kill can land inside one.
SLOW_WRITES_ENV = "GUIDEKIT_TEST_SLOW_WRITES"
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|del)-(?P<owner>.+)$")
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def fsync_path(path: Path) -> None:
    """fsync a file or folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_csv(path: Path, rows: list[list]) -> None:
    """Rewrite a CSV file atomically (temp file, fsync, rename): an interruption never leaves half a row."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def slow_point() -> None:
    """Pause for $GUIDEKIT_TEST_SLOW_WRITES seconds (tests only; unset: no pause)."""
    pause = os.environ.get(SLOW_WRITES_ENV)
    if pause:
        time.sleep(float(pause))


#: Where an output folder says which command wrote it: manifest.json (image commands) or summary.json (the demo),
#: each with a "command" field. `--overwrite` replaces only a folder marked by the same command.
MARKERS = ("manifest.json", "summary.json")
#: Demo pages written before the "command" field: their summary.json has these keys.
_LEGACY_DEMO_KEYS = ("panels", "settings")


def written_by(folder: Path) -> str | None:
    """The guidekit command that wrote output folder `folder` (its manifest.json/summary.json says), or None."""
    for name in MARKERS:
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("command"), str):
            return data["command"]
        if name == "summary.json" and isinstance(data, dict) and all(k in data for k in _LEGACY_DEMO_KEYS):
            return "demo"
    return None


def _first_existing(path: Path) -> Path:
    """path, or its nearest ancestor that exists (as a file or folder)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(dest: Path, flag: str = "--out") -> None:
    """Refuse an output path under a file or in a folder where nothing can be created (probed with a temp folder)."""
    base = _first_existing(dest.parent if dest.name else dest)
    check(base.is_dir(), f"{flag} {shown(dest)} lies under {base}, which is a file, not a folder; choose another {flag}")
    try:
        probe = tempfile.mkdtemp(prefix=".guidekit-probe-", dir=base)
    except OSError as e:
        raise GuidekitError(f"{flag} {shown(dest)}: nothing can be created in {base} ({e.strerror or e}); choose a "
                            f"folder you can write to") from e
    os.rmdir(probe)


def check_output(dest: str | Path, overwrite: bool, command: str | None = None, flag: str = "--out") -> Path:
    """Refuse an output folder that is a file, cannot be created, or exists and is not empty, unless overwrite and
    it is an earlier output of `command` (written_by); call before long work."""
    check(str(dest).strip() != "", f"{flag} is empty; name the output folder, e.g. {flag} out/")
    dest = Path(dest).expanduser()
    check(not dest.exists() or dest.is_dir(), f"{flag} {shown(dest)} exists and is a file; choose another {flag}")
    check_writable(dest, flag)
    if not (dest.exists() and any(dest.iterdir())):
        return dest
    check(overwrite, f"{shown(dest)} already exists and is not empty; choose another {flag} or pass --overwrite")
    owner = written_by(dest)
    check(command is not None and owner == command,
          f"--overwrite replaces only an earlier output of 'guidekit {command}' (a folder whose manifest.json says "
          f"\"command\": \"{command}\"), and {shown(dest)} is "
          + (f"an output of 'guidekit {owner}'" if owner else "not one (it holds "
             + ", ".join(sorted(p.name for p in dest.iterdir())[:5]) + ("…" if len(list(dest.iterdir())) > 5 else "")
             + ")") + f"; choose another {flag}, or delete it yourself if you mean to")
    return dest


def package_root() -> Path:
    """The installed guidekit package's folder (zoo weights, evaluator, samples): never an output."""
    import guidekit

    return Path(guidekit.__file__).resolve().parent


def _overlap(a: Path, b: Path) -> bool:
    """Whether a and b are the same path or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def check_no_overlap(outputs: dict[str, Path], inputs: dict[str, Path]) -> None:
    """Refuse an output that is, contains or lies inside an input, the package's own files or the working folder."""
    here = Path.cwd().resolve()
    guarded = dict(inputs, **{"guidekit's own files": package_root()})
    for flag, out in outputs.items():
        o = Path(out).expanduser().resolve()
        check(not (o == here or o in here.parents), f"{flag} {shown(out)} is the working folder or holds it; "
                                                    f"name a new folder inside it, e.g. {flag} out/")
        for what, path in guarded.items():
            i = Path(path).expanduser().resolve()
            if not _overlap(o, i):
                continue
            where = "is" if o == i else ("holds" if o in i.parents else "lies inside")
            raise GuidekitError(f"{flag} {shown(out)} {where} {what} ({shown(path)}): guidekit never writes over "
                                f"its inputs or its own files, whatever --overwrite says; choose an {flag} outside it")


def make_dirs(folder: Path) -> None:
    """mkdir -p that fsyncs the parent of every folder it creates, so the new entries survive a crash."""
    if folder.is_dir():
        return
    make_dirs(folder.parent)
    with contextlib.suppress(FileExistsError):
        folder.mkdir()
        fsync_path(folder.parent)


def _load_renameat2():
    """libc's renameat2 (Linux), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, TypeError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or file system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _sync_tree(tmp: Path, umask: int) -> None:
    """Give every file the usual permissions and fsync it, then the folder."""
    for f in tmp.rglob("*"):
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)
            fsync_path(f)
    fsync_path(tmp)


def _replace(tmp: Path, dest: Path) -> Path | None:
    """Put tmp in dest's place; return the path now holding the old dest (to delete), if any."""
    if not dest.exists():
        os.replace(tmp, dest)
        return None
    if exchange(tmp, dest):
        return tmp
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        os.replace(dest, old)
        slow_point()
        os.replace(tmp, dest)
    except BaseException:  # an error (or a second signal) between the two renames must not lose dest
        if old.exists() and not dest.exists():
            with contextlib.suppress(OSError):
                os.replace(old, dest)
        raise
    return old


@contextlib.contextmanager
def atomic_folder(dest: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside dest; on success it replaces dest, on error it is removed."""
    dest = Path(dest)
    check(not dest.exists() or dest.is_dir(), f"{dest} exists and is a file; choose another --out")
    check(overwrite or not (dest.exists() and any(dest.iterdir())),
          f"{dest} already exists and is not empty; choose another --out or pass --overwrite")
    make_dirs(dest.parent)
    recover_leftovers(dest.parent, dest.name)  # what an earlier, killed write of dest left behind
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700: give the result the usual permissions
    try:
        yield tmp
        slow_point()
        _sync_tree(tmp, umask)
        slow_point()
        old = _replace(tmp, dest)
        fsync_path(dest.parent)
        slow_point()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _owner_alive(owner: str) -> bool:
    """Whether the process named by a leftover's tag (`PID` or `PID-suffix`) still runs; unknown: no."""
    pid = owner.split("-", 1)[0]
    if not pid.isdigit() or int(pid) == 0:
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # another user's live process
    except (ProcessLookupError, OverflowError):
        return False
    return True


def stale_leftovers(folder: str | Path, name: str | None = None) -> list[tuple[Path, str, str]]:
    """(path, NAME, kind) of the leftovers in folder (of NAME `name` only, if given) whose process is gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir()):
        m = LEFTOVER.match(p.name)
        if m and (name is None or m["name"] == name) and not _owner_alive(m["owner"]):
            found.append((p, m["name"], m["kind"]))
    return found


def recover_leftovers(folder: str | Path, name: str | None = None) -> list[Path]:
    """Undo what kills left in folder (for NAME `name` only, if given): restore a missing NAME from
    `.NAME.old-*`, delete stale temp folders. Returns the paths restored or deleted; safe to run concurrently."""
    touched = []
    for path, target, kind in stale_leftovers(folder, name):
        if not (kind == "old" and _restore(path, path.with_name(target))):
            _remove(path)
        touched.append(path)
    return touched


def _remove(path: Path) -> None:
    """Delete a file or folder tree, ignoring what is already gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _restore(old: Path, dest: Path) -> bool:
    """Move old back to dest if dest is missing; False if dest exists (old is then garbage)."""
    if dest.exists():
        return False
    try:
        os.replace(old, dest)
    except FileNotFoundError:
        return True  # another process restored it first
    except OSError:
        if not dest.exists():
            raise
        return False
    fsync_path(dest.parent)
    return True
