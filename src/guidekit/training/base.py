"""The loop every trainer shares: accelerate, AdamW with warm-up, per-step seeded draws, EMA, logs, checkpoints.

A subclass builds its network (`build`), says which part is trained (`trainable`), computes a step's loss
(`forward_step`) and names its export files (`export_files`); everything else — the optimizer, gradient clipping,
non-finite-loss handling, EMA, the progress bar, log.csv, OUT/checkpoints/step-N and bit-exact `--resume` — lives
here once.

Kills: every folder is written atomically (guidekit.io) and state.json lists the checkpoint's files, so a kill at
any point leaves the newest complete checkpoint resumable; `--resume` first cleans what the kill left (stale temp
folders, a folder moved aside), re-syncs the export folder to the checkpoint and drops log rows past it.
Signals: during fit, the first SIGINT/SIGTERM finishes the current step, saves and raises TrainingInterrupted
(the CLI exits 130/143); a second one raises it at once, without saving.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import filecmp
import functools
import math
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from guidekit.checkpoints.files import load_weights, read_json, read_tensors, write_folder
from guidekit.checkpoints.runs import complete_checkpoints, newest_checkpoint, recover_run
from guidekit.errors import GuidekitError, check
from guidekit.fast import COMPILE_MODES, cudnn_benchmark
from guidekit.io import atomic_folder, write_csv
from guidekit.training.ema import EMA
from guidekit.training.runs import prune, refuse_existing, warmup_lr
from guidekit.training.state import flatten_optimizer, unflatten_optimizer

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "img_per_s", "elapsed_s"]


def _step_generator(seed: int, step: int) -> torch.Generator:
    """Every random draw of step `step` comes from here, so a resumed run repeats an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Indices of step's batch: a fresh permutation per epoch (with replacement when n < batch)."""
    if n < batch:
        return torch.randint(n, (batch,), generator=_step_generator(seed, step))
    per_epoch = n // batch
    epoch, pos = divmod(step, per_epoch)
    return _epoch_permutation(n, seed, epoch)[pos * batch:(pos + 1) * batch]


@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch (cached: drawn once per epoch, not once per step; callers only slice it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def _same_files(src: Path, dest: Path, names: list[str]) -> bool:
    """Whether folder dest holds exactly the files `names`, byte-equal to those in src."""
    if not dest.is_dir() or sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) != sorted(names):
        return False
    return all(filecmp.cmp(src / n, dest / n, shallow=False) for n in names)


