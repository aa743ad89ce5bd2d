"""Training the Fashion-MNIST evaluator (guidekit eval train-evaluator): recipe, augmentation and accuracy.

The network is guidekit.models.evaluator; its folders are read and written by guidekit.checkpoints.evaluator
(re-exported here, where earlier versions defined them).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from guidekit.checkpoints.evaluator import FORMAT, SHIPPED, evaluator_id, load_evaluator, save_evaluator
from guidekit.data.dataset import FASHION_MNIST_CLASSES, ImageDataset
from guidekit.errors import check
from guidekit.models.evaluator import HEADS, Evaluator, EvaluatorConfig

__all__ = ["FORMAT", "HEADS", "SHIPPED", "Evaluator", "EvaluatorConfig", "accuracy", "augment", "evaluator_id",
           "load_evaluator", "save_evaluator", "train_evaluator"]


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
