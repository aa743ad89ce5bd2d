"""`guidekit sweep restore`: DPS, MCG, DDNM(+), ΠGDM and RePaint per task and measurement noise, on the same images."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_fast_model, name_list, nonneg_float, number_list,
                                 pick_device, positive_int, preload_eval, sampler_settings, seed_int)
from guidekit.cli.restore import add_method_args
from guidekit.errors import check


RESTORE_HELP = """Degrade the first --n images of the --reference set's --split by each task (inpaint under one
seeded --mask per image, ×2/×4 average-pool super-resolution, a Gaussian blur), with measurement noise σ_y of each
--sigma-y (the same draws for every method), and restore them with each --methods at --steps sampler steps (RePaint
also with --repaint-r passes of jump length 1 at no more NFE; DDNM at σ_y > 0 is DDNM+ on DDPM's step). Measures
whole-image and unknown-region PSNR/L2 against the truth (on the [0, 1] scale), the consistency RMS(y − A(x̂)), FID/KID
of the restored set, accuracy of the true class, NFE and seconds per image. Writes OUT/results.csv, OUT/results.md
(the table, RePaint's best FID against the others', the PSNR lost to noise) and OUT/grid-TASK-sSIGMA.png; finished
rows are kept: rerun the same command to resume."""


def register_kind(kinds) -> None:
    from guidekit.masks import MASK_KINDS
    from guidekit.restoration import METHODS, TASKS

    p = command(kinds, "restore", "zero-shot restoration methods per task and noise level", RESTORE_HELP)
    p.add_argument("model", help="model or run folder (pixel space)")
    p.add_argument("--tasks", type=name_list("--tasks", TASKS), default=["inpaint", "sr4", "deblur"],
                   help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument("--methods", type=name_list("--methods", METHODS), default=list(METHODS),
                   help=f"comma-separated: {', '.join(METHODS)}")
    p.add_argument("--sigma-y", type=number_list("--sigma-y", minimum=0, example="0,0.05"), default=[0.0, 0.05],
                   help="measurement noise std on the [-1, 1] scale, comma-separated")
    p.add_argument("--mask", default="wide", choices=list(MASK_KINDS), help="mask type of the inpaint task")
    p.add_argument("--repaint-r", type=positive_int("--repaint-r"), default=2,
                   help="RePaint's extra row: r passes with jump length 1 at <= --steps NFE (1 = none)")
    add_method_args(p)
    p.add_argument("--n", type=positive_int("--n"), default=500, help="images per row (at least 10)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (also seeds masks and noise)")
    p.add_argument("--labels", default="null", choices=["null", "true"],
                   help="condition a class-conditional model on ∅ or on each image's true class")
    p.add_argument("--w", type=nonneg_float("--w"), default=0.0, help="CFG weight (with --labels true)")
    add_sweep_args(p, steps=20)
    p.set_defaults(run=run)


def run(args) -> None:
    import torch

    from guidekit.data import load_dataset
    from guidekit.diffusion import NULL
    from guidekit.experiments.restore_sweep import format_report, run_restore_sweep
    from guidekit.pipelines import Guidance, check_restorable

    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    check_restorable(model)
    check(args.labels == "null" or model.net.config.num_classes > 0,
          "--labels true needs a class-conditional model; use --labels null")
    check(args.w == 0 or args.labels == "true", f"--w {args.w} guides toward a class: use it with --labels true")
    settings = sampler_settings(args)
    data = load_dataset(args.reference, split=args.split, data_dir=args.data, resolution=model.image_size,
                        channels=model.image_channels)
    check(args.n <= len(data), f"--n {args.n} exceeds the {len(data)} images of {data.name}; lower --n")
    truth = data.images(slice(0, args.n))
    truth_labels = None if data.labels is None else data.labels[:args.n]
    labels = torch.full((args.n,), NULL)
    if args.labels == "true":
        check(truth_labels is not None, f"{data.name} has no labels; use --labels null")
        labels = truth_labels.clone()
    spec = {"reference": args.reference, "split": args.split, "evaluator": args.evaluator, "labels": args.labels}
    if args.inception_weights:
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    rows = run_restore_sweep(model, truth, truth_labels, labels, args.tasks, args.methods, args.sigma_y,
                             Guidance(w=args.w), settings, preload_eval(args, device), Path(args.out), args.mask,
                             args.repaint_r, args.zeta, args.pigdm_w, args.seed, device, not args.no_progress, spec)
    print(format_report(rows, spec.get("feature_network", "FMNIST")))
    print(f"wrote {args.out}/results.csv, results.md, grid-*.png")
