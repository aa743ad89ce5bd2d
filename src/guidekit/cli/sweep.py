"""`guidekit sweep cfg|classifier`: FID/KID/IS/accuracy/precision/recall over a guidance weight, resumable."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_fast_model, number_list, pick_device, positive_int,
                                 preload_eval, sampler_settings, seed_int)
from guidekit.errors import check

# Further sweep kinds live in their own modules, each with register_kind(kinds) adding one subparser.
KIND_MODULES: tuple[str, ...] = ("guidekit.cli.sweep_control", "guidekit.cli.sweep_sdedit",
                                   "guidekit.cli.sweep_repaint", "guidekit.cli.sweep_steps",
                                   "guidekit.cli.sweep_text", "guidekit.cli.sweep_guidance",
                                   "guidekit.cli.sweep_restore")

OUTPUTS = ("OUT/results.csv, OUT/results.md, OUT/fid_vs_is.png, OUT/metrics_vs_w.png and OUT/grids/w*.png. "
           "Finished rows are kept: rerun the same command to resume.")


def _common(p: argparse.ArgumentParser, ws: str) -> None:
    p.add_argument("model", help="model or run folder (with class labels)")
    p.add_argument("--w", type=number_list("--w"), default=number_list("--w")(ws), help="weights, comma-separated")
    p.add_argument("--n", type=positive_int("--n"), default=10000, help="images per weight")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (the same seeds for every w)")
    add_sweep_args(p)


COMPARE_HELP = """Read OUT/results.csv of finished sweeps (e.g. cfg and classifier on the same model) and draw their
FID-vs-IS curves on one plot."""


def register(sub) -> None:
    p = sub.add_parser("sweep", help="metric sweeps: guidance weights and methods, ControlNet scale, SDEdit t0, "
                                               "RePaint masks, sampler steps, text prompts",
                       description="Sweep one setting of a guidance method (or the sampler) and measure each "
                                   "value against real data: tables, CSV and plots in --out.")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    c = command(kinds, "cfg", "classifier-free guidance weight w",
                              "For each w: sample --n class-balanced images with ε̂ = (1+w)·ε(x,y) − w·ε(x,∅), "
                              "measure FID/KID/IS-FMNIST, accuracy of the requested class and "
                              "precision/recall, and write " + OUTPUTS)
    _common(c, "0,0.1,0.2,0.3,0.5,1,2,4")
    c.set_defaults(run=run)
    k = command(kinds, "classifier", "classifier guidance weight w",
                                     "For each w: sample --n class-balanced images with "
                                     "ε̄ = ε − w·√(1−ᾱ_t)·∇ log p_φ(y|x_t, t) and measure them as for cfg. An "
                                     "unconditional model is guided as is; a class-conditional one is given its "
                                     "labels unless --base-null hands it ∅ (its null class as the unconditional "
                                     "base). Writes " + OUTPUTS)
    _common(k, "0,0.5,1,2,4,8")
    src = k.add_mutually_exclusive_group(required=True)
    src.add_argument("--classifier", metavar="DIR", help="noise-aware classifier (guidekit train-classifier)")
    src.add_argument("--clean-classifier", metavar="DIR",
                     help="NOT the paper's method: a clean-image classifier on x0-hat ('evaluator' = shipped one)")
    k.add_argument("--base-null", action="store_true", help="hand a class-conditional model ∅")
    k.add_argument("--cfg-w", type=float, default=0.0, help="also apply CFG at this fixed w (class-conditional)")
    k.set_defaults(run=run)
    m = command(kinds, "compare", "one FID-vs-IS plot over several finished sweeps", COMPARE_HELP)
    m.add_argument("sweeps", nargs="+", metavar="DIR[=LABEL]", help="sweep folders, each with an optional label")
    m.add_argument("--out", required=True, help="PNG file to write")
    m.set_defaults(run=compare)
    for name in KIND_MODULES:
        importlib.import_module(name).register_kind(kinds)


def compare(args) -> None:
    """Overlay the FID-vs-IS curves of finished sweeps (Ho & Salimans 2021, Fig. 4 style)."""
    from guidekit.experiments.plots import fid_vs_is
    from guidekit.experiments.sweep import read_rows

    series = {}
    for item in args.sweeps:
        folder, _, label = item.partition("=")
        rows = read_rows(Path(folder) / "results.csv")
        check(rows, f"{folder} has no finished sweep rows (results.csv missing or empty); run guidekit sweep first")
        series[label or Path(folder).name] = rows
    check(len(series) == len(args.sweeps), "two sweeps got the same label; give distinct DIR=LABEL names")
    check(args.out.lower().endswith(".png"), f"--out must be a .png file, got {args.out}")
    out = Path(args.out)
    check(not out.is_dir(), f"--out {out} is a folder; give a .png file path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fid_vs_is(series, tmp)
    tmp.replace(out)
    print(f"wrote {args.out}")


def run(args) -> None:
    from guidekit.pipelines import Guidance, load_guiding_classifier
    from guidekit.experiments.sweep import run_sweep
    from guidekit.metrics.evaluate import format_table

    check(all(w >= 0 for w in args.w), f"--w values must be >= 0, got {args.w}")
    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    if args.kind == "cfg" and model.takes_text:  # a text model: its prompt sweep
        from guidekit.cli.sweep_text import run_model

        return run_model(args, model, device)
    if args.kind == "cfg":
        guidance_at, spec, title = (lambda w: Guidance(w=w)), {}, "classifier-free guidance"
    else:
        clean = bool(args.clean_classifier)
        path = args.clean_classifier or args.classifier
        clf = load_guiding_classifier(path, model, device, clean=clean)
        check(args.cfg_w >= 0, f"--cfg-w must be >= 0, got {args.cfg_w}")
        guidance_at = lambda w: Guidance(args.cfg_w, clf, w, clean, args.base_null)  # noqa: E731
        spec = {"classifier": path, "clean": clean, "base_null": args.base_null, "cfg_w": args.cfg_w}
        title = "clean-classifier guidance" if clean else "classifier guidance"
    spec.update(reference=args.reference, split=args.split, evaluator=args.evaluator)
    if args.inception_weights:  # recorded so a resume cannot mix FMNIST and Inception rows
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    rows = run_sweep(model, args.w, guidance_at, args.n, sampler_settings(args),
                     preload_eval(args, device), Path(args.out), args.seed, device,
                     not args.no_progress, title, spec)
    print(format_table(rows))
    print(f"wrote {args.out}/results.csv, results.md, fid_vs_is.png, metrics_vs_w.png, grids/")
