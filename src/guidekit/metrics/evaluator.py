"""The Fashion-MNIST evaluator: a small CNN whose features feed FID/KID/P&R and whose probabilities feed IS/accuracy."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from guidekit.data.dataset import FASHION_MNIST_CLASSES, ImageDataset
from guidekit.errors import GuidekitError, check, check_config_keys
from guidekit.io import atomic_folder

FORMAT = "guidekit-evaluator/1"
SHIPPED = Path(__file__).resolve().parent / "weights" / "fmnist-evaluator"
HEADS = ("flatten", "average")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


@dataclass
class EvaluatorConfig:
    """Shape of an Evaluator; stored in config.json so the network can be rebuilt from its file."""

    in_channels: int = 1  # image channels (1 for Fashion-MNIST)
    image_size: int = 32  # square input size; the stride-2 stem and each stage but the last halve it
    widths: tuple = (32, 64, 128)  # channels of each stage (stage 1 runs at image_size / 2)
    depths: tuple = (1, 2, 2)  # conv-BN-ReLU blocks of each stage
    feature_dim: int = 256  # width of the penultimate features (after BN + ReLU)
    head: str = "flatten"  # flatten: last feature map -> linear -> features; average: 1x1 conv -> global average pool
    mirror: bool = True  # in eval mode, average the features of the image and of its left-right mirror
    num_classes: int = 10  # outputs of the linear classifier
    class_names: tuple = tuple(FASHION_MNIST_CLASSES)  # one name per class

    def __post_init__(self):
        """Accept lists (e.g. from JSON) for the tuple fields."""
        for k in ("widths", "depths", "class_names"):
            if isinstance(getattr(self, k), list):
                setattr(self, k, tuple(getattr(self, k)))

    def to_dict(self) -> dict:
        """JSON-serializable dict of every field (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> EvaluatorConfig:
        """Rebuild and validate a config from to_dict() output; every field must be present."""
        check_config_keys(cls, d)
        return cls(**d).validate()

    def validate(self) -> EvaluatorConfig:
        """Raise GuidekitError naming the first bad field; return self when all are fine."""
        def pos_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for k in ("in_channels", "image_size", "feature_dim", "num_classes"):
            v = getattr(self, k)
            check(pos_int(v), f"EvaluatorConfig.{k} must be a positive integer, got {v!r}")
        check(isinstance(self.widths, tuple) and len(self.widths) >= 1 and all(pos_int(w) for w in self.widths),
              f"EvaluatorConfig.widths must be a non-empty tuple of positive integers, got {self.widths!r}")
        check(isinstance(self.depths, tuple) and len(self.depths) == len(self.widths)
              and all(pos_int(d) for d in self.depths), f"EvaluatorConfig.depths must hold one positive integer "
              f"per stage ({len(self.widths)} stages), got {self.depths!r}")
        factor = 2 ** len(self.widths)
        check(self.image_size % factor == 0, f"EvaluatorConfig.image_size={self.image_size} must be divisible by "
                                             f"2**len(widths)={factor}; change image_size or use fewer stages")
        check(isinstance(self.mirror, bool), f"EvaluatorConfig.mirror must be true or false, got {self.mirror!r}")
        check(self.head in HEADS, f"EvaluatorConfig.head must be one of {HEADS}, got {self.head!r}")
        check(isinstance(self.class_names, tuple) and len(self.class_names) == self.num_classes
              and all(isinstance(n, str) for n in self.class_names),
              f"EvaluatorConfig.class_names must hold num_classes={self.num_classes} strings, got {self.class_names!r}")
        return self


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Evaluator(nn.Module):
    """4x4 stride-2 stem, conv-BN-ReLU stages joined by max-pooling, a feature layer (config.head), a classifier."""

    metric_tag = "FMNIST"  # a metrics.network.FeatureNetwork: metrics read FID-FMNIST, KID-FMNIST, IS-FMNIST
    has_requested_classes = True  # its probabilities are over the Fashion-MNIST classes: accuracy is measured

    def __init__(self, config: EvaluatorConfig | None = None):
        super().__init__()
        self.config = c = (config or EvaluatorConfig()).validate()
        layers = [conv_bn_relu(c.in_channels, c.widths[0], kernel=4, stride=2, padding=1)]
        cin = c.widths[0]
        for i, (w, d) in enumerate(zip(c.widths, c.depths)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(d):
                layers.append(conv_bn_relu(cin, w))
                cin = w
        if c.head == "average":
            layers += [conv_bn_relu(cin, c.feature_dim, kernel=1, padding=0), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        else:
            side = c.image_size // 2 ** len(c.widths)
            layers += [nn.Flatten(), nn.Linear(cin * side * side, c.feature_dim, bias=False),
                       nn.BatchNorm1d(c.feature_dim), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c.feature_dim, c.num_classes)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        """Refuse anything but float (N, C, S, S) with the configured C and S; return x in channels-last layout."""
        c = self.config
        want = f"(N, {c.in_channels}, {c.image_size}, {c.image_size})"
        check(isinstance(x, torch.Tensor) and x.ndim == 4 and tuple(x.shape[1:]) == (c.in_channels, c.image_size,
              c.image_size), f"the evaluator needs images of shape {want} in [-1, 1], got "
              f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}; pad or resize them to "
              f"{c.image_size}x{c.image_size} (28x28 Fashion-MNIST: pad 2 px with -1)")
        check(x.is_floating_point(), f"the evaluator needs float images in [-1, 1], got {x.dtype}; "
                                     f"convert uint8 with x / 127.5 - 1")
        p = next(self.parameters())
        return x.to(p.device, p.dtype).contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, feature_dim), non-negative (after BN + ReLU; mirror-averaged in eval mode)."""
        x = self._check(x)
        if not (self.config.mirror and not self.training):
            return self.body(x)
        f = self.body(torch.cat([x, x.flip(3)]))
        return (f[:len(x)] + f[len(x):]) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.classifier(self.features(x))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes): softmax of the logits."""
        return self.forward(x).softmax(dim=1)

    def features_and_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features(x) and probs(x) from one pass over the network."""
        f = self.features(x)
        return f, self.classifier(f).softmax(dim=1)


@torch.no_grad()
def accuracy(model: Evaluator, dataset: ImageDataset, batch_size: int = 1000) -> dict:
    """Top-1 accuracy of model on a labelled dataset, overall and per class name (eval mode, restored after)."""
    check(dataset.labels is not None, f"{dataset.name} has no labels; accuracy needs a labelled dataset")
    was_training = model.training
    model.eval()
    preds = torch.cat([model(dataset.images(slice(i, i + batch_size))).argmax(1).cpu()
                       for i in range(0, len(dataset), batch_size)])
    model.train(was_training)
    labels = dataset.labels
    hit = (preds == labels).double()
    per_class = {n: round(hit[labels == k].mean().item(), 4) if (labels == k).any() else None
                 for k, n in enumerate(model.config.class_names)}
    return {"accuracy": round(hit.mean().item(), 4), "per_class": per_class}


def augment(x: torch.Tensor, gen: torch.Generator, shift: int, flip: bool) -> torch.Tensor:
    """Random horizontal flips and random shifts of up to ±shift px (background -1 fills the gap)."""
    n, _, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if shift > 0:
        padded = F.pad(x, (shift,) * 4, value=-1.0)
        dy, dx = (torch.randint(0, 2 * shift + 1, (n,), generator=gen) for _ in range(2))
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    return x


def train_evaluator(train: ImageDataset, test: ImageDataset, epochs: int = 6, batch_size: int = 128,
                    lr: float = 0.2, seed: int = 0, progress: bool = True, threads: int | None = None,
                    config: EvaluatorConfig | None = None, weight_decay: float = 5e-4,
                    label_smoothing: float = 0.0, shift: int = 0, flip: bool = True, easy_loss: float = 0.1,
                    easy_keep: float = 0.3, curve: bool = False) -> tuple[Evaluator, dict]:
    """Train an Evaluator for epochs * (len(train) // batch_size) SGD steps; return (eval-mode model, metrics).

    Recipe: SGD + Nesterov with a one-cycle LR, random mirror flips (and ±shift px shifts when shift > 0). Each pass
    over the data keeps the images that were hard when last seen (loss >= easy_loss) and a random easy_keep share
    of the easy ones, so the fixed step budget goes mostly to the hard classes (shirt, T-shirt, pullover, coat).
    curve=True also measures test accuracy after every pass (time not counted in train_seconds).
    """
    config = config or EvaluatorConfig(num_classes=len(train.class_names or []) or 10,
                                       class_names=tuple(train.class_names or FASHION_MNIST_CLASSES))
    for name, ds in (("train", train), ("test", test)):
        check(ds.labels is not None and list(ds.class_names) == list(config.class_names),
              f"{name} set {ds.name!r} must be labelled with classes {list(config.class_names)}; "
              f"got {ds.class_names}")
        check((ds.channels, ds.resolution) == (config.in_channels, config.image_size),
              f"{name} set {ds.name!r} has {ds.channels}x{ds.resolution}x{ds.resolution} images; the evaluator "
              f"needs {config.in_channels}x{config.image_size}x{config.image_size} (load_dataset(..., resolution="
              f"{config.image_size}))")
    for k, v in (("epochs", epochs), ("batch_size", batch_size)):
        check(isinstance(v, int) and v >= 1, f"train_evaluator: {k} must be a positive integer, got {v!r}")
    check(len(train) >= batch_size, f"train_evaluator: batch_size={batch_size} exceeds the {len(train)} training "
                                     f"images; use a batch_size of at most {len(train)}")
    check(0 <= easy_keep <= 1, f"train_evaluator: easy_keep must be in [0, 1], got {easy_keep!r}")
    check(lr > 0 and math.isfinite(lr), f"train_evaluator: lr must be a positive number, got {lr!r}")
    recipe = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, optimizer="SGD(momentum=0.9, nesterov)",
                  schedule="OneCycleLR(pct_start=0.25, anneal=cos, div_factor=10, final_div_factor=100)",
                  weight_decay=f"{weight_decay} (conv/linear weights only)", label_smoothing=label_smoothing,
                  augmentation=f"flip={flip}, shift=±{shift}px", easy_loss=easy_loss, easy_keep=easy_keep,
                  sampling="each pass: images with loss >= easy_loss when last seen, plus easy_keep of the others")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = Evaluator(config).to(memory_format=torch.channels_last).train()
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
        steps_per_epoch = max(1, len(train) // batch_size)  # epochs count full passes' worth of steps
        total = epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25,
                                                    div_factor=10, final_div_factor=100)
        start, eval_seconds, curve_acc, step, passes = time.time(), 0.0, [], 0, 0
        last_loss = torch.full((len(train),), math.inf)  # per-image loss when last seen; unseen images count as hard
        bar = tqdm(total=total, desc="train evaluator", disable=not progress, unit="step")
        while step < total:
            keep = (last_loss >= easy_loss) | (torch.rand(len(train), generator=gen) < easy_keep)
            order = keep.nonzero()[:, 0]
            order = order[torch.randperm(len(order), generator=gen)]
            if len(order) < batch_size:  # (tiny data sets) too few hard images for one batch: take them all
                order = torch.randperm(len(train), generator=gen)
            loss_sum = correct = seen = 0
            passes += 1
            for i in range(min(len(order) // batch_size, total - step)):
                idx = order[i * batch_size:(i + 1) * batch_size]
                x, y = augment(train.images(idx), gen, shift, flip), train.labels[idx]
                logits = model(x)
                losses = F.cross_entropy(logits, y, reduction="none")
                loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing) if label_smoothing else losses.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                last_loss[idx] = losses.detach()
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                step += 1
                bar.update()
                if i % 20 == 0:
                    bar.set_postfix(passes=passes, images=str(len(order)), loss=f"{loss_sum / seen:.3f}",
                                    acc=f"{correct / seen:.3f}")
            if curve and step < total:
                tick = time.time()
                curve_acc.append(accuracy(model, test)["accuracy"])
                bar.write(f"pass {passes} ({len(order)} images, step {step}/{total}): train accuracy "
                          f"{correct / seen:.4f}, test accuracy {curve_acc[-1]:.4f}")
                eval_seconds += time.time() - tick
        bar.close()
        train_seconds = time.time() - start - eval_seconds
        model.eval()
        result = accuracy(model, test)
        half = Evaluator(config).eval()
        half.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                              for k, v in model.state_dict().items()})
        result16 = accuracy(half, test)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    metrics = {"test_accuracy": result["accuracy"], "test_accuracy_fp16": result16["accuracy"],
               "weights_dtype": "float16" if result16["accuracy"] >= result["accuracy"] else "float32",
               "train_seconds": round(train_seconds, 1), "epochs": epochs, "steps": total, "passes": passes,
               "params": sum(p.numel() for p in model.parameters()), "per_class_accuracy": result["per_class"],
               "train_set": f"{train.name} ({len(train)} images)", "test_set": f"{test.name} ({len(test)} images)",
               "threads": used_threads, "recipe": recipe}
    if curve:
        metrics["test_accuracy_per_pass"] = curve_acc + [result["accuracy"]]
    return model, metrics


def _stored(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A state-dict tensor as it is stored: floating tensors in dtype, others unchanged, contiguous on the CPU."""
    v = v.detach().cpu()
    return (v.to(dtype) if v.is_floating_point() else v).contiguous()


def save_evaluator(model: Evaluator, folder: str | Path, metrics: dict | None = None, dtype: str | None = None,
                   info: dict | None = None) -> Path:
    """Write config.json (config, metrics, info) + model.safetensors into folder atomically; dtype float16|float32."""
    metrics = dict(metrics or {})
    dtype = dtype or metrics.get("weights_dtype", "float16")
    check(dtype in ("float16", "float32"), f"save_evaluator: dtype must be 'float16' or 'float32', got {dtype!r}")
    info = {"date": datetime.date.today().isoformat(), **(info or {})}
    config = {"format": FORMAT, "evaluator": model.config.to_dict(), "weights_dtype": dtype,
              "evaluator_id": evaluator_id(model), "metrics": metrics, **info}
    tensors = {k: _stored(v, getattr(torch, dtype)) for k, v in model.state_dict().items()}
    with atomic_folder(folder) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"))
        for f, mode in ((tmp, 0o755), (tmp / "config.json", 0o644), (tmp / "model.safetensors", 0o644)):
            os.chmod(f, mode)  # readable by all, like any installed file (the temp folder starts private)
    return Path(folder)


def load_evaluator(path: str | Path | None = None, device: torch.device | str = "cpu") -> Evaluator:
    """Load an evaluator folder (config.json + model.safetensors; None: the shipped one) in eval mode, float32."""
    folder = SHIPPED if path is None else Path(path)
    check(folder.suffix.lower() not in PICKLE_SUFFIXES or folder.is_dir(),
          f"{folder} looks like a pickled checkpoint ({folder.suffix}); guidekit loads only config.json + "
          f"model.safetensors folders because unpickling can run arbitrary code")
    if folder.is_file() and folder.suffix == ".safetensors":
        folder = folder.parent
    fix = "re-install guidekit" if path is None else "pass a folder written by save_evaluator / train-evaluator"
    check(folder.is_dir(), f"evaluator not found: {folder}; {fix}")
    for name in ("config.json", "model.safetensors"):
        check((folder / name).is_file(), f"{folder / name} is missing; {fix}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GuidekitError(f"cannot read {folder / 'config.json'}: {e}; the folder is corrupt; {fix}") from e
    check(isinstance(config, dict) and config.get("format") == FORMAT, f"{folder / 'config.json'} is not a guidekit "
          f"evaluator config (format {FORMAT!r} expected); {fix}")
    try:
        model = Evaluator(EvaluatorConfig.from_dict(config.get("evaluator")))
    except GuidekitError as e:
        raise GuidekitError(f"{folder / 'config.json'}: {e}") from e
    file = folder / "model.safetensors"
    try:
        weights = load_file(str(file))
    except (OSError, SafetensorError, ValueError) as e:
        raise GuidekitError(f"cannot read {file}: {e}; the file is corrupt or not safetensors; {fix}") from e
    expected = model.state_dict()
    problems = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    problems += [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [f"{k} is stored as {v.dtype}, not a float type" for k, v in weights.items()
                 if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    problems += [f"{k} holds NaN/inf" for k, v in weights.items() if v.is_floating_point() and not v.isfinite().all()]
    check(not problems, f"{file} does not match {folder / 'config.json'} ({len(problems)} problem(s)): "
                        + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else ""))
    model.load_state_dict({k: v.to(expected[k].dtype).contiguous() for k, v in weights.items()})
    return model.to(device, memory_format=torch.channels_last).eval()


def evaluator_id(model: Evaluator) -> str:
    """12 hex digits of SHA-256 of the config and the float16-rounded weights (equal before save and after load)."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        v = _stored(v, torch.float16)
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:12]
