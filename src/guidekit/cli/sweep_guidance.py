"""`guidekit sweep guidance`: every guidance method over its strength on the same seeds and labels, compared at
matched accuracy and recall."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_eval, load_fast_model, nonneg_float, nonneg_int,
                                 number_list, pick_device, positive_int, sampler_settings, seed_int)
from guidekit.cli.guidance_args import number_pair
from guidekit.errors import check, shown

GUIDANCE_HELP = """Run each guidance method over its strength — w for cfg, interval, apg, rescale, cfg-zero-star, cads,
dynamic-threshold, autoguidance (with --guide-model) and distilled (with --student); λ in [0, 1] for cfgpp, which runs
DDIM at the same --steps — on the same --n seeds and class-balanced labels, and measure every row as sweep cfg does
(FID/KID/IS, accuracy of the requested class, precision/recall) with its network evaluations per image and the share
of x̂0 pixels outside [-1, 1] (over-saturation). cfg always runs: it is the reference. w = 0 is sampled once where it
is the same images (cfg, interval, apg, rescale, autoguidance: the plain conditional model) and sampled per method
where it is not (cfg-zero-star's zeroed steps, cads, dynamic-threshold, distilled). OUT/results.md lists every row,
the best (lowest-FID) setting per method and, so that a method that merely rescales CFG's strength cannot win by
calibration, each method's FID interpolated along its own curve at the accuracy (and at the recall) of CFG's best-FID
row. Writes OUT/results.csv, OUT/results.md, OUT/fronts.png (FID vs recall and vs accuracy, a panel per method
family) and OUT/grids/<method>_<strength>.png. Finished rows are kept: rerun the same command to resume, or with more
--methods to add them."""


def method_list(text: str) -> list[str]:
    """argparse type of --methods: known method names, comma-separated."""
    from guidekit.experiments.guidance_sweep import METHODS

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--methods {shown(text, 80)}: unknown method(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"use a comma-separated list of {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def register_kind(kinds) -> None:
    from guidekit.experiments.guidance_sweep import DEFAULT_INTERVAL, METHODS

    k = command(kinds, "guidance", "every guidance method over its strength, compared at matched accuracy",
                GUIDANCE_HELP)
    k.add_argument("model", help="model or run folder (class-conditional; unconditional only with autoguidance)")
    k.add_argument("--methods", type=method_list, default=None, metavar="M1,M2",
                   help=f"methods to run, from {', '.join(METHODS)} (default: every one that applies; autoguidance "
                        f"with --guide-model, distilled with --student)")
    k.add_argument("--w", type=number_list("--w", minimum=0), default=[0.0, 0.3, 1.0, 2.0, 4.0],
                   help="strengths of the w methods, comma-separated (default 0,0.3,1,2,4)")
    k.add_argument("--lambdas", type=number_list("--lambdas", example="0.2,0.6,1"), default=[0.2, 0.4, 0.6, 0.8, 1.0],
                   help="CFG++'s λ values in [0, 1] (default 0.2,0.4,0.6,0.8,1)")
    k.add_argument("--n", type=positive_int("--n"), default=2000, help="images per row")
    k.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (the same seeds for every row)")
    m = k.add_argument_group("method settings")
    m.add_argument("--interval", type=number_pair("--interval", "0.28,5.42", inf_hi=True), default=DEFAULT_INTERVAL,
                   metavar="LO,HI", help="interval: guide only where σ = √((1−ᾱ)/ᾱ) lies in (LO, HI] (default "
                                         f"{DEFAULT_INTERVAL[0]:g},{DEFAULT_INTERVAL[1]:g}, Kynkäänniemi et al. "
                                         f"2024's EDM2 interval; HI may be inf)")
    m.add_argument("--apg-eta", type=nonneg_float("--apg-eta"), default=0.0,
                   help="apg: share of the update parallel to the conditional x̂0 kept (0 = the paper's)")
    m.add_argument("--apg-momentum", type=float, default=-0.5, help="apg: momentum β in (-1, 1)")
    m.add_argument("--apg-threshold", type=float, default=math.inf, help="apg: cap r on the update's norm (inf = none)")
    m.add_argument("--rescale", type=nonneg_float("--rescale"), default=0.7, metavar="PHI",
                   help="rescale: φ in (0, 1] (Lin et al. 2023's 0.7)")
    m.add_argument("--zero-steps", type=nonneg_int("--zero-steps"), default=1,
                   help="cfg-zero-star: first steps that predict zero velocity")
    m.add_argument("--cads", type=number_pair("--cads", "0.6,0.9"), default=(0.6, 0.9), metavar="TAU1,TAU2",
                   help="cads: anneal the condition for t in (τ1, 1], fully beyond τ2 (t = 1 is pure noise)")
    m.add_argument("--cads-noise", type=nonneg_float("--cads-noise"), default=0.25, help="cads: noise scale s")
    m.add_argument("--cads-psi", type=nonneg_float("--cads-psi"), default=1.0, help="cads: rescale mix ψ in [0, 1]")
    m.add_argument("--dynamic-threshold", type=float, default=0.995, metavar="P",
                   help="dynamic-threshold: Imagen's percentile P")
    m.add_argument("--guide-model", metavar="DIR", default=None,
                   help="autoguidance's weaker model of the same conditioning (adds the autoguidance method)")
    m.add_argument("--student", metavar="DIR", default=None,
                   help="a guidance-distilled student of the model (guidekit distill; adds the distilled method, at "
                        "the --w inside its w range)")
    add_sweep_args(k)
    k.set_defaults(run=run)


def run(args) -> None:
    from guidekit.experiments.guidance_sweep import MethodParams, applicable, run_guidance_sweep

    explicit = args.methods is not None
    methods = args.methods
    if explicit:  # refused before any model is loaded
        check("autoguidance" not in methods or args.guide_model,
              "--methods autoguidance needs the weaker guiding model: give --guide-model DIR (a smaller or earlier "
              "checkpoint of the same conditioning), or drop autoguidance")
        check("distilled" not in methods or args.student,
              "--methods distilled needs a guidance-distilled student: give --student DIR (written by 'guidekit "
              "distill MODEL'), or drop distilled")
    if not explicit or "cfgpp" in methods:
        bad = [v for v in args.lambdas if not 0 <= v <= 1]
        check(not bad, f"--lambdas {', '.join(f'{v:g}' for v in bad)}: CFG++'s λ must lie in [0, 1] (Chung et al. "
                       f"2024: λ = 1 is the conditional x̂0); e.g. --lambdas 0.2,0.4,0.6,0.8,1")
    settings = sampler_settings(args)
    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    if not explicit:
        methods = applicable(model, bool(args.guide_model), bool(args.student))
    params = MethodParams(tuple(args.interval), args.apg_eta, args.apg_momentum, args.apg_threshold, args.rescale,
                          args.zero_steps, tuple(args.cads), args.cads_noise, args.cads_psi, args.dynamic_threshold)
    if args.guide_model and "autoguidance" in methods:  # checked against the model where every row's stack is built
        params.guide_model = load_fast_model(args.guide_model, args, device)
    if args.student and "distilled" in methods:
        params.student = load_fast_model(args.student, args, device)
    spec = {"reference": args.reference, "split": args.split, "evaluator": args.evaluator}
    if args.inception_weights:  # recorded so a resume cannot mix FMNIST and Inception rows
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    cache: list = []

    def evaluator():
        if not cache:
            cache.append(load_eval(args, device, not args.no_progress))
        return cache[0]

    out = Path(args.out)
    rows, notes = run_guidance_sweep(model, methods, args.w, args.lambdas, params, args.n, settings, evaluator, out,
                                     args.seed, device, not args.no_progress, spec)
    print((out / "results.md").read_text(), end="")
    print(f"wrote {out}/results.csv, results.md, fronts.png, grids/")
