"""`guidekit train-controlnet`: a ControlNet (Zhang et al. 2023) for a frozen guidekit model, on image/hint pairs."""

from __future__ import annotations

from guidekit.cli.common import (add_data_arg, add_run_args, command, defaults_of, fit, nonneg_float, nonneg_int,
                                 positive_float, positive_int, seed_int)
from guidekit.cli.resume import data_source
from guidekit.errors import check
from guidekit.training.config import ControlNetTrainConfig

DEFAULTS = defaults_of(ControlNetTrainConfig, ("steps", "batch_size", "lr", "warmup", "p_uncond", "p_drop_hint",
                                               "ema_decay", "grad_clip", "save_every", "log_every", "keep", "seed"))
PAIRS = 6000
HELP = {"steps": "optimizer steps", "batch_size": "global batch", "lr": "AdamW learning rate",
        "warmup": "warm-up steps", "p_uncond": "probability of dropping the label (on a text base: the caption) "
                                               "to ∅ (CFG)",
        "p_drop_hint": "probability of replacing the hint by zeros", "ema_decay": "EMA decay of the export",
        "grad_clip": "max grad norm, 0 = off", "save_every": "checkpoint interval", "log_every": "log interval",
        "keep": "checkpoints kept", "seed": "seed of the pairs, init, data order and noise"}


TRAIN_CONTROLNET_HELP = """Freeze BASE, copy its encoder and middle block into a trainable ControlNet fed the
condition's hint through zero convolutions (Zhang et al. 2023), and train it on --pairs images of --dataset with
hints extracted once (seeded). Writes OUT/log.csv, OUT/checkpoints/step-N/ and OUT/controlnet/ (EMA weights)."""


def register(sub) -> None:
    p = command(sub, "train-controlnet", "train a ControlNet (condition image → control) for a model",
                                         TRAIN_CONTROLNET_HELP)
    p.add_argument("base", metavar="BASE", help="base model folder or run folder of 'guidekit train'")
    p.add_argument("--condition", default=None, help="hint extractor (guidekit.conditions), e.g. canny; "
                                                     "a resumed run keeps its own")
    p.add_argument("--pairs", type=positive_int("--pairs"), default=None,
                   help=f"training images whose hints are extracted once (default {PAIRS}; a resumed run keeps "
                        f"its own)")
    p.add_argument("--dataset", default=None, help="fashion-mnist | mnist | samples | image folder (default "
                                                  "fashion-mnist; a resumed run reads its own)")
    add_data_arg(p)
    o = p.add_argument_group("optimization (defaults apply to new runs; --resume keeps the run's own)")
    for name, default in DEFAULTS.items():
        flag = f"--{name.replace('_', '-')}"
        kind = positive_float if name == "lr" else nonneg_float if isinstance(default, float) else \
            seed_int if name == "seed" else nonneg_int if name == "warmup" else positive_int
        o.add_argument(flag, type=kind(flag), default=None, help=f"{HELP[name]} (default {default})")
    add_run_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.checkpoints import load_model, newest_checkpoint, read_json
    from guidekit.conditions import CONDITIONS, get_condition
    from guidekit.data import load_dataset
    from guidekit.training.controlnet_trainer import ControlNetTrainer, make_pairs

    base = load_model(args.base)
    overrides = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    condition, pairs, widths = args.condition, args.pairs, (16, 32)
    if args.resume:
        ckpt = newest_checkpoint(args.out)
        saved = read_json(ckpt / ("guidekit.json" if (ckpt / "guidekit.json").is_file() else "config.json"))
        state = read_json(ckpt / "state.json")
        for flag, mine, theirs in (("--condition", condition, saved.get("condition")),
                                   ("--pairs", pairs, state.get("pairs"))):
            check(mine in (None, theirs), f"--resume: {args.out} was trained with {flag} {theirs}, not {mine}; "
                                          f"drop {flag} or use a new --out")
        condition, pairs = saved.get("condition"), state.get("pairs")
        widths = tuple(saved.get("controlnet", {}).get("hint_widths", widths))
        train_config = ControlNetTrainConfig(**dict(state["train"], **overrides))
        source = data_source(args.out, args, state)
    else:
        check(condition is not None, f"--condition is required for a new run: one of {', '.join(CONDITIONS)}")
        pairs = PAIRS if pairs is None else pairs
        train_config = ControlNetTrainConfig(**dict(DEFAULTS, **overrides))
        source = {"dataset": args.dataset or "fashion-mnist", "data": args.data}
    check(condition in CONDITIONS, f"--condition {condition!r} is unknown: use one of {', '.join(CONDITIONS)}")
    if base.latent is not None:
        return run_latent(args, base, condition, pairs, train_config, source)
    c = base.net.config
    dataset = load_dataset(source["dataset"], split="train", data_dir=source["data"], resolution=c.image_size,
                           channels=c.in_channels)
    cond = get_condition(condition)
    data, hints = make_pairs(dataset, cond, pairs, seed=train_config.seed)
    text = pair_captions(base, data, train_config.seed) if base.takes_text else None
    trainer = ControlNetTrainer(base.net, base.schedule, data, hints, condition, train_config, args.out,
                                resume=args.resume, mixed_precision=args.mixed_precision, hint_widths=widths,
                                text=text)
    out = fit(trainer, args)
    print(f"trained to step {trainer.step}: ControlNet at {out}, log at {trainer.out / 'log.csv'}")


