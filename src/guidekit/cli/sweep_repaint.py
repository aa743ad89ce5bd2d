"""`guidekit sweep repaint`: RePaint (Lugmayr et al. 2022) per mask type, without (r = 1) and with resampling."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_fast_model, name_list, nonneg_float, pick_device,
                                 positive_int, preload_eval, sampler_settings, seed_int)
from guidekit.cli.inpaint import add_jump_args, jump_length_of
from guidekit.errors import check
from guidekit.masks import MASK_KINDS


REPAINT_HELP = """Inpaint the first --n images of the --reference data set's --split under seeded masks of each type,
once without resampling (r = 1) and once with --jump-n-sample r, and measure the generated region's L2 (RMS error on
the [0, 1] scale) and PSNR against the ground truth, FID/KID-FMNIST of the completed images, accuracy (the
ground-truth class kept), NFE and img/s. Writes OUT/results.csv, OUT/results.md and OUT/grid.png; finished rows are
kept: rerun the same command to resume."""


def register_kind(kinds) -> None:
    p = command(kinds, "repaint", "RePaint inpainting per mask type, with and without resampling", REPAINT_HELP)
    p.add_argument("model", help="model or run folder")
    p.add_argument("--masks", type=name_list("--masks", MASK_KINDS), default=list(MASK_KINDS),
                   help="mask types, comma-separated")
    p.add_argument("--n", type=positive_int("--n"), default=1000, help="images per row (at least 10)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (also seeds the masks)")
    add_jump_args(p)
    p.add_argument("--labels", default="null", choices=["null", "true"],
                   help="condition a class-conditional model on ∅ (unconditional, as in the paper) or on each "
                        "image's true class (a text model: on a prompt naming it)")
    p.add_argument("--w", type=nonneg_float("--w"), default=0.0, help="CFG weight (with --labels true)")
    add_sweep_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    import torch

    from guidekit.data import load_dataset
    from guidekit.diffusion import NULL
    from guidekit.pipelines import Guidance
    from guidekit.experiments.repaint_sweep import format_table, run_repaint_sweep
    from guidekit.sampling.repaint import repaint_levels

    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    c = model.net.config
    conditional = c.num_classes > 0 or model.takes_text
    check(args.labels == "null" or conditional, "--labels true needs a class-conditional or text-conditioned model; "
                                                "use --labels null")
    check(args.w == 0 or args.labels == "true", f"--w {args.w} guides toward a class: use it with --labels true")
    settings = sampler_settings(args)
    args.jump_length = jump_length_of(args, model.schedule.num_timesteps)
    rs = sorted({1, args.jump_n_sample})
    repaint_levels(model.schedule.timesteps(settings.steps, settings.spacing), args.jump_length, max(rs))
    data = load_dataset(args.reference, split=args.split, data_dir=args.data, resolution=model.image_size,
                        channels=model.image_channels)
    check(args.n <= len(data), f"--n {args.n} exceeds the {len(data)} images of {data.name}; lower --n")
    truth = data.images(slice(0, args.n))
    truth_labels = None if data.labels is None else data.labels[:args.n]
    labels, cond = torch.full((args.n,), NULL), {}
    if args.labels == "true":
        check(truth_labels is not None, f"{data.name} has no labels; use --labels null")
        labels = truth_labels.clone()
    spec = {"reference": args.reference, "split": args.split, "evaluator": args.evaluator, "labels": args.labels}
    if args.labels == "true" and model.takes_text:  # the class told in words; y stays ∅ for a network without labels
        from guidekit.pipelines import class_prompt_cond

        cond = class_prompt_cond(model, labels)
        labels = torch.full((args.n,), NULL)
        spec["prompts"] = "class"
    if args.inception_weights:
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    rows = run_repaint_sweep(model, truth, truth_labels, labels, args.masks, rs, args.jump_length,
                             Guidance(w=args.w), settings, preload_eval(args, device),
                             Path(args.out), args.seed, device, not args.no_progress, spec, cond)
    print(format_table(rows, spec.get("feature_network", "FMNIST")))
    print(f"wrote {args.out}/results.csv, results.md, grid.png")
