"""The loop every trainer shares: accelerate, AdamW with warm-up, per-step seeded draws, EMA, logs, checkpoints.

A subclass builds its network (`build`), says which part is trained (`trainable`), computes a step's loss
(`forward_step`) and names its export files (`export_files`); everything else — the optimizer, gradient clipping,
non-finite-loss handling, EMA, the progress bar, log.csv, OUT/checkpoints/step-N and bit-exact `--resume` — lives
here once.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from guidekit.errors import check
from guidekit.training.checkpoint import load_weights, read_json, read_tensors, write_folder
from guidekit.training.ema import EMA
from guidekit.training.runs import newest_checkpoint, prune, refuse_existing, warmup_lr
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
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return perm[pos * batch:(pos + 1) * batch]


class BaseTrainer:
    """Shared training machinery; writes checkpoints/, log.csv and the export folder under out_dir."""

    desc = "train"  # progress-bar label
    export_name = "model"  # OUT/<export_name> holds the exported (EMA) weights
    ema_optional = False  # True: ema_decay == 0 means no EMA (the raw weights are exported)

    def __init__(self, config, out_dir: str | Path, resume: bool = False, mixed_precision: str = "auto"):
        from accelerate import Accelerator  # heavy import, only when training

        self.cfg = config
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() else "no"
        self.acc = Accelerator(mixed_precision=mixed_precision)
        check(config.batch_size % self.acc.num_processes == 0,
              f"batch_size {config.batch_size} must be divisible by the {self.acc.num_processes} processes")
        self.out = Path(out_dir)
        torch.manual_seed(config.seed)
        net = self.build()
        trained = self.trainable(net)
        self.ema = None if self.ema_optional and config.ema_decay == 0 else EMA(trained, config.ema_decay)
        opt = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=config.lr,
                                weight_decay=config.weight_decay, fused=self.acc.device.type == "cuda")
        self.net, self.opt = self.acc.prepare(net, opt)
        self.step = 0
        if resume:
            self._resume()
        else:
            refuse_existing(self.out)

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

    @property
    def raw(self) -> torch.nn.Module:
        """The network unwrapped from accelerate."""
        return self.acc.unwrap_model(self.net)

    @property
    def trained(self) -> torch.nn.Module:
        """The optimized part of the unwrapped network."""
        return self.trainable(self.raw)

    def lr_at(self, step: int) -> float:
        return warmup_lr(self.cfg.lr, self.cfg.warmup, step)

    def fit(self, max_seconds: float | None = None, progress: bool = True) -> Path:
        """Train to cfg.steps (or until max_seconds), logging and checkpointing; return the export folder."""
        cfg, start, bad = self.cfg, time.time(), 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc,
                   disable=not (progress and self.acc.is_main_process))
        images, window_t, norm = 0, time.time(), float("nan")
        params = [p for p in self.net.parameters() if p.requires_grad]
        while self.step < cfg.steps:
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            loss, aux = self.forward_step(self.step)
            if not torch.isfinite(loss):
                bad += 1
                self.opt.zero_grad(set_to_none=True)
                check(bad < cfg.max_bad_steps, f"loss was not finite for {bad} steps in a row at step {self.step}; "
                                               f"lower --lr or check the data for NaN")
                self.step += 1
                continue
            bad = 0
            self.acc.backward(loss)
            norm = self.acc.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip else math.inf)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.trained, self.step)
            self.after_step(loss, aux)
            self.step += 1
            images += cfg.batch_size
            bar.update(1)
            regular = self.step % cfg.log_every == 0
            if regular or self.step == cfg.steps:
                rate = images / max(time.time() - window_t, 1e-9)
                self.log(bar, loss, float(norm), rate, time.time() - start, regular)
                if regular:
                    images, window_t = 0, time.time()
            out_of_time = max_seconds is not None and time.time() - start > max_seconds
            if self.step % cfg.save_every == 0 or self.step == cfg.steps or out_of_time:
                self.save()
            if out_of_time:
                break
        bar.close()
        return self.out / self.export_name

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
            return
        raw = self.trained.state_dict()
        files = self.export_files(raw if self.ema is None else self.ema.state_dict())
        opt_tensors, groups = flatten_optimizer(self.opt)
        state = {"step": self.step, "train": dataclasses.asdict(self.cfg), "param_groups": groups,
                 "dataset": {"name": self.dataset.name, "size": len(self.dataset)}, **self.extra_state()}
        ckpt = dict(files, **{"optimizer.safetensors": opt_tensors, "state.json": state})
        if self.ema is not None:
            ckpt["raw.safetensors"] = raw
        write_folder(self.out / "checkpoints" / f"step-{self.step:08d}", ckpt)
        write_folder(self.out / self.export_name, files)
        prune(self.out, self.cfg.keep)

    def _resume(self) -> None:
        """Continue from the newest complete checkpoint under out_dir/checkpoints."""
        ckpt = newest_checkpoint(self.out)
        state = read_json(ckpt / "state.json")
        self.check_resume(ckpt, read_json(ckpt / "config.json"), state)
        raw_file = ckpt / ("raw.safetensors" if self.ema is not None else "model.safetensors")
        load_weights(self.trained, read_tensors(raw_file), raw_file)
        if self.ema is not None:
            self.ema.load_state_dict(read_tensors(ckpt / "model.safetensors"))
        unflatten_optimizer(self.opt, read_tensors(ckpt / "optimizer.safetensors"), state["param_groups"])
        self.step = int(state["step"])
        self.load_extra_state(state)
