"""`guidekit train`: ε-prediction training with condition dropout to ∅ (Ho & Salimans 2021), on accelerate."""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample, target
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.models.unet import UNet, UNetConfig
from guidekit.training.checkpoint import load_weights, model_files, read_json, read_tensors, write_folder
from guidekit.training.ema import EMA
from guidekit.training.runs import newest_checkpoint, prune, refuse_existing, warmup_lr
from guidekit.training.state import flatten_optimizer, unflatten_optimizer

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "img_per_s", "elapsed_s"]


@dataclass
class TrainConfig:
    """Optimization settings of one run; saved in every checkpoint."""

    steps: int = 20_000  # optimizer steps in total
    batch_size: int = 128  # global batch (split across processes)
    lr: float = 2e-4  # AdamW peak learning rate
    warmup: int = 500  # linear learning-rate warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    p_uncond: float = 0.1  # probability of replacing the label by ∅ (CFG training); ignored if unconditional
    ema_decay: float = 0.9999  # EMA decay (with warm-up), the weights exported as the model
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    save_every: int = 1000  # checkpoint interval in steps (and at the end)
    log_every: int = 50  # CSV log interval in steps
    keep: int = 2  # checkpoints kept on disk (newest)
    seed: int = 0  # seeds data order, t, ε and dropout of every step
    max_bad_steps: int = 10  # abort after this many consecutive non-finite losses

    def validate(self) -> "TrainConfig":
        for name in ("steps", "batch_size", "save_every", "log_every", "keep", "max_bad_steps"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"{name} must be an integer >= 1, got {v!r}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 <= self.p_uncond < 1, f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        check(0 <= self.ema_decay < 1, f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        check(self.warmup >= 0 and self.grad_clip >= 0 and self.seed >= 0 and self.weight_decay >= 0,
              "warmup, grad_clip, weight_decay and seed must be >= 0")
        return self


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


