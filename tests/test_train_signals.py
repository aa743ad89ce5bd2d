"""SIGINT/SIGTERM during training: the first finishes the step, saves and exits 130/143 with a resume hint; a second
aborts at once without saving; fit restores the previous handlers."""

import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from guidekit import io
from guidekit.checkpoints import complete_checkpoints
from guidekit.data import load_dataset
from guidekit.diffusion import NoiseSchedule
from guidekit.models import UNetConfig
from guidekit.training import TrainConfig, Trainer
from guidekit.training.base import TrainingInterrupted

MICRO = dict(channels=8, norm_groups=4)
CLI = [sys.executable, "-m", "guidekit.cli"]
TRAIN = ["train", "--dataset", "samples", "--preset", "tiny", "--steps", "1000", "--batch-size", "4",
         "--save-every", "1000", "--log-every", "1", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset("samples").subset(torch.arange(16))


def _trainer(ds, out, signals_at_step: int | None = None, signals=(), resume=False):
    """A micro Trainer (save_every 100) that sends itself `signals` during step `signals_at_step`."""
    cfg = TrainConfig(steps=5, batch_size=8, save_every=100, log_every=1)
    trainer = Trainer(UNetConfig.preset("tiny", num_classes=ds.num_classes, **MICRO), ds, NoiseSchedule.linear(100),
                      cfg, out, resume=resume)
    loss_on = trainer.loss_on

    def signalling_loss_on(step):
        if step == signals_at_step:
            for s in signals:
                os.kill(os.getpid(), s)
                time.sleep(0.05)  # the Python-level handler runs before the next one is sent
        return loss_on(step)
    trainer.loss_on = signalling_loss_on
    return trainer


def _handlers():
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def test_fit_restores_previous_handlers(tiny_data, tmp_path):
    before = _handlers()
    _trainer(tiny_data, tmp_path / "run").fit(progress=False)
    assert _handlers() == before


def test_first_signal_finishes_step_saves_and_raises(tiny_data, tmp_path):
    before = _handlers()
    trainer = _trainer(tiny_data, tmp_path / "run", signals_at_step=1, signals=[signal.SIGTERM])
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(progress=False)
    e = info.value
    assert (e.exit_code, e.step, e.aborted, e.checkpoint) == (143, 2, False, tmp_path / "run/checkpoints/step-00000002")
    assert "checkpoint saved at" in str(e) and _handlers() == before
    assert complete_checkpoints(tmp_path / "run") == [e.checkpoint]
    assert _trainer(tiny_data, tmp_path / "run", resume=True).step == 2


def test_second_signal_aborts_without_saving(tiny_data, tmp_path):
    before = _handlers()
    trainer = _trainer(tiny_data, tmp_path / "run", signals_at_step=1, signals=[signal.SIGINT, signal.SIGINT])
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit(progress=False)
    assert info.value.aborted and info.value.exit_code == 130 and info.value.checkpoint is None
    assert _handlers() == before
    assert not (tmp_path / "run" / "checkpoints").exists() and not list((tmp_path / "run").glob(".*"))


# ---- the CLI, as a subprocess ----

class Child:
    """`python -m guidekit.cli ARGS` with its stderr collected line by line."""

    def __init__(self, args: list[str], slow_writes: str | None = None):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop(io.SLOW_WRITES_ENV, None)
        if slow_writes:
            env[io.SLOW_WRITES_ENV] = slow_writes
        self.proc = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_until(self, cond, timeout: float = 120.0) -> None:
        """Poll cond() until it holds; fail if the child exits first."""
        end = time.time() + timeout
        while not cond():
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            assert time.time() < end, "timed out"
            time.sleep(0.01)

    def finish(self) -> tuple[int, str]:
        """(exit code, stderr)."""
        rc = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return rc, "".join(self.lines)


def _first_row(out):
    """Whether out/log.csv holds a logged step."""
    log = out / "log.csv"
    return log.exists() and len(log.read_text().splitlines()) >= 2


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_saves_checkpoint_and_exits_with_its_code(tmp_path, sig, code):
    out = tmp_path / "run"
    child = Child(TRAIN + ["--out", str(out)])
    child.wait_until(lambda: _first_row(out))
    child.proc.send_signal(sig)
    rc, err = child.finish()
    assert rc == code, err
    ckpts = complete_checkpoints(out)
    assert len(ckpts) == 1, err
    step = int(ckpts[0].name.split("-")[1])
    last_row = (out / "log.csv").read_text().splitlines()[-1]
    assert int(last_row.split(",")[0]) == step  # the step in flight was finished, logged and saved
    line = [ln for ln in err.splitlines() if "checkpoint saved at" in ln]
    assert line and str(ckpts[0]) in line[0] and "resume with: guidekit train" in line[0], err
    if sig == signal.SIGINT:  # resume with the printed command, two steps further
        resume = shlex.split(line[0].split("resume with: ", 1)[1])
        assert resume[-1] == "--resume"
        done = subprocess.run(CLI + resume[1:] + ["--steps", str(step + 2)], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert done.returncode == 0, done.stderr
        assert f"trained to step {step + 2}" in done.stdout


def test_cli_second_signal_aborts_without_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    child = Child(TRAIN + ["--out", str(out)], slow_writes="2")  # a save would take seconds: abort lands first
    child.wait_until(lambda: _first_row(out))
    child.proc.send_signal(signal.SIGINT)
    child.wait_until(lambda: any("SIGINT received" in ln for ln in child.lines))
    child.proc.send_signal(signal.SIGINT)
    rc, err = child.finish()
    assert rc == 130, err
    assert "aborted by a second SIGINT" in err and "checkpoint saved" not in err
    assert not complete_checkpoints(out) and not list(out.rglob(".*")), sorted(out.rglob("*"))
