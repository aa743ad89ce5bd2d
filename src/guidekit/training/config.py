"""The settings of the training runs, saved in every checkpoint: a light module (no torch, no accelerate),
so the command line can show their defaults without importing the trainers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from guidekit.errors import check


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


@dataclass
class ClassifierTrainConfig:
    """Optimization settings of one classifier run; saved in every checkpoint."""

    steps: int = 10_000  # optimizer steps in total
    batch_size: int = 128  # global batch (split across processes)
    lr: float = 3e-4  # AdamW peak learning rate
    weight_decay: float = 0.05  # AdamW weight decay
    warmup: int = 200  # linear learning-rate warm-up steps
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    ema_decay: float = 0.0  # 0 = no EMA (the raw weights are exported); else EMA decay of the exported weights
    seed: int = 0  # seeds data order, t and ε of every step (and the held-out evaluation draws)
    save_every: int = 1000  # checkpoint interval in steps (and at the end)
    log_every: int = 100  # CSV log / accuracy interval in steps
    keep: int = 2  # checkpoints kept on disk (newest)
    buckets: int = 4  # noise-level buckets of the accuracy report
    eval_size: int = 256  # held-out images evaluated in every bucket at each log step (with an eval_dataset)
    max_bad_steps: int = 10  # abort after this many consecutive non-finite losses

    def validate(self) -> "ClassifierTrainConfig":
        """Raise GuidekitError naming the first bad field; return self when all are fine."""
        for name in ("steps", "batch_size", "save_every", "log_every", "keep", "buckets", "eval_size",
                     "max_bad_steps"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  f"{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup", "seed"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  f"{name} must be an integer >= 0, got {v!r}")
        check(isinstance(self.lr, (int, float)) and self.lr > 0, f"lr must be > 0, got {self.lr!r}")
        check(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0,
              f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check(isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0,
              f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        check(isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1,
              f"ema_decay must lie in [0, 1) (0 = no EMA), got {self.ema_decay!r}")
        return self


@dataclass
class ControlNetTrainConfig(TrainConfig):
    """Optimization settings of one ControlNet run; saved in every checkpoint."""

    steps: int = 5_000  # optimizer steps in total
    batch_size: int = 64  # global batch (split across processes)
    lr: float = 1e-4  # AdamW peak learning rate
    warmup: int = 100  # linear learning-rate warm-up steps
    ema_decay: float = 0.999  # EMA decay of the exported ControlNet weights
    p_drop_hint: float = 0.0  # probability of replacing a hint by zeros

    def validate(self) -> "ControlNetTrainConfig":
        super().validate()
        check(0 <= self.p_drop_hint < 1, f"p_drop_hint must lie in [0, 1), got {self.p_drop_hint}")
        return self


@dataclass
class DistillConfig(TrainConfig):
    """Settings of one guidance-distillation run (Meng et al. 2023, stage one); saved in every checkpoint."""

    steps: int = 5_000  # optimizer steps in total
    lr: float = 1e-4  # AdamW peak learning rate
    warmup: int = 100  # linear learning-rate warm-up steps
    ema_decay: float = 0.999  # EMA decay of the exported student
    p_uncond: float = 0.1  # fraction of rows whose label is ∅ (there the CFG target is the teacher's ε(x, ∅))
    w_min: float = 0.0  # CFG weights w ~ Uniform(w_min, w_max), one per image
    w_max: float = 4.0

    def validate(self) -> "DistillConfig":
        super().validate()
        lo, hi = self.w_min, self.w_max
        check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi))
              and 0 <= lo < hi,
              f"the w range must be two finite CFG weights lo,hi with 0 <= lo < hi (e.g. 0,4), got {lo!r},{hi!r}")
        return self
