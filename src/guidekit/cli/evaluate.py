"""`guidekit eval`: metrics of a model or a folder of samples; `guidekit eval train-evaluator`: the evaluator."""

from __future__ import annotations

import json
import time
from pathlib import Path

from guidekit.errors import check
from guidekit.cli.common import (FEW_STEP, HelpFormatter, add_data_arg, add_device, add_eval_args, add_guidance_args,
                                 add_sampler_args, command, guidance_from_args, load_eval, load_fast_model, pick_device,
                                 positive_int, sampler_settings, seed_int)


EVAL_HELP = """Measure samples against real data with guidekit's Fashion-MNIST evaluator (FID-FMNIST etc.: the
evaluator's features, not Inception's), or with your own FID Inception weights (--inception-weights: FID-Inception
etc.). TARGET is a folder of samples (from 'guidekit sample', with its manifest, or any PNGs) or a model, which is
then sampled (--n class-balanced images at --w). 'guidekit eval train-evaluator --help' trains the evaluator itself."""


def register(sub) -> None:
    p = command(sub, "eval", "FID/KID/IS-FMNIST (or -Inception), accuracy, precision/recall of a model or " "sample folder",
                             EVAL_HELP)
    p.add_argument("target", help="sample folder, model folder or run folder")
    p.add_argument("--n", type=positive_int("--n"), default=1000, help="images to sample when TARGET is a model")
    add_guidance_args(p)
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed when sampling")
    add_sampler_args(p, **FEW_STEP)
    add_eval_args(p)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device(p)
    p.set_defaults(run=run)

    t = sub.add_parser("eval-train-evaluator", prog="guidekit eval train-evaluator",
                       description="Train the Fashion-MNIST evaluator classifier (deterministic, seeded recipe) and "
                                   "save it as config.json + model.safetensors.",
                       formatter_class=HelpFormatter)
    t.add_argument("--out", required=True, help="output folder for the evaluator")
    t.add_argument("--epochs", type=positive_int("--epochs"), default=None, help="epochs (default: the recipe's)")
    t.add_argument("--seed", type=seed_int("--seed"), default=0, help="seed")
    add_data_arg(t)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(run=run_train_evaluator)


def run(args) -> None:
    import torch

    from guidekit.metrics.evaluate import evaluate, format_table, load_sample_dir

    device = pick_device(args.device)
    progress = not args.no_progress
    from guidekit.zoo import resolve

    target = resolve(args.target)  # a zoo name works as a model folder, as everywhere
    check(target.exists(), f"{target} does not exist; pass a folder of samples, a model/run folder or a zoo name "
                           f"('guidekit zoo list')")
    start = time.time()
    evaluator, ref = load_eval(args, device, progress)  # first: bad weights fail before any sampling
    if target.is_dir() and not (target / "config.json").exists() and not (target / "model").exists() \
            and not (target / "checkpoints").exists() and not (target / "unet").exists():
        images, labels = load_sample_dir(target)
        source = {"samples": str(target)}
    else:
        from guidekit.pipelines import class_names, sample_guided
        from guidekit.experiments.sweep import balanced_labels

        model = load_fast_model(target, args, device)
        guidance = guidance_from_args(args, model, device)
        K = len(class_names(model, guidance) or [])
        labels = balanced_labels(args.n, K) if K else torch.full((args.n,), -1)
        settings = sampler_settings(args)
        images = sample_guided(model, labels, list(range(args.seed, args.seed + args.n)), guidance, settings, device,
                               progress)
        source = {"model": str(model.path), **guidance.describe(), **settings.to_dict()}
    metrics = {**source, **evaluate(images, labels, evaluator, ref, progress=progress),
               "seconds": round(time.time() - start, 2)}
    print(format_table([metrics], key="n"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.json).with_name(f".{Path(args.json).name}.tmp")
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
        tmp.replace(args.json)
        print(f"metrics written to {args.json}")


def run_train_evaluator(args) -> None:
    from guidekit.checkpoints import save_evaluator
    from guidekit.data import load_dataset
    from guidekit.io import check_output
    from guidekit.metrics.evaluator import train_evaluator

    check_output(args.out, overwrite=False)
    train = load_dataset("fashion-mnist", split="train", data_dir=args.data)
    test = load_dataset("fashion-mnist", split="test", data_dir=args.data)
    kwargs = {"epochs": args.epochs} if args.epochs else {}
    model, metrics = train_evaluator(train, test, seed=args.seed, progress=not args.no_progress, **kwargs)
    save_evaluator(model, args.out, metrics)
    print(f"test accuracy {metrics['test_accuracy']:.4f} in {metrics['train_seconds']:.0f} s; saved to {args.out}")
