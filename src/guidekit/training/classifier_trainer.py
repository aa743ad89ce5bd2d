"""Training of the noise-aware classifier p_φ(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021).

Each step draws a batch x0 with labels y, a timestep t uniform over [0, T−1] (continuous, so the classifier
also knows the fractional levels samplers visit) and ε, forms x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε and minimizes the
cross-entropy of the classifier's logits. Accuracy is reported per noise-level bucket (t in [0, T/4),
[T/4, T/2), ... for 4 buckets): on a fixed held-out batch when an eval_dataset is given (e.g. the test
split), else on the training batches of the last log window.

Reading the numbers: accuracy in the lowest-noise bucket should approach that of a clean-image classifier;
in the highest-noise bucket x_t is almost pure noise, so accuracy near chance (1 / num_classes) is expected
and not a bug. Guidance gets most of its effect from the middle buckets: training is done when the held-out
mean accuracy (logged with its running best `best_acc` at `best_step`) stops improving; a held-out accuracy
that falls while the training loss keeps dropping means over-fitting.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from guidekit.checkpoints.classifier import classifier_files
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.models.classifier import ClassifierConfig, NoisyClassifier
from guidekit.training.base import BaseTrainer, _step_generator, batch_indices
from guidekit.training.config import ClassifierTrainConfig


def bucket_edges(num_timesteps: int, buckets: int) -> list[int]:
    """Integer edges [0, ..., T] of `buckets` equal noise-level ranges, e.g. [0, 250, 500, 750, 1000]."""
    check(isinstance(buckets, int) and not isinstance(buckets, bool) and 1 <= buckets <= num_timesteps,
          f"buckets must be an integer in [1, {num_timesteps}] (the schedule's timesteps), got {buckets!r}")
    return [round(num_timesteps * i / buckets) for i in range(buckets + 1)]


def bucket_of(t: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """Index of the bucket [edges[i], edges[i+1]) holding each timestep of t."""
    inner = torch.tensor(edges[1:-1], dtype=torch.float64)
    return torch.bucketize(t.double().cpu(), inner, right=True)


def _check_labelled(dataset, config: ClassifierConfig, what: str) -> None:
    """A classifier dataset needs labels, the model's class count and the model's image shape."""
    check(isinstance(dataset, ImageDataset), f"{what} must be an ImageDataset, got {type(dataset).__name__}")
    check(len(dataset) > 0, f"{what} {dataset.name} is empty; point it at a folder with images")
    check(dataset.labels is not None,
          f"{what} {dataset.name} has no labels: a classifier needs a labelled dataset "
          f"(class sub-folders, or fashion-mnist / mnist / samples)")
    check(config.num_classes == dataset.num_classes,
          f"classifier has num_classes={config.num_classes}, {what} {dataset.name} has {dataset.num_classes} "
          f"classes; build it with num_classes={dataset.num_classes}")
    check(config.in_channels == dataset.channels and config.image_size == dataset.resolution,
          f"classifier expects {config.in_channels}×{config.image_size}² images, {what} {dataset.name} has "
          f"{dataset.channels}×{dataset.resolution}²; load the data with matching resolution/channels")


@torch.no_grad()
def evaluate_buckets(model: NoisyClassifier, dataset: ImageDataset, schedule: NoiseSchedule, n: int = 256,
                     buckets: int = 4, seed: int = 0, batch_size: int = 256) -> list[dict]:
    """Accuracy of model per noise-level bucket on a fixed, seeded draw of n images of dataset.

    Every bucket sees the same images, each at its own t uniform in the bucket (capped at T−1) with its own
    seeded ε, so repeated calls with the same seed measure the same noisy batch. Returns one dict per bucket,
    lowest noise first: {"t_range": (lo, hi) meaning lo <= t < hi, "accuracy": float in [0, 1], "n": count}.
    Chance level is 1 / num_classes; the top bucket is expected to sit close to it.
    """
    check(isinstance(model, NoisyClassifier), f"evaluate_buckets needs a NoisyClassifier, got {type(model).__name__}")
    check(isinstance(schedule, NoiseSchedule), f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    T = schedule.num_timesteps
    check(T == model.config.num_train_timesteps,
          f"the schedule has {T} timesteps, the classifier was built for {model.config.num_train_timesteps}")
    _check_labelled(dataset, model.config, "dataset")
    check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, f"n must be an integer >= 1, got {n!r}")
    check(isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be an integer >= 1, got {batch_size!r}")
    edges = bucket_edges(T, buckets)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n]
    x0, y = dataset.images(idx), dataset.labels[idx]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    try:
        for lo, hi in zip(edges[:-1], edges[1:]):
            top = min(hi, T - 1)
            t = lo + torch.rand(len(idx), generator=g, dtype=torch.float64) * (top - lo)
            eps = torch.randn(x0.shape, generator=g)
            x_t = q_sample(x0, schedule.alpha_bar(t).float(), eps)
            correct = 0
            for s in range(0, len(idx), batch_size):
                logits = model(x_t[s:s + batch_size].to(device), t[s:s + batch_size].float().to(device))
                correct += int((logits.argmax(-1).cpu() == y[s:s + batch_size]).sum())
            results.append({"t_range": (lo, hi), "accuracy": correct / len(idx), "n": len(idx)})
    finally:
        model.train(was_training)
    return results


class ClassifierTrainer(BaseTrainer):
    """Trains a NoisyClassifier on a labelled ImageDataset; writes checkpoints/, log.csv and model/ under out_dir.

    log.csv has, every log_every steps: the mean training loss of the window, the training accuracy of the
    window, the accuracy per noise bucket (`acc_t<lo>_<hi>`, held-out if eval_dataset was given, see
    `acc_source`), their mean `acc_mean` and its running best over the log_every steps, `best_acc` at
    `best_step`. The top bucket's accuracy approaching chance (1 / num_classes) is expected: x_t there is
    nearly pure noise.
    """

    desc = "train-classifier"
    ema_optional = True
    sync_free = False  # its per-step accuracy window reads every batch on the host anyway

    def __init__(self, config_model: ClassifierConfig, dataset: ImageDataset, schedule: NoiseSchedule,
                 train_config: ClassifierTrainConfig, out_dir: str | Path, resume: bool = False,
                 eval_dataset: ImageDataset | None = None, mixed_precision: str = "auto"):
        check(isinstance(config_model, ClassifierConfig),
              f"config_model must be a ClassifierConfig, got {type(config_model).__name__}; "
              f"use ClassifierConfig.from_preset('small', num_classes=10)")
        check(isinstance(train_config, ClassifierTrainConfig),
              f"train_config must be a ClassifierTrainConfig, got {type(train_config).__name__}")
        check(isinstance(schedule, NoiseSchedule), f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.cfg, self.dataset, self.schedule = train_config.validate(), dataset, schedule
        config_model.validate()
        _check_labelled(dataset, config_model, "dataset")
        if eval_dataset is not None:
            _check_labelled(eval_dataset, config_model, "eval_dataset")
            check(eval_dataset.class_names == dataset.class_names,
                  f"eval_dataset {eval_dataset.name} has other class names than {dataset.name}; use the same data set")
        self.eval_dataset = eval_dataset
        T = schedule.num_timesteps
        check(config_model.num_train_timesteps == T,
              f"classifier has num_train_timesteps={config_model.num_train_timesteps}, the schedule {T}; "
              f"use the diffusion model's schedule and matching num_train_timesteps")
        self.edges = bucket_edges(T, self.cfg.buckets)
        self.bucket_names = [f"acc_t{lo}_{hi}" for lo, hi in zip(self.edges[:-1], self.edges[1:])]
        self.log_fields = (["step", "loss", "train_acc"] + self.bucket_names
                           + ["acc_mean", "best_acc", "best_step", "acc_source", "lr", "grad_norm", "img_per_s",
                              "elapsed_s"])
        self.config_model = config_model
        self._eval_net: NoisyClassifier | None = None
        self.best_acc, self.best_step = -1.0, 0
        self.last_buckets: list[dict] = []
        self._reset_window()
        super().__init__(self.cfg, out_dir, resume, mixed_precision)

    def build(self) -> NoisyClassifier:
        return NoisyClassifier(self.config_model)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, y) of step's batch shard on the device; every draw comes from the step's own generator."""
        g, T = _step_generator(self.cfg.seed, step), self.schedule.num_timesteps
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        t = torch.rand(len(idx), generator=g, dtype=torch.float64) * (T - 1)
        eps = torch.randn((len(idx), self.dataset.channels, self.dataset.resolution, self.dataset.resolution),
                          generator=g)
        # draw for the global batch, then shard: every process gets different t and ε
        rank, world = self.acc.process_index, self.acc.num_processes
        idx, t, eps = idx.chunk(world)[rank], t.chunk(world)[rank], eps.chunk(world)[rank]
        x_t = q_sample(self.dataset.images(idx), self.schedule.alpha_bar(t).float(), eps)
        device = self.acc.device
        return x_t.to(device), t.float().to(device), self.dataset.labels[idx].to(device)

    def forward_step(self, step: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(loss, (logits, y, t)) of step's batch shard under the current weights."""
        x_t, t, y = self.batch(step)
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)  # dropout layers
        logits = self.net(x_t, t).float()
        return F.cross_entropy(logits, y), (logits, y, t)

    def loss_on(self, step: int) -> torch.Tensor:
        """The cross-entropy of step's batch shard."""
        return self.forward_step(step)[0]

    def eval_model(self) -> NoisyClassifier:
        """The weights that get exported: the raw network, or a copy holding the EMA weights."""
        if self.ema is None:
            return self.raw
        if self._eval_net is None:
            self._eval_net = copy.deepcopy(self.raw).eval()
        self._eval_net.load_state_dict(self.ema.state_dict())
        return self._eval_net

    def evaluate(self) -> list[dict]:
        """Accuracy per noise bucket: on the fixed held-out batch if there is an eval_dataset, else of the
        training batches since the last log (accuracy None for a bucket no training sample fell into)."""
        if self.eval_dataset is not None:
            return evaluate_buckets(self.eval_model(), self.eval_dataset, self.schedule, n=self.cfg.eval_size,
                                    buckets=self.cfg.buckets, seed=self.cfg.seed)
        out = []
        for i, (lo, hi) in enumerate(zip(self.edges[:-1], self.edges[1:])):
            n = int(self._win_count[i])
            out.append({"t_range": (lo, hi), "accuracy": int(self._win_correct[i]) / n if n else None, "n": n})
        return out

    def after_step(self, loss: torch.Tensor, aux) -> None:
        self._accumulate(loss, *aux)

    def _reset_window(self) -> None:
        k = self.cfg.buckets
        self._win_loss, self._win_steps, self._win_images = 0.0, 0, 0
        self._win_correct, self._win_count = [0] * k, [0] * k

    def _accumulate(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> None:
        """Add one step's loss and per-bucket training accuracy (this process's shard) to the log window."""
        self._win_loss += loss.item()
        self._win_steps += 1
        self._win_images += self.cfg.batch_size
        hit = (logits.detach().argmax(-1) == y).cpu()
        b = bucket_of(t, self.edges)
        for i in range(self.cfg.buckets):
            mask = b == i
            self._win_correct[i] += int(hit[mask].sum())
            self._win_count[i] += int(mask.sum())

    def log(self, bar, loss: torch.Tensor, norm: float, rate: float, elapsed: float, regular: bool = True) -> None:
        """Evaluate, write a CSV row and the progress bar; at regular log steps (multiples of log_every) also
        update the running best and reset the window. The last step of a run that is not a multiple of
        log_every gets a snapshot row that leaves both alone, so a run extended with resume logs exactly
        what an uninterrupted run logs."""
        if self.acc.is_main_process:
            steps = max(self._win_steps, 1)
            loss = self._win_loss / steps
            seen = sum(self._win_count)
            train_acc = sum(self._win_correct) / seen if seen else float("nan")
            self.last_buckets = buckets = self.evaluate()
            accs = [b["accuracy"] for b in buckets]
            known = [a for a in accs if a is not None]
            mean = sum(known) / len(known) if known else float("nan")
            if regular and known and mean > self.best_acc:
                self.best_acc, self.best_step = mean, self.step
            bar.set_postfix({"loss": f"{loss:.3f}", "acc": "|".join("-" if a is None else f"{a:.2f}" for a in accs),
                             "chance": f"{1 / self.raw.config.num_classes:.2f}",
                             "best": f"{max(self.best_acc, 0):.3f}@{self.best_step}"})
            fmt = lambda a: "" if a is None else f"{a:.4f}"  # noqa: E731
            self.write_log(self.log_fields, [
                self.step, f"{loss:.6f}", f"{train_acc:.4f}", *map(fmt, accs), f"{mean:.4f}",
                f"{self.best_acc:.4f}" if self.best_acc >= 0 else "", self.best_step,
                "heldout" if self.eval_dataset is not None else "train",
                f"{self.lr_at(self.step - 1):.3e}", f"{norm:.4f}", f"{rate:.1f}", f"{elapsed:.1f}"])
        if regular:
            self._reset_window()

    latent_model: str | None = None  # the latent model whose latents it reads (recorded in config.json)

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        files = classifier_files(self.raw, self.schedule, self.dataset.class_names, weights)
        if self.latent_model:
            files["config.json"]["latent_model"] = self.latent_model
        return files

    def extra_state(self) -> dict:
        return {"best_acc": self.best_acc, "best_step": self.best_step,
                "window": {"loss": self._win_loss, "steps": self._win_steps, "images": self._win_images,
                           "correct": self._win_correct, "count": self._win_count}}

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        saved = config.get("classifier")
        check(saved == self.raw.config.to_dict(), f"--resume: {ckpt} was trained with another classifier config "
                                                   f"({saved}); use the same preset/options or a new --out")
        check(config.get("schedule") == self.schedule.to_config(),
              f"--resume: {ckpt} was trained with schedule {config.get('schedule')}, not "
              f"{self.schedule.to_config()}; use the same schedule or a new --out")
        saved_ema = float(state.get("train", {}).get("ema_decay", 0.0)) > 0
        check(saved_ema == (self.ema is not None),
              f"--resume: {ckpt} was trained {'with' if saved_ema else 'without'} EMA; keep ema_decay "
              f"{'> 0' if saved_ema else '= 0'} or start a new --out")

    def load_extra_state(self, state: dict) -> None:
        self.best_acc, self.best_step = float(state.get("best_acc", -1.0)), int(state.get("best_step", 0))
        win = state.get("window")
        if isinstance(win, dict) and len(win.get("correct", [])) == self.cfg.buckets:
            self._win_loss, self._win_steps = float(win["loss"]), int(win["steps"])
            self._win_images = int(win["images"])
            self._win_correct, self._win_count = list(win["correct"]), list(win["count"])