def run_latent(args, base, condition: str, pairs: int, train_config, source: dict) -> None:
    """A diffusers ControlNetModel for a latent text base (a pipeline folder): the pairs at the base's pixel size,
    their captions as prompts, dropped to "" with --p-uncond (default 0.5, the paper's 50 %)."""
    from guidekit.conditions import get_condition
    from guidekit.data import load_dataset
    from guidekit.training.controlnet_trainer import make_pairs
    from guidekit.training.latent_controlnet_trainer import LatentControlNetTrainer

    if args.p_uncond is None and not args.resume:
        train_config.p_uncond = LATENT_P_UNCOND
    dataset = load_dataset(source["dataset"], split="train", data_dir=source["data"], resolution=base.image_size,
                           channels=base.image_channels)
    data, hints = make_pairs(dataset, get_condition(condition), pairs, seed=train_config.seed)
    text = pair_captions(base, data, train_config.seed, embed=False) if base.text else None
    if text is None:
        print("captions: the base records no caption settings, so every prompt is the empty one", flush=True)
    trainer = LatentControlNetTrainer(base, data, hints, condition, text, train_config, args.out,
                                      resume=args.resume, mixed_precision=args.mixed_precision,
                                      progress=not args.no_progress)
    out = fit(trainer, args)
    print(f"trained to step {trainer.step}: ControlNet (diffusers ControlNetModel) at {out}, log at "
          f"{trainer.out / 'log.csv'}")


LATENT_P_UNCOND = 0.5  # prompts dropped to "" on a latent base (Zhang et al. 2023: 50 %)


def pair_captions(base, pairs, seed: int, embed: bool = True):
    """Captions of the pairs on a text base, measured with the base's own attribute thresholds (deterministic, so a
    resumed run rebuilds the same table)."""
    from guidekit.text.attributes import Thresholds
    from guidekit.text.table import build_table

    meta = base.text or {}
    check("captions_per_image" in meta and "thresholds" in meta,
          f"{base.path} is text-conditioned but its config.json has no caption settings (text.captions_per_image, "
          f"text.thresholds); retrain it with 'guidekit train --captions'")
    table = build_table(pairs, meta["captions_per_image"], seed, thresholds=Thresholds.from_dict(meta["thresholds"]),
                        embed=embed)
    print(f"captions: {len(table.captions)} unique over {len(pairs)} pairs × {meta['captions_per_image']}"
          + (f", embedded by the frozen {table.meta['encoder']}" if embed else ""))
    return table
