"""`guidekit distill`: guidance distillation, stage one (Meng et al. 2023): a w-conditioned student of a CFG model."""

from __future__ import annotations

import argparse
import math

from guidekit.cli.common import (add_data_arg, add_run_args, command, defaults_of, fit, nonneg_float, nonneg_int,
                                 positive_float, positive_int, seed_int)
from guidekit.errors import check, shown
from guidekit.training.config import DistillConfig

DEFAULTS = defaults_of(DistillConfig, ("steps", "batch_size", "lr", "warmup", "p_uncond", "ema_decay", "grad_clip",
                                       "save_every", "log_every", "keep", "seed"))
W_RANGE = (DistillConfig.w_min, DistillConfig.w_max)

DISTILL_HELP = """Distill MODEL's classifier-free guidance into one network pass (Meng et al. 2023, "On Distillation
of Guided Diffusion Models", stage one): a student, started as a copy of MODEL plus a zero-initialised embedding of
the guidance weight w, learns MODEL's CFG output (1+w)·ε(x, c) − w·ε(x, ∅) for w drawn uniformly from --w-range, on
MODEL's training data (labels dropped to ∅ with --p-uncond). Writes OUT/log.csv, OUT/checkpoints/step-N/ and
OUT/model/ (EMA weights; config.json records the teacher and the w range)."""


def w_range(text: str) -> tuple[float, float]:
    """argparse type for --w-range: 'lo,hi', two finite numbers with 0 <= lo < hi."""
    fix = "give two finite CFG weights lo,hi with 0 <= lo < hi, e.g. --w-range 0,4"
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--w-range {shown(repr(text), 60)} is not two numbers: {fix}")
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"--w-range {shown(repr(text), 60)} is not two finite numbers: {fix}")
    if not 0 <= values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"--w-range {shown(repr(text), 60)} needs 0 <= lo < hi: {fix}")
    return values[0], values[1]


def register(sub) -> None:
    p = command(sub, "distill", "distill a CFG model into a w-conditioned one-pass student (Meng et al. 2023)",
                DISTILL_HELP)
    p.add_argument("model", metavar="MODEL", help="teacher: a class-conditional guidekit model folder, run folder "
                                                  "or zoo name (e.g. fmnist-cfg)")
    p.add_argument("--w-range", type=w_range, default=None, metavar="LO,HI",
                   help=f"CFG weights the student learns, w ~ U(LO, HI) per image (default {W_RANGE[0]:g},"
                        f"{W_RANGE[1]:g}; a resumed run keeps its own)")
    d = p.add_argument_group("data (the teacher's training data; --resume reads the run's own)")
    d.add_argument("--dataset", default=None, help="fashion-mnist | mnist | samples | image folder (default "
                                                  "fashion-mnist)")
    add_data_arg(d)
    d.add_argument("--split", default=None, choices=["train", "test"], help="IDX split (default train)")
    o = p.add_argument_group("optimization (defaults apply to new runs; --resume keeps the run's own)")
    o.add_argument("--steps", type=positive_int("--steps"), help=f"optimizer steps (default {DEFAULTS['steps']})")
    o.add_argument("--batch-size", type=positive_int("--batch-size"),
                   help=f"global batch (default {DEFAULTS['batch_size']})")
    o.add_argument("--lr", type=positive_float("--lr"), help=f"AdamW learning rate (default {DEFAULTS['lr']})")
    o.add_argument("--warmup", type=nonneg_int("--warmup"), help=f"warm-up steps (default {DEFAULTS['warmup']})")
    o.add_argument("--p-uncond", type=nonneg_float("--p-uncond"),
                   help=f"fraction of labels replaced by ∅ (default {DEFAULTS['p_uncond']})")
    o.add_argument("--ema-decay", type=nonneg_float("--ema-decay"),
                   help=f"EMA decay (default {DEFAULTS['ema_decay']})")
    o.add_argument("--grad-clip", type=nonneg_float("--grad-clip"),
                   help=f"max grad norm, 0 = off (default {DEFAULTS['grad_clip']})")
    o.add_argument("--save-every", type=positive_int("--save-every"),
                   help=f"checkpoint interval (default {DEFAULTS['save_every']})")
    o.add_argument("--log-every", type=positive_int("--log-every"),
                   help=f"log interval (default {DEFAULTS['log_every']})")
    o.add_argument("--keep", type=positive_int("--keep"), help=f"checkpoints kept (default {DEFAULTS['keep']})")
    o.add_argument("--seed", type=seed_int("--seed"),
                   help=f"seed of the data order, t, ε, w and ∅ draws (default {DEFAULTS['seed']})")
    add_run_args(p)
    p.set_defaults(run=run)


def teacher_name(model: str, folder) -> str:
    """What the student's config.json records as its teacher: the zoo name, else the folder's absolute path."""
    from pathlib import Path

    from guidekit import zoo

    return model if zoo.resolve(model) != Path(model) else str(Path(folder).resolve())


def run(args) -> None:
    from guidekit.checkpoints import load_model
    from guidekit.checkpoints.diffusers_folder import is_diffusers_folder
    from guidekit.checkpoints.latent_folder import is_latent_folder
    from guidekit.cli.resume import data_source, saved_run
    from guidekit.data import load_dataset
    from guidekit.training.distill_trainer import DistillTrainer, check_teacher

    for kind, test in (("a text-to-image pipeline", is_latent_folder), ("a diffusers UNet2DModel", is_diffusers_folder)):
        check(not (test(args.model) or test(f"{args.model}/model")),
              f"{args.model} is {kind}: guidekit distill supports only guidekit UNet models (guidekit train) for now")
    teacher = load_model(args.model)
    check_teacher(teacher, args.model)
    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if args.w_range is not None:
        overrides.update(w_min=args.w_range[0], w_max=args.w_range[1])
    if args.resume:
        state = saved_run(args.out)["state"]
        recorded = (state["train"].get("w_min"), state["train"].get("w_max"))
        check(args.w_range is None or tuple(args.w_range) == recorded,
              f"--resume: {args.out} was distilled with --w-range {recorded[0]:g},{recorded[1]:g}, not "
              f"{args.w_range[0]:g},{args.w_range[1]:g}; drop --w-range (--resume continues what the run recorded) "
              f"or start a new run in another --out")
        config = DistillConfig(**dict(state["train"], **overrides))
        source = data_source(args.out, args, state)
    else:
        config = DistillConfig(**dict(DEFAULTS, **overrides))
        source = {"dataset": args.dataset or "fashion-mnist", "split": args.split or "train", "data": args.data}
    c = teacher.net.config
    dataset = load_dataset(source["dataset"], split=source["split"], data_dir=source["data"],
                           resolution=c.image_size, channels=c.in_channels)
    trainer = DistillTrainer(teacher, teacher_name(args.model, teacher.path), dataset, config, args.out,
                             resume=args.resume, mixed_precision=args.mixed_precision)
    out = fit(trainer, args)
    print(f"distilled to step {trainer.step}: student at {out} (w in [{config.w_min:g}, {config.w_max:g}]), log at "
          f"{trainer.out / 'log.csv'}")
