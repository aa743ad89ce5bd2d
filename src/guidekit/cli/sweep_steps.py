"""`guidekit sweep steps`: FID-FMNIST at few model evaluations (DDIM, DPM-Solver++) vs DDPM with all 1,000 steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from guidekit.cli.common import (add_device, add_eval_args, command, load_fast_model, nonneg_float, number_list,
                                 pick_device, positive_int, preload_eval, seed_int)
from guidekit.diffusion.schedule import SPACINGS
from guidekit.errors import check


def setting(text: str) -> tuple[str, int]:
    """argparse type of --baseline: SAMPLER:STEPS."""
    from guidekit.errors import GuidekitError
    from guidekit.experiments.steps import parse_setting

    try:
        return parse_setting(text)
    except GuidekitError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


STEPS_HELP = """For each sampler in --samplers and each NFE in --nfe, and once for --baseline (ancestral DDPM with
all 1,000 steps by default): sample --n class-balanced images with the same seeds, measure FID/KID/IS-FMNIST and
accuracy. NFE counts evaluations of the (guided) denoiser; with --w > 0 each is one batched call on both CFG halves.
Writes OUT/<sampler>/results.csv, OUT/results.md (with FID relative to the baseline), OUT/fid_vs_nfe.png and grids.
Finished rows are kept: rerun the same command to resume."""


def register_kind(kinds) -> None:
    k = command(kinds, "steps", "quality vs model evaluations: few-step samplers vs DDPM-1000", STEPS_HELP)
    k.add_argument("model", help="model or run folder (class-conditional)")
    k.add_argument("--samplers", default="ddim,dpmpp-2m", help="few-step samplers, comma-separated")
    k.add_argument("--nfe", type=number_list("--nfe", int, "10,15,20,50", minimum=1), default=[10, 15, 20, 50],
                   help="model evaluations per image")
    k.add_argument("--baseline", type=setting, default=("ddpm", 1000), metavar="SAMPLER:STEPS",
                   help="the row every other is compared with")
    k.add_argument("--w", type=nonneg_float("--w"), default=0.0, help="CFG weight (0 = the conditional model)")
    k.add_argument("--n", type=positive_int("--n"), default=5000, help="images per setting")
    k.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (the same for every setting)")
    k.add_argument("--eta", type=nonneg_float("--eta"), default=0.0, help="DDIM η of the ddim rows")
    k.add_argument("--spacing", default="trailing", choices=list(SPACINGS),
                   help="how the steps are spread over the T training timesteps")
    k.add_argument("--batch-size", type=positive_int("--batch-size"), default=250, help="images per forward")
    k.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    add_eval_args(k)
    k.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device(k)
    k.set_defaults(run=run)


def run(args) -> None:
    from guidekit.pipelines import SamplerSettings
    from guidekit.experiments.steps import parse_setting, plot_steps, run_steps_sweep, steps_table

    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    check(bool(samplers), "--samplers is empty; give e.g. ddim,dpmpp-2m")
    for s in samplers:
        parse_setting(f"{s}:1")
    check(len(set(samplers)) == len(samplers), f"--samplers {args.samplers} names a sampler twice")
    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    settings = SamplerSettings("ddim", 1, args.eta, args.spacing, True, args.batch_size)
    spec = {"reference": args.reference, "split": args.split, "evaluator": args.evaluator}
    if args.inception_weights:
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    out = Path(args.out)
    series = run_steps_sweep(model, samplers, sorted(set(args.nfe)), args.baseline, args.w, args.n, settings,
                             preload_eval(args, device), out, args.seed, device,
                             not args.no_progress, spec)
    tag = spec.get("feature_network", "FMNIST")
    table = steps_table(series, tag)
    (out / "results.md").write_text(table + "\n")
    plot_steps(series, out / "fid_vs_nfe.png", tag)
    print(table)
    print(f"wrote {out}/results.md, fid_vs_nfe.png and <sampler>/results.csv + grids/")
