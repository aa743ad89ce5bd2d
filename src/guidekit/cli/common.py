"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse

import torch

from guidekit.errors import check


def _number(kind, name: str, lo=None, lo_open=False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {text!r}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {text}")
        return v
    parse.__name__ = name
    return parse


def positive_int(name: str):
    """argparse type: integer >= 1."""
    return _number(int, name, 1)


def nonneg_int(name: str):
    """argparse type: integer >= 0."""
    return _number(int, name, 0)


def nonneg_float(name: str):
    """argparse type: number >= 0."""
    return _number(float, name, 0.0)


def positive_float(name: str):
    """argparse type: number > 0."""
    return _number(float, name, 0.0, lo_open=True)


def pick_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check(name == "cpu" or torch.cuda.is_available(), f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run (default: auto = cuda if available)")


def add_sampler_args(p: argparse.ArgumentParser, steps: int = 50, batch: int = 64) -> None:
    """--sampler/--steps/--eta/--spacing/--no-clip/--batch-size, as in `guidekit sample`."""
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpmpp-2m"], help="sampler")
    p.add_argument("--steps", type=positive_int("--steps"), default=steps, help="model evaluations per image (per half)")
    p.add_argument("--eta", type=nonneg_float("--eta"), default=0.0, help="DDIM η (0 deterministic, 1 DDPM-like)")
    p.add_argument("--spacing", default="trailing", choices=["trailing", "leading", "linspace"],
                   help="how the steps are spread over the T training timesteps")
    p.add_argument("--no-clip", action="store_true", help="do not clamp the predicted x0 to [-1, 1]")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=batch, help="images per forward")


def sampler_settings(args):
    from guidekit.experiments.generation import SamplerSettings

    return SamplerSettings(args.sampler, args.steps, args.eta, args.spacing, not args.no_clip, args.batch_size)


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """--evaluator, --reference, --data: what the samples are measured against."""
    p.add_argument("--evaluator", default=None, metavar="DIR",
                   help="evaluator folder (default: the Fashion-MNIST evaluator shipped with guidekit)")
    p.add_argument("--reference", default="fashion-mnist",
                   help="real data the samples are compared with: fashion-mnist (its --split), samples, or a folder")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of the reference data")
    p.add_argument("--data", metavar="DIR", default=None, help="folder with the IDX files (as in train)")


def load_eval(args, device, progress: bool = True):
    """(evaluator, Reference) from the --evaluator/--reference options; reference features are cached."""
    from guidekit.data import load_dataset
    from guidekit.metrics.evaluator import evaluator_id, load_evaluator
    from guidekit.metrics.reference import reference

    evaluator = load_evaluator(args.evaluator, device)
    dataset = load_dataset(args.reference, split=args.split, data_dir=args.data)
    if args.reference not in ("fashion-mnist", "samples"):
        dataset.name = f"folder-{dataset.name}"
    return evaluator, reference(evaluator, dataset, evaluator_id(evaluator), progress=progress)
