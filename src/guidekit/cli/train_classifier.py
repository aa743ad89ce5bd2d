"""`guidekit train-classifier`: the noise-aware classifier p_φ(y | x_t, t) of classifier guidance."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (HelpFormatter, add_train_compile_args, defaults_of, nonneg_float, nonneg_int,
                                 positive_float, positive_int, train_compile_mode)
from guidekit.errors import check
from guidekit.training.classifier_trainer import ClassifierTrainConfig

DEFAULTS = defaults_of(ClassifierTrainConfig, ("steps", "batch_size", "lr", "weight_decay", "warmup", "grad_clip",
                                               "ema_decay", "seed", "save_every", "log_every", "keep"))


def register(sub) -> None:
    p = sub.add_parser("train-classifier", help="train a noise-aware classifier for classifier guidance",
                       description="Train p_φ(y | x_t, t) (Dhariwal & Nichol 2021) on x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε "
                                   "with t uniform. The log and progress bar report accuracy per noise-level "
                                   "bucket on held-out images (the test split): accuracy near chance in the "
                                   "noisiest bucket is expected; stop when the held-out best stops improving. "
                                   "The classifier's noise schedule must match the diffusion model it will guide: "
                                   "pass --like MODEL to copy it.",
                       formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist | samples | image folder")
    p.add_argument("--data", metavar="DIR", default=None, help="folder with the IDX files")
    p.add_argument("--like", metavar="MODEL", default=None, help="diffusion model whose noise schedule to use")
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine"], help="noise schedule (no --like)")
    p.add_argument("--timesteps", type=positive_int("--timesteps"), default=1000, help="T (no --like)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "base"], help="encoder size (UNet presets)")
    p.add_argument("--pool", default="attention", choices=["attention", "avg"], help="pooling before the head")
    for name, default in DEFAULTS.items():
        kind = {int: positive_int, float: positive_float}[type(default)]
        if name in ("seed",):
            kind = nonneg_int
        if name in ("weight_decay", "grad_clip", "ema_decay", "warmup"):
            kind = nonneg_float if isinstance(default, float) else nonneg_int
        p.add_argument(f"--{name.replace('_', '-')}", type=kind(f"--{name.replace('_', '-')}"), default=None,
                       help=f"default {default} (a resumed run keeps its own)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--max-minutes", type=positive_float("--max-minutes"), help="stop (and save) after this wall time")
    add_train_compile_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.data import load_dataset
    from guidekit.diffusion import NoiseSchedule
    from guidekit.models.classifier import ClassifierConfig
    from guidekit.training.checkpoint import read_json
    from guidekit.training.runs import newest_checkpoint
    from guidekit.training.classifier_trainer import ClassifierTrainConfig, ClassifierTrainer

    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    train = load_dataset(args.dataset, split="train", data_dir=args.data)
    check(train.num_classes > 1, f"{train.name} has no class labels; a classifier needs a labelled dataset")
    held_out = load_dataset(args.dataset, split="test", data_dir=args.data) \
        if args.dataset in ("fashion-mnist", "mnist") else None
    if args.resume:
        ckpt = newest_checkpoint(args.out)
        saved = read_json(ckpt / "config.json")
        config = ClassifierConfig.from_dict(saved["classifier"])
        schedule = NoiseSchedule.from_config(saved["schedule"])
        train_config = ClassifierTrainConfig(**dict(read_json(ckpt / "state.json")["train"], **overrides))
    else:
        if args.like:
            from guidekit.training import load_model
            schedule = load_model(args.like).schedule
        else:
            schedule = (NoiseSchedule.linear if args.schedule == "linear" else NoiseSchedule.cosine)(args.timesteps)
        config = ClassifierConfig.from_preset(args.preset, train.num_classes, pool=args.pool,
                                              image_size=train.resolution, in_channels=train.channels,
                                              num_train_timesteps=schedule.num_timesteps)
        train_config = ClassifierTrainConfig(**dict(DEFAULTS, **overrides))
    trainer = ClassifierTrainer(config, train, schedule, train_config, args.out, resume=args.resume,
                                eval_dataset=held_out)
    if train_compile_mode(args):
        trainer.compile(train_compile_mode(args))
    out = trainer.fit(max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                      progress=not args.no_progress)
    print(f"classifier at {out}; per-bucket accuracy in {Path(args.out) / 'log.csv'}")
