"""Checkpoints survive SIGKILL: a training run killed at 22 seeded points (many inside a save) and resumed each time
ends bit-identical to an uninterrupted run; recovery from every leftover a kill can make is tested directly too.

The killed runs are `guidekit.cli.main(["train", ...])` — the entry point of `python -m guidekit.cli train` — in
processes forked from a server that imported torch once (a fresh interpreter spends ~7 s importing torch and
torch._dynamo on the busy 2-core VM; 24 of them would blow the test's time budget); the run that finishes is a
real `python -m guidekit.cli train --resume`. Figures: pytest tests/test_kill_resume.py -q -s (docs/results.md).
"""

import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from guidekit import io
from guidekit.checkpoints.runs import complete_checkpoints, newest_checkpoint
from guidekit.data import load_dataset
from guidekit.diffusion import NoiseSchedule
from guidekit.models import UNetConfig
from guidekit.training import TrainConfig, Trainer
from guidekit.training.runs import prune

STEPS, KILLS, SEED = 32, 22, 20261126
ARGS = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", str(STEPS), "--batch-size", "4",
        "--save-every", "1", "--log-every", "1", "--keep", "2", "--warmup", "4", "--seed", "3", "--no-progress"]
SLOW_WRITES = "0.02"  # seconds per write stage (about 10 per save): most of a step is spent saving
DEAD = 99999999  # a process id no live process has (above Linux's pid_max)
# imported once by the fork server (torch._dynamo alone is ~3 s: AdamW imports it)
PRELOAD = ["torch", "torch._dynamo", "accelerate", "guidekit.training", "guidekit.data", "guidekit.models",
           *(f"guidekit.cli.{m}" for m in ("control", "demo", "edit", "evaluate", "inpaint", "sample", "sweep", "train",
                                           "train_classifier", "train_controlnet", "ui", "zoo"))]


def _run_cli(argv: list[str], log: str, slow: str | None) -> None:
    """Forked child: run the guidekit CLI with one thread, output to `log`; exit with its exit code."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop(io.SLOW_WRITES_ENV, None)
    if slow:
        os.environ[io.SLOW_WRITES_ENV] = slow
    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock, which a SIGKILL leaks
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from guidekit.cli import main

    sys.exit(main(argv))


def _logged_steps(out: Path) -> int:
    """The last step with a complete row in out/log.csv (0 if none)."""
    try:
        lines = (out / "log.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return 0
    steps = [int(r.split(",")[0]) for r in lines if r.count(",") == 5 and r.split(",")[0].isdigit()]
    return max(steps, default=0)


def _wait_for(cond, proc, timeout: float = 60.0) -> bool:
    """Poll cond() every 5 ms until it holds (True) or proc exits (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        if not proc.is_alive():
            return False
        time.sleep(0.005)
    raise AssertionError("the training child made no progress")


def _leftovers(out: Path) -> dict[Path, str]:
    """{path: kind (tmp/old/del)} of what killed writes left in the run folder."""
    return {path: kind for folder in (out, out / "checkpoints") for path, _, kind in io.stale_leftovers(folder)}


def _export_behind(out: Path) -> bool:
    """Whether out/model differs from the newest complete checkpoint's export (a kill between the two writes)."""
    ckpts = complete_checkpoints(out)
    if not ckpts:
        return False
    model = out / "model" / "model.safetensors"
    return not model.is_file() or model.read_bytes() != (ckpts[-1] / "model.safetensors").read_bytes()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys(), (a, b)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), (a.name, k)


def _columns(out: Path) -> list[tuple[str, ...]]:
    """(step, loss, lr, grad_norm) of every log.csv row."""
    rows = (out / "log.csv").read_text().splitlines()[1:]
    return [tuple(r.split(",")[:4]) for r in rows]