class EtaNotice:
    """On the CPU, once a few steps are timed: how long the rest of the run will take, if that is long (stderr)."""

    after, long_seconds = 5, 600  # steps timed (the first one excluded: it warms caches up); what counts as long

    def __init__(self, first: int, total: int, desc: str, enabled: bool):
        self.first, self.total, self.desc, self.enabled, self.t0 = first, total, desc, enabled, None

    def at(self, step: int) -> None:
        """Call before each step."""
        if not self.enabled:
            return
        if step == self.first + 1:
            self.t0 = time.time()
        elif self.t0 is not None and step == self.first + 1 + self.after:
            self.enabled = False
            per_step = (time.time() - self.t0) / self.after
            left = per_step * (self.total - step)
            if left > self.long_seconds:
                print(f"{self.desc}: {per_step:.2g} s per step on this CPU, so the {self.total - step} steps left "
                      f"take about {duration(left)}; --max-minutes M stops (and saves) earlier, --resume continues "
                      f"later, and a GPU is far faster", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """A rough human duration: 40 s, 12 min, 3.5 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class TrainingInterrupted(KeyboardInterrupt):
    """fit stopped by SIGINT/SIGTERM: after saving `checkpoint` (first signal), or at once without saving."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, aborted: bool = False):
        self.signum, self.step, self.checkpoint, self.aborted = signum, step, checkpoint, aborted
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: what stopped training and what was saved."""
        name = signal.Signals(self.signum).name
        if self.aborted:
            return (f"aborted by a second {name} during step {self.step + 1}, without saving; --resume continues "
                    f"from the newest complete checkpoint, if any")
        if self.checkpoint is None:
            return f"stopped by {name} before a step finished; nothing to save"
        return f"stopped by {name} after step {self.step}; checkpoint saved at {self.checkpoint}"


class BaseTrainer:
    """Shared training machinery; writes checkpoints/, log.csv and the export folder under out_dir."""

    desc = "train"  # progress-bar label
    export_name = "model"  # OUT/<export_name> holds the exported (EMA) weights
    config_name = "config.json"  # the export file check_resume reads back
    weights_name = "model.safetensors"  # the export file of the (EMA) weights
    other_entries: tuple[str, ...] = ()  # what else a new run's OUT may hold (an earlier stage's run folder)
    ema_optional = False  # True: ema_decay == 0 means no EMA (the raw weights are exported)
    # a non-finite step is skipped on the device (fused AdamW's found_inf), without a per-step host sync; None = on
    # CUDA. A trainer whose after_step reads per-step values on the host sets False (it syncs anyway).
    sync_free: bool | None = None

    def __init__(self, config, out_dir: str | Path, resume: bool = False, mixed_precision: str = "auto"):
        from accelerate import Accelerator  # heavy import, only when training

        self.cfg = config
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() else "no"
        # cpu=True on a machine without CUDA: torchrun/accelerate launch then form a gloo group (MULTI_CPU)
        self.acc = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
        check(config.batch_size % self.acc.num_processes == 0,
              f"batch_size {config.batch_size} must be divisible by the {self.acc.num_processes} processes")
        self.out = Path(out_dir)
        torch.manual_seed(config.seed)
        net = self.build()
        self.channels_last = False  # NHWC only with --compile: eager GroupNorm is slower in it (docs/results.md)
        trained = self.trainable(net)
        self.ema = None if self.ema_optional and config.ema_decay == 0 else EMA(trained, config.ema_decay)
        cuda = self.acc.device.type == "cuda"
        self.sync_free = cuda if type(self).sync_free is None else type(self).sync_free
        opt = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=config.lr,
                                weight_decay=config.weight_decay, fused=cuda or self.sync_free)
        if self.sync_free:  # 1 on a step whose loss or gradient norm is not finite: fused AdamW then skips it
            self._adamw, self._found_inf = opt, torch.zeros((), device=self.acc.device)
            self._bad_run = torch.zeros((), dtype=torch.int32, device=self.acc.device)  # non-finite steps in a row
            self._bad_peak = torch.zeros_like(self._bad_run)  # the longest such run so far
        self.net, self.opt = self.acc.prepare(net, opt)
        self.step, self._signal, self._saved_step = 0, None, None
        if resume:
            self._resume()
        else:
            if self.acc.is_main_process:
                recover_run(self.out)
            refuse_existing(self.out, self.export_name, self.other_entries)
            if self.acc.is_main_process:  # the log of an attempt killed before its first checkpoint
                (self.out / "log.csv").unlink(missing_ok=True)

    # ---- what a subclass provides ----

    def build(self) -> torch.nn.Module:
        """The network the loss is computed with (seeded by cfg.seed before this is called)."""
        raise NotImplementedError

    def trainable(self, net: torch.nn.Module) -> torch.nn.Module:
        """The part of net that is optimized, averaged by the EMA and saved; all of it by default."""
        return net

    def forward_step(self, step: int) -> tuple[torch.Tensor, object]:
        """(loss, anything after_step needs) of step's batch shard; by default (loss_on(step), None)."""
        return self.loss_on(step), None

    def loss_on(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, loss: torch.Tensor, aux) -> None:
        """Called after every optimizer step (e.g. to accumulate metrics)."""

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        """The files of the export folder (config.json + model.safetensors) for these weights."""
        raise NotImplementedError

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        """Refuse a checkpoint written with another model configuration."""

    @functools.cached_property
    def data_fingerprint(self) -> str:
        """The training data's fingerprint (ImageDataset.fingerprint), recorded in every checkpoint."""
        return self.dataset.fingerprint()

    def check_data(self, ckpt: Path, recorded) -> None:
        """Refuse to resume on other data than the run recorded (size, then fingerprint where recorded)."""
        if not isinstance(recorded, dict):
            return
        what = f"{recorded.get('name')}, {recorded.get('size')} images"
        check(recorded.get("size") in (None, len(self.dataset)) and recorded.get("fingerprint") in (
              None, self.data_fingerprint), f"--resume: {ckpt.parent.parent} was trained on other data ({what}, "
              f"fingerprint {recorded.get('fingerprint')}) than found now ({self.dataset.name}, {len(self.dataset)} "
              f"images, fingerprint {self.data_fingerprint}); point --data/--dataset at the same files, or start a "
              f"new run in another --out")

    def extra_state(self) -> dict:
        """More entries of state.json."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what extra_state wrote."""

    def log(self, bar, loss: torch.Tensor, norm: float, rate: float, elapsed: float, regular: bool) -> None:
        """Write a log.csv row (LOG_FIELDS) and the progress-bar postfix at a log step."""
        bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
        self.write_log(LOG_FIELDS, [self.step, f"{loss.item():.6f}", f"{self.lr_at(self.step - 1):.3e}",
                                    f"{norm:.4f}", f"{rate:.1f}", f"{elapsed:.1f}"])

    # ---- shared machinery ----

    def compile(self, mode: str = "default") -> None:
        """Run the training forward through torch.compile (--compile [MODE]: default, reduce-overhead = with CUDA
        graphs, max-autotune[-no-cudagraphs]); the saved weights are unaffected."""
        check(mode in COMPILE_MODES, f"--compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
        if self.acc.device.type == "cuda":  # compiled NHWC convolutions: the fast layout for tensor cores
            self.net.to(memory_format=torch.channels_last)
            self.channels_last = True
        self.net = torch.compile(self.net, mode=None if mode == "default" else mode)

    def global_mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss averaged over processes (each holds its shard's), so log.csv shows the global batch's."""
        if self.acc.num_processes == 1:
            return loss
        return self.acc.reduce(loss.detach().clone(), reduction="mean")

    @property
    def raw(self) -> torch.nn.Module:
        """The network unwrapped from accelerate."""
        return self.acc.unwrap_model(self.net, keep_torch_compile=False)

    @property
    def trained(self) -> torch.nn.Module:
        """The optimized part of the unwrapped network."""
        return self.trainable(self.raw)

    def lr_at(self, step: int) -> float:
        return warmup_lr(self.cfg.lr, self.cfg.warmup, step)

    def fit(self, max_seconds: float | None = None, progress: bool = True) -> Path:
        """Train to cfg.steps (or until max_seconds), logging and checkpointing; return the export folder.

        The first SIGINT/SIGTERM finishes the current step, saves and raises TrainingInterrupted; a second one
        raises it at once, without saving. The previous signal handlers are restored on return."""
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc=self.desc,
                   disable=not (progress and self.acc.is_main_process))
        # cuDNN autotunes each convolution shape on the first step (forward and backward) and keeps the fastest
        with self._stop_on_signals(), bar, cudnn_benchmark(self.acc.device.type == "cuda"):
            return self._fit(bar, max_seconds)  # (the bar is closed before an interruption's message is printed)

    def _fit(self, bar, max_seconds: float | None) -> Path:
        """The training loop of fit."""
        cfg, start = self.cfg, time.time()
        images, window_t, norm = 0, time.time(), float("nan")
        params = [p for p in self.net.parameters() if p.requires_grad]
        self._bad = 0
        eta = EtaNotice(self.step, cfg.steps, self.desc, self.acc.device.type == "cpu" and self.acc.is_main_process)
        while self.step < cfg.steps:
            eta.at(self.step)
            self._stop_if_signalled()
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            loss, aux = self.forward_step(self.step)
            if self.sync_free:
                norm = self._update_on_device(loss, params)
            else:
                norm = self._update_checked(loss, params)
                if norm is None:  # a skipped step
                    self.step += 1
                    continue
            self.after_step(loss, aux)
            self.step += 1
            images += cfg.batch_size
            bar.update(1)
            regular = self.step % cfg.log_every == 0
            if regular or self.step == cfg.steps:
                self._check_bad_run()
                rate = images / max(time.time() - window_t, 1e-9)
                self.log(bar, self.global_mean(loss), float(norm), rate, time.time() - start, regular)
                if regular:
                    images, window_t = 0, time.time()
            out_of_time = max_seconds is not None and time.time() - start > max_seconds
            if self.step % cfg.save_every == 0 or self.step == cfg.steps or out_of_time:
                self._check_bad_run()
                self.save()
            if out_of_time:
                break
        return self.out / self.export_name

    def _update_checked(self, loss: torch.Tensor, params: list) -> torch.Tensor | None:
        """Backward, clipping, AdamW and EMA, with the host checking the loss and the gradient norm: a non-finite
        one skips the step (None) and max_bad_steps in a row abort."""
        if torch.isfinite(loss):
            self.acc.backward(loss)
            norm = self.acc.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip else math.inf)
            if torch.isfinite(norm):
                self._bad = 0
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.trained, self.step)
                return norm
        self._bad += 1
        self.opt.zero_grad(set_to_none=True)
        check(self._bad < self.cfg.max_bad_steps, f"loss was not finite for {self._bad} steps in a row at step "
                                                   f"{self.step}; lower --lr or check the data for NaN")
        return None

    def _update_on_device(self, loss: torch.Tensor, params: list) -> torch.Tensor:
        """The same update with no host sync: a non-finite loss or gradient norm sets found_inf, so fused AdamW
        and the EMA leave everything as it was; runs of such steps are counted on the device (_check_bad_run)."""
        self.acc.backward(loss)
        norm = self.acc.clip_grad_norm_(params, self.cfg.grad_clip if self.cfg.grad_clip else math.inf)
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(norm))
        self._found_inf.copy_(bad)
        # set every step: an fp16 GradScaler puts its own found_inf (inf/NaN gradients) there and deletes it after
        self._adamw.found_inf = self._found_inf
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.trained, self.step, keep=1 - self._found_inf)
        self._bad_run = torch.where(bad, self._bad_run + 1, 0)
        self._bad_peak = torch.maximum(self._bad_peak, self._bad_run)
        return norm

    def _check_bad_run(self) -> None:
        """Abort (at a log or save step) if the device counted max_bad_steps non-finite steps in a row."""
        if not self.sync_free:
            return
        peak = int(self._bad_peak)
        check(peak < self.cfg.max_bad_steps, f"loss was not finite for {peak} steps in a row by step {self.step}; "
                                             f"lower --lr or check the data for NaN")

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """Route SIGINT/SIGTERM to _on_signal while fit runs (main thread only), then restore the old handlers."""
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum: int, frame) -> None:
        """First signal: ask the loop to save and stop after this step; second: abort at once."""
        if self._signal is not None:
            raise TrainingInterrupted(signum, self.step, None, aborted=True)
        self._signal = signum
        if self.acc.is_main_process:
            print(f"\n{signal.Signals(signum).name} received: finishing step {self.step + 1}, then saving a "
                  f"checkpoint; send it again to abort without saving", file=sys.stderr, flush=True)

    def _agreed_signal(self) -> int:
        """The signal any process received (0 if none), the same on every process."""
        mine = self._signal or 0
        if self.acc.num_processes == 1:
            return mine
        return int(self.acc.gather(torch.tensor([mine], device=self.acc.device)).max())

    def _stop_if_signalled(self) -> None:
        """After a first signal: save the steps done since the last checkpoint, then raise TrainingInterrupted."""
        signum = self._agreed_signal()
        if not signum:
            return
        if self._saved_step != self.step and self.step > 0:
            self.save()
        saved = self._saved_step == self.step
        raise TrainingInterrupted(signum, self.step, self.checkpoint_path(self.step) if saved else None)

    def checkpoint_path(self, step: int) -> Path:
        """OUT/checkpoints/step-N of step N."""
        return self.out / "checkpoints" / f"step-{step:08d}"

    def write_log(self, fields: list[str], row: list) -> None:
        """Append a row to OUT/log.csv (with the header first), on the main process only."""
        if not self.acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(fields)
            w.writerow(row)

    def save(self) -> None:
        """Write checkpoints/step-N (export + raw weights + optimizer + state) and the export folder, atomically."""
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            self._saved_step = self.step
            return
        raw = self.trained.state_dict()
        files = self.export_files(raw if self.ema is None else self.ema.state_dict())
        opt_tensors, groups = flatten_optimizer(self.opt)
        state = {"step": self.step, "train": dataclasses.asdict(self.cfg), "param_groups": groups,
                 "dataset": {"name": self.dataset.name, "size": len(self.dataset), "source": self.dataset.source,
                             "fingerprint": self.data_fingerprint},
                 "processes": self.acc.num_processes, **self.extra_state()}
        ckpt = dict(files, **{"optimizer.safetensors": opt_tensors, "state.json": state})
        if self.ema is not None:
            ckpt["raw.safetensors"] = raw
        state["files"], state["export"] = sorted(ckpt), sorted(files)  # what a complete checkpoint holds
        first = not (self.out / self.export_name).exists()
        if first:  # so that a checkpoint never exists without an export (a kill in between only lags it)
            write_folder(self.out / self.export_name, files)
        write_folder(self.checkpoint_path(self.step), ckpt)  # durable (fsynced) before anything is pruned
        if not first:
            write_folder(self.out / self.export_name, files)
        prune(self.out, self.cfg.keep)
        self._saved_step = self.step

    def _resume(self) -> None:
        """Continue from the newest complete checkpoint under out_dir/checkpoints (after cleaning up a kill)."""
        if self.acc.is_main_process:
            recover_run(self.out)
        self.acc.wait_for_everyone()
        newest_checkpoint(self.out)  # refuses a run folder without any
        ckpts = complete_checkpoints(self.out)
        for ckpt in reversed(ckpts):
            try:
                state, config, raw, ema, opt = self._read_checkpoint(ckpt)
                break
            except GuidekitError as e:  # an unreadable file: fall back to the checkpoint before, if there is one
                if ckpt == ckpts[0]:
                    raise
                self.acc.wait_for_everyone()  # every process read it (and failed) before it moves
                aside = ckpt.with_name("corrupt-" + ckpt.name)
                if self.acc.is_main_process:
                    print(f"--resume: {e}\n--resume: moved {ckpt.name} to {aside.name}; resuming from the "
                          f"checkpoint before it", file=sys.stderr, flush=True)
                    ckpt.rename(aside)
                self.acc.wait_for_everyone()
        self.check_resume(ckpt, config, state)
        self.check_data(ckpt, state.get("dataset"))
        load_weights(self.trained, raw, ckpt / ("raw.safetensors" if self.ema is not None else self.weights_name))
        if self.ema is not None:
            self.ema.load_state_dict(ema)
        unflatten_optimizer(self.opt, opt, state["param_groups"])
        self.step = self._saved_step = int(state["step"])
        self.load_extra_state(state)
        if self.acc.is_main_process:
            self._sync_export(ckpt, state.get("export"))
            self._trim_log()
        self.acc.wait_for_everyone()

    def _read_checkpoint(self, ckpt: Path) -> tuple:
        """(state, config, trained weights, EMA weights or None, optimizer tensors) of ckpt, read but not applied."""
        raw_file = ckpt / ("raw.safetensors" if self.ema is not None else self.weights_name)
        return (read_json(ckpt / "state.json"), read_json(ckpt / self.config_name), read_tensors(raw_file),
                read_tensors(ckpt / self.weights_name) if self.ema is not None else None,
                read_tensors(ckpt / "optimizer.safetensors"))

    def _sync_export(self, ckpt: Path, names: list[str] | None) -> None:
        """Make the export folder equal the checkpoint's export files (a kill may land between the two writes)."""
        export = self.out / self.export_name
        if not names or _same_files(ckpt, export, names):
            return
        with atomic_folder(export) as tmp:
            for n in names:
                (tmp / n).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ckpt / n, tmp / n)

    def _trim_log(self) -> None:
        """Drop log.csv rows past the resumed step and rows a kill cut short, so they are not logged twice."""
        path = self.out / "log.csv"
        if not path.is_file():
            return
        text = path.read_text()
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return
        keep = [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) <= self.step]
        if len(keep) == len(rows) - 1 and text.endswith("\n"):
            return
        write_csv(path, [rows[0], *keep])