class Trainer:
    """Trains a UNet on an ImageDataset; writes checkpoints/, log.csv and model/ (EMA weights) under out_dir."""

    def __init__(self, unet_config: UNetConfig, dataset: ImageDataset, schedule: NoiseSchedule,
                 config: TrainConfig, out_dir: str | Path, resume: bool = False, mixed_precision: str = "auto"):
        from accelerate import Accelerator  # heavy import, only when training

        self.cfg, self.dataset, self.schedule = config.validate(), dataset, schedule
        check(len(dataset) > 0, f"dataset {dataset.name} is empty; point --data at a folder with images")
        check(unet_config.in_channels == dataset.channels and unet_config.image_size == dataset.resolution,
              f"model expects {unet_config.in_channels}×{unet_config.image_size}² images, dataset {dataset.name} "
              f"has {dataset.channels}×{dataset.resolution}²")
        check(unet_config.num_classes in (0, dataset.num_classes),
              f"model has {unet_config.num_classes} classes, dataset {dataset.num_classes}")
        if mixed_precision == "auto":
            mixed_precision = "bf16" if torch.cuda.is_available() else "no"
        self.acc = Accelerator(mixed_precision=mixed_precision)
        check(config.batch_size % self.acc.num_processes == 0,
              f"batch_size {config.batch_size} must be divisible by the {self.acc.num_processes} processes")
        self.out = Path(out_dir)
        torch.manual_seed(config.seed)
        net = UNet(unet_config)
        self.ema = EMA(net, config.ema_decay)
        opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                fused=self.acc.device.type == "cuda")
        self.net, self.opt = self.acc.prepare(net, opt)
        self.step = 0
        if resume:
            self._resume()
        else:
            refuse_existing(self.out)

    @property
    def raw(self) -> UNet:
        return self.acc.unwrap_model(self.net)

    def lr_at(self, step: int) -> float:
        return warmup_lr(self.cfg.lr, self.cfg.warmup, step)

    def loss_on(self, step: int) -> torch.Tensor:
        """The diffusion loss of step's (shard of the) batch: MSE to the ε/v/x0 target at uniform t."""
        g, device = _step_generator(self.cfg.seed, step), self.acc.device
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        # draws for the whole global batch, then this process's shard: every image gets its own t, ε, dropout
        t = torch.randint(self.schedule.num_timesteps, (len(idx),), generator=g)
        eps = torch.randn((len(idx), *self.dataset.pixels.shape[1:]), generator=g)
        drop = torch.rand(len(idx), generator=g) < self.cfg.p_uncond
        shard = lambda v: v.chunk(self.acc.num_processes)[self.acc.process_index]  # noqa: E731
        idx, t, eps, drop = shard(idx), shard(t), shard(eps), shard(drop)
        x0 = self.dataset.images(idx)
        ab = self.schedule.alpha_bar(t).float()
        x_t = q_sample(x0, ab, eps)
        goal = target(x0, eps, ab, self.raw.config.prediction_type)
        y = None
        if self.raw.config.num_classes and self.dataset.labels is not None:
            y = torch.where(drop, self.raw.config.num_classes, self.dataset.labels[idx]).to(device)
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)  # dropout layers
        out = self.net(x_t.to(device), t.to(device), y=y)
        return F.mse_loss(out.float(), goal.to(device))

    def fit(self, max_seconds: float | None = None, progress: bool = True) -> Path:
        """Train to cfg.steps (or until max_seconds), checkpointing; return the exported model folder."""
        cfg, start, bad = self.cfg, time.time(), 0
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=not (progress and self.acc.is_main_process))
        window, window_t = 0, time.time()
        while self.step < cfg.steps:
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            loss = self.loss_on(self.step)
            if not torch.isfinite(loss):
                bad += 1
                self.opt.zero_grad(set_to_none=True)
                check(bad < cfg.max_bad_steps, f"loss was not finite for {bad} steps in a row at step {self.step}; "
                                               f"lower --lr or check the data for NaN")
                self.step += 1
                continue
            bad = 0
            self.acc.backward(loss)
            norm = self.acc.clip_grad_norm_(self.net.parameters(), cfg.grad_clip if cfg.grad_clip else math.inf)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.ema.update(self.raw, self.step)
            self.step += 1
            window += cfg.batch_size
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = window / max(time.time() - window_t, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
                self._log(loss.item(), float(norm), rate, time.time() - start)
                window, window_t = 0, time.time()
            out_of_time = max_seconds is not None and time.time() - start > max_seconds
            if self.step % cfg.save_every == 0 or self.step == cfg.steps or out_of_time:
                self.save()
            if out_of_time:
                break
        bar.close()
        return self.out / "model"

    def _log(self, loss: float, norm: float, rate: float, elapsed: float) -> None:
        if not self.acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(LOG_FIELDS)
            w.writerow([self.step, f"{loss:.6f}", f"{self.lr_at(self.step - 1):.3e}", f"{norm:.4f}",
                        f"{rate:.1f}", f"{elapsed:.1f}"])

    def save(self) -> None:
        """Write checkpoints/step-N (EMA model + raw weights + optimizer + state) and model/, atomically."""
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return
        files = model_files(self.raw, self.schedule, self.dataset.class_names, self.ema.state_dict())
        opt_tensors, groups = flatten_optimizer(self.opt)
        state = {"step": self.step, "train": dataclasses.asdict(self.cfg), "param_groups": groups,
                 "dataset": {"name": self.dataset.name, "size": len(self.dataset)}}
        ckpt = dict(files, **{"raw.safetensors": self.raw.state_dict(), "optimizer.safetensors": opt_tensors,
                              "state.json": state})
        write_folder(self.out / "checkpoints" / f"step-{self.step:08d}", ckpt)
        write_folder(self.out / "model", files)
        prune(self.out, self.cfg.keep)

    def _resume(self) -> None:
        """Continue from the newest complete checkpoint under out_dir/checkpoints."""
        ckpt = newest_checkpoint(self.out)
        state = read_json(ckpt / "state.json")
        saved = read_json(ckpt / "config.json")["unet"]
        check(saved == self.raw.config.to_dict(), f"--resume: {ckpt} was trained with another model config "
                                                   f"({saved}); use the same --preset/options or a new --out")
        load_weights(self.raw, read_tensors(ckpt / "raw.safetensors"), ckpt / "raw.safetensors")
        self.ema.load_state_dict(read_tensors(ckpt / "model.safetensors"))
        unflatten_optimizer(self.opt, read_tensors(ckpt / "optimizer.safetensors"), state["param_groups"])
        self.step = int(state["step"])