def test_kill_and_resume_is_bit_exact(tmp_path):
    t0 = time.time()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    log = str(tmp_path / "children.log")
    ref, out = tmp_path / "ref", tmp_path / "killed"

    child = ctx.Process(target=_run_cli, args=(ARGS + ["--out", str(ref)], log, None))
    child.start()
    child.join()
    assert child.exitcode == 0, Path(log).read_text()[-3000:]
    ref_s = time.time() - t0

    rng = random.Random(SEED)
    kills, in_save, kinds, between, startup, newest = 0, 0, [], 0, 0, 0
    for i in range(KILLS):
        resume = ["--resume"] if complete_checkpoints(out) else []
        logged, left_before = _logged_steps(out), _leftovers(out)
        child = ctx.Process(target=_run_cli, args=(ARGS + ["--out", str(out)] + resume, log, SLOW_WRITES))
        child.start()
        if i % 4 == 3 or newest >= (i + 1) * (STEPS - 4) // KILLS:  # during start-up and --resume recovery
            time.sleep(rng.uniform(0.0, 0.6))
        else:  # just after a new step's log row (its save follows at once), + a random fraction of a step
            assert _wait_for(lambda: _logged_steps(out) > logged, child), Path(log).read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.4))
        child.kill()
        child.join()
        assert child.exitcode == -9, Path(log).read_text()[-3000:]
        kills += 1
        # a kill never loses a durable checkpoint, nor the export (it may lag one save behind until --resume)
        steps = [int(c.name.split("-")[1]) for c in complete_checkpoints(out)]
        assert not resume or steps[-1] >= newest, (steps, newest)
        left = {p: k for p, k in _leftovers(out).items() if p not in left_before}
        behind = bool(steps) and steps[-1] != newest and _export_behind(out)
        assert not steps or (out / "model" / "config.json").is_file() or "old" in left.values()
        in_save += bool(left) or behind
        between += behind and not left
        startup += not (left or behind) and _logged_steps(out) <= logged
        kinds += left.values()
        newest = steps[-1] if steps else 0
    killed_s = time.time() - t0 - ref_s

    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(io.SLOW_WRITES_ENV, None)
    done = subprocess.run([sys.executable, "-m", "guidekit.cli", *ARGS, "--out", str(out), "--resume"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"trained to step {STEPS}" in done.stdout
    final_s = time.time() - t0 - ref_s - killed_s

    _assert_same_tensors(out / "model" / "model.safetensors", ref / "model" / "model.safetensors")
    last = f"step-{STEPS:08d}"
    for name in ("model.safetensors", "raw.safetensors", "optimizer.safetensors"):
        _assert_same_tensors(out / "checkpoints" / last / name, ref / "checkpoints" / last / name)
    assert _columns(out) == _columns(ref)  # every step logged once, with the same loss, lr and grad norm
    assert [p.name for p in (out / "checkpoints").iterdir()] == [p.name for p in (ref / "checkpoints").iterdir()]
    assert not [p for p in out.rglob(".*")], "leftovers after the finished run"
    runtime = time.time() - t0
    print(f"\nkill test: {kills} SIGKILLs in a {STEPS}-step run (saved every step): {in_save} landed during a "
          f"write ({len(kinds)} new leftovers: {kinds.count('tmp')} temp, {kinds.count('old')} moved-aside, "
          f"{kinds.count('del')} half-pruned; {between} between the checkpoint and the export), {startup} before "
          f"the first new step (start-up or --resume recovery), {kills - in_save - startup} during a step; "
          f"uninterrupted run {ref_s:.1f} s, kill/resume cycles {killed_s:.1f} s, final `python -m guidekit.cli "
          f"train --resume` {final_s:.1f} s, whole test {runtime:.1f} s; final weights bit-identical")
    assert kills >= 20 and in_save >= 5, (kills, in_save)


# ---- recovery from each kind of leftover, made by hand ----

MICRO = dict(channels=8, norm_groups=4)


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset("samples").subset(torch.arange(16))


def _trainer(ds, out, steps=3, resume=False, keep=5):
    cfg = TrainConfig(steps=steps, batch_size=8, save_every=1, log_every=1, keep=keep)
    config = UNetConfig.preset("tiny", num_classes=ds.num_classes, **MICRO)
    return Trainer(config, ds, NoiseSchedule.linear(100), cfg, out, resume=resume)


def test_resume_restores_moved_aside_export_and_deletes_temp_folders(tiny_data, tmp_path):
    out = tmp_path / "run"
    _trainer(tiny_data, out).fit(progress=False)
    want = (out / "model" / "model.safetensors").read_bytes()
    ck = out / "checkpoints"
    os.replace(out / "model", out / f".model.old-{DEAD}")  # killed between atomic_folder's two renames
    (out / f".model.tmp-{DEAD}-abc").mkdir()
    (ck / f".step-00000004.tmp-{DEAD}-x").mkdir()  # killed while writing a checkpoint
    shutil.copytree(ck / "step-00000001", ck / f".step-00000001.del-{DEAD}")  # killed while pruning
    (ck / ".step-00000005.tmp-legacy").mkdir()  # an older guidekit's temp folder (no process id)
    alive = ck / f".step-00000006.tmp-{os.getpid()}-y"  # a live writer's folder is left alone
    alive.mkdir()
    assert newest_checkpoint(out).name == "step-00000003"
    assert (out / "model" / "model.safetensors").read_bytes() == want
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert sorted(p.name for p in ck.iterdir()) == [alive.name] + [f"step-0000000{i}" for i in (1, 2, 3)]


def test_resume_skips_incomplete_checkpoint_and_prune_removes_it(tiny_data, tmp_path):
    out = tmp_path / "run"
    _trainer(tiny_data, out, keep=2).fit(progress=False)
    (out / "checkpoints" / "step-00000003" / "optimizer.safetensors").unlink()
    assert [c.name for c in complete_checkpoints(out)] == ["step-00000002"]
    trainer = _trainer(tiny_data, out, steps=4, resume=True, keep=2)
    assert trainer.step == 2
    trainer.fit(progress=False)  # saves 3 (replacing the broken one) and 4, prunes 2
    assert [c.name for c in (out / "checkpoints").iterdir()] == ["step-00000003", "step-00000004"]
    assert all(c in complete_checkpoints(out) for c in (out / "checkpoints").iterdir())


def test_prune_keeps_newest_complete_checkpoints(tmp_path):
    ck = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        folder = ck / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "a.json").write_text("{}")
        (folder / "state.json").write_text(json.dumps({"files": ["a.json", "state.json"]}))
    (ck / "step-00000004").mkdir()  # incomplete: no state.json
    prune(tmp_path, 2)
    assert sorted(p.name for p in ck.iterdir()) == ["step-00000002", "step-00000003"]


def test_resume_rewrites_an_export_left_behind(tiny_data, tmp_path):
    out = tmp_path / "run"
    _trainer(tiny_data, out).fit(progress=False)
    # killed after the last checkpoint but before the export: model/ still holds step 2's weights
    shutil.rmtree(out / "model")
    shutil.copytree(out / "checkpoints" / "step-00000002", out / "model")
    for extra in ("raw.safetensors", "optimizer.safetensors", "state.json"):
        (out / "model" / extra).unlink()
    trainer = _trainer(tiny_data, out, resume=True)
    assert trainer.step == 3
    trainer.fit(progress=False)  # nothing left to train
    for name in ("config.json", "model.safetensors"):
        assert (out / "model" / name).read_bytes() == (out / "checkpoints" / "step-00000003" / name).read_bytes()


def test_resume_trims_log_rows_past_the_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    _trainer(tiny_data, out).fit(progress=False)
    shutil.rmtree(out / "checkpoints" / "step-00000003")
    with open(out / "log.csv", "a") as f:
        f.write("4,0.5")  # a row a kill cut short
    _trainer(tiny_data, out, resume=True)
    assert [r.split(",")[0] for r in (out / "log.csv").read_text().splitlines()] == ["step", "1", "2"]


def test_failed_second_rename_keeps_the_old_folder(tmp_path, monkeypatch):
    dest = tmp_path / "model"
    io_write = lambda text: (lambda tmp: (tmp / "f.txt").write_text(text))  # noqa: E731
    with io.atomic_folder(dest) as tmp:
        io_write("old")(tmp)
    monkeypatch.setattr(io, "exchange", lambda a, b: False)  # a file system without atomic swaps
    real, calls = os.replace, []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError("simulated failure between the two renames")
        real(a, b)
    monkeypatch.setattr(io.os, "replace", flaky)
    with pytest.raises(OSError, match="simulated"):
        with io.atomic_folder(dest) as tmp:
            io_write("new")(tmp)
    monkeypatch.setattr(io.os, "replace", real)
    assert (dest / "f.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with io.atomic_folder(dest) as tmp:  # the two-rename path itself
        io_write("newer")(tmp)
    assert (dest / "f.txt").read_text() == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_replace_swaps_in_one_step(tmp_path):
    if io._renameat2 is None:
        pytest.skip("no renameat2 on this platform: atomic_folder moves the old folder aside instead")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert io.exchange(a, b) and (b / "x").exists() and not (a / "x").exists()


def test_atomic_folder_cleans_what_a_killed_write_of_the_same_folder_left(tmp_path):
    dest = tmp_path / "samples"
    (tmp_path / f".samples.tmp-{DEAD}-abc").mkdir()  # a `guidekit sample --out samples` killed mid-write
    (tmp_path / f".samples.old-{DEAD}").mkdir()  # ... or between the two renames (samples/ then missing)
    (tmp_path / f".other.tmp-{DEAD}-abc").mkdir()  # another folder's leftovers are not this write's business
    with io.atomic_folder(dest) as tmp:
        (tmp / "0.png").write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.tmp-{DEAD}-abc", "samples"]
    assert [p.name for p in dest.iterdir()] == ["0.png"]
