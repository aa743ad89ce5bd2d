"""`guidekit train-classifier`: the noise-aware classifier p_φ(y | x_t, t) of classifier guidance."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (add_data_arg, add_train_compile_args, command, defaults_of, fit, nonneg_float,
                                 nonneg_int, positive_float, positive_int, seed_int)
from guidekit.cli.resume import data_source, keep_recorded, preset_of, saved_run
from guidekit.errors import check
from guidekit.training.config import ClassifierTrainConfig

DEFAULTS = defaults_of(ClassifierTrainConfig, ("steps", "batch_size", "lr", "weight_decay", "warmup", "grad_clip",
                                               "ema_decay", "seed", "save_every", "log_every", "keep"))


#: Data and model options of a new run (None on the command line: --resume takes the run's recorded values).
NEW_RUN = {"dataset": "fashion-mnist", "schedule": "linear", "timesteps": 1000, "preset": "small", "pool": "attention"}


TRAIN_CLASSIFIER_HELP = """Train p_φ(y | x_t, t) (Dhariwal & Nichol 2021) on x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε with t
uniform. The log and progress bar report accuracy per noise-level bucket on held-out images (the test split):
accuracy near chance in the noisiest bucket is expected; stop when the held-out best stops improving. The
classifier's noise schedule must match the diffusion model it will guide: pass --like MODEL to copy it."""


def register(sub) -> None:
    p = command(sub, "train-classifier", "train a noise-aware classifier for classifier guidance",
                                         TRAIN_CLASSIFIER_HELP)
    p.add_argument("--dataset", default=None,
                   help=f"fashion-mnist | mnist | samples | image folder (default {NEW_RUN['dataset']}; a resumed "
                        f"run reads its own)")
    add_data_arg(p)
    p.add_argument("--like", metavar="MODEL", default=None, help="diffusion model whose noise schedule to use")
    p.add_argument("--schedule", default=None, choices=["linear", "cosine"],
                   help=f"noise schedule without --like (default {NEW_RUN['schedule']})")
    p.add_argument("--timesteps", type=positive_int("--timesteps"), default=None,
                   help=f"T without --like (default {NEW_RUN['timesteps']})")
    p.add_argument("--preset", default=None, choices=["tiny", "small", "base"],
                   help=f"encoder size, as the UNet presets (default {NEW_RUN['preset']})")
    p.add_argument("--pool", default=None, choices=["attention", "avg"],
                   help=f"pooling before the head (default {NEW_RUN['pool']})")
    for name, default in DEFAULTS.items():
        kind = {int: positive_int, float: positive_float}[type(default)]
        if name == "seed":
            kind = seed_int
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


def latent_space(like, saved: dict | None):
    """The latent model (a LoadedModel with .latent) whose latents the classifier reads: --like's (like, loaded),
    or on --resume the one the run recorded; None for a pixel classifier."""
    from guidekit.checkpoints import load_model

    path = (saved or {}).get("latent_model")
    model = like if like is not None else load_model(path) if path else None
    return model if model is not None and model.latent is not None else None


def latent_trunk(size: int, space) -> dict:
    """On latents, attention at half the input side (the presets put it at 16 of 32 pixels)."""
    return {} if space is None else {"attention_resolutions": (max(1, size // 2),)}


def run(args) -> None:
    from guidekit.data import load_dataset
    from guidekit.diffusion import NoiseSchedule
    from guidekit.models.classifier import ClassifierConfig
    from guidekit.training.classifier_trainer import ClassifierTrainConfig, ClassifierTrainer

    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    like_model = None
    if args.like:
        from guidekit.checkpoints import load_model

        like_model = load_model(args.like)
    if args.resume:
        saved = saved_run(args.out)
        config = ClassifierConfig.from_dict(saved["config"]["classifier"])
        schedule = NoiseSchedule.from_config(saved["config"]["schedule"])
        like = like_model.schedule.to_config() if like_model is not None else None
        keep_recorded(args.out, {"--preset": args.preset, "--pool": args.pool, "--schedule": args.schedule,
                                 "--timesteps": args.timesteps, "--like": like},
                      {"--preset": preset_of(config.unet) or "(a custom configuration)", "--pool": config.pool,
                       "--schedule": schedule.kind, "--timesteps": schedule.num_timesteps,
                       "--like": schedule.to_config()})
        source = data_source(args.out, args, saved["state"])
        train_config = ClassifierTrainConfig(**dict(saved["state"]["train"], **overrides))
    else:
        opt = {k: NEW_RUN[k] if getattr(args, k) is None else getattr(args, k) for k in NEW_RUN}
        if like_model is not None:
            schedule = like_model.schedule
        else:
            schedule = (NoiseSchedule.linear if opt["schedule"] == "linear" else NoiseSchedule.cosine)(opt["timesteps"])
        source = {"dataset": opt["dataset"], "data": args.data}
        config, train_config = None, ClassifierTrainConfig(**dict(DEFAULTS, **overrides))
    space = latent_space(like_model, saved["config"] if args.resume else None)
    size = dict(resolution=space.image_size, channels=space.image_channels) if space is not None else {}
    train = load_dataset(source["dataset"], split="train", data_dir=source["data"], **size)
    check(train.num_classes > 1, f"{train.name} has no class labels; a classifier needs a labelled dataset")
    held_out = load_dataset(source["dataset"], split="test", data_dir=source["data"], **size) \
        if source["dataset"] in ("fashion-mnist", "mnist") and train.name != "samples" else None
    if space is not None:  # a latent model's classifier reads its noisy latents: the data is encoded once
        from guidekit.latent.data import encode_dataset

        train = encode_dataset(train, space.latent, not args.no_progress)
        held_out = held_out and encode_dataset(held_out, space.latent, not args.no_progress)
        print(f"latents: {len(train)} images as {train.channels}×{train.resolution}² latents of {space.path}")
    if config is None:
        config = ClassifierConfig.from_preset(opt["preset"], train.num_classes, pool=opt["pool"],
                                              image_size=train.resolution, in_channels=train.channels,
                                              **latent_trunk(train.resolution, space),
                                              num_train_timesteps=schedule.num_timesteps)
    trainer = ClassifierTrainer(config, train, schedule, train_config, args.out, resume=args.resume,
                                eval_dataset=held_out)
    if space is not None:
        trainer.latent_model = str(Path(space.path).resolve())
    out = fit(trainer, args)
    print(f"classifier at {out}; per-bucket accuracy in {Path(args.out) / 'log.csv'}")
