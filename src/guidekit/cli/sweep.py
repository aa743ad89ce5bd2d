"""`guidekit sweep cfg`: FID/KID/IS/accuracy/precision/recall over the guidance weight w, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path

from guidekit.cli.common import (add_device, add_eval_args, add_sampler_args, load_eval, nonneg_int, pick_device,
                                 positive_int, sampler_settings)
from guidekit.errors import check


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0,0.5,1, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def register(sub) -> None:
    p = sub.add_parser("sweep", help="metric sweeps over a guidance parameter (cfg)",
                       description="Sweep a guidance parameter and measure each setting.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    c = kinds.add_parser("cfg", help="classifier-free guidance weight w",
                         description="For each w: sample --n class-balanced images (the same seeds for every w), "
                                     "measure FID/KID/IS-FMNIST, accuracy of the requested class and "
                                     "precision/recall, and write OUT/results.csv, OUT/results.md, "
                                     "OUT/fid_vs_is.png, OUT/metrics_vs_w.png and OUT/grids/w*.png. Finished rows "
                                     "are kept: rerun the same command to resume.",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("model", help="class-conditional model or run folder")
    c.add_argument("--w", type=float_list, default=[0, 0.1, 0.2, 0.3, 0.5, 1, 2, 4], help="weights, comma-separated")
    c.add_argument("--n", type=positive_int("--n"), default=10000, help="images per w")
    c.add_argument("--seed", type=nonneg_int("--seed"), default=0, help="first seed")
    c.add_argument("--out", required=True, help="output folder")
    add_sampler_args(c, steps=50, batch=250)
    add_eval_args(c)
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device(c)
    c.set_defaults(run=run)


def run(args) -> None:
    from guidekit.experiments.cfg_sweep import run_cfg_sweep
    from guidekit.metrics.evaluate import format_table
    from guidekit.training import load_model

    check(all(w >= 0 for w in args.w), f"--w values must be >= 0, got {args.w}")
    device = pick_device(args.device)
    model = load_model(args.model, device)
    evaluator, ref = load_eval(args, device, not args.no_progress)
    rows = run_cfg_sweep(model, args.w, args.n, sampler_settings(args), evaluator, ref, Path(args.out), args.seed,
                         device, not args.no_progress)
    print(format_table(rows))
    print(f"wrote {args.out}/results.csv, results.md, fid_vs_is.png, metrics_vs_w.png, grids/")
