"""`guidekit sweep sdedit`: SDEdit's realism–faithfulness trade-off over t0 (Meng et al. 2022, Fig. 3 style)."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_fast_model, nonneg_float, number_list, pick_device,
                                 positive_int, preload_eval, sampler_settings, seed_int)
from guidekit.cli.edit import add_stroke_args
from guidekit.errors import check


SDEDIT_HELP = """For each t0: turn --n class-balanced test images of --guides into stroke paintings, SDEdit them with
the images' classes (same seeds for every t0), and measure faithfulness (RMSE and L2 to the guide) and realism
(FID/KID/IS-FMNIST, accuracy of the image's class). Writes OUT/results.csv, OUT/results.md,
OUT/realism_faithfulness.png and OUT/grid.png (stroke guide | outputs across t0). Finished rows are kept: rerun the
same command to resume."""


def register_kind(kinds) -> None:
    k = command(kinds, "sdedit", "SDEdit noise level t0: faithfulness (L2 to the guide) vs realism (FID)", SDEDIT_HELP)
    k.add_argument("model", help="model or run folder")
    k.add_argument("--t0", type=number_list("--t0"), default=[i / 10 for i in range(1, 11)],
                   help="noise levels in (0, 1], comma-separated")
    k.add_argument("--n", type=positive_int("--n"), default=1000, help="guides (and outputs) per t0")
    k.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (the same seeds for every t0)")
    k.add_argument("--w", type=nonneg_float("--w"), default=0.0, help="classifier-free guidance weight (0 = the "
                                                                      "plain class-conditional model)")
    k.add_argument("--repeats", type=positive_int("--repeats"), default=1, help="SDEdit's K rounds")
    k.add_argument("--guides", default="fashion-mnist", help="labelled data set whose test images become the "
                                                             "stroke guides: fashion-mnist | samples")
    add_stroke_args(k)
    add_sweep_args(k)
    k.set_defaults(run=run)


def run(args) -> None:
    from guidekit.data import load_dataset
    from guidekit.pipelines import Guidance
    from guidekit.experiments.sdedit import run_sdedit_sweep, stroke_guides
    from guidekit.metrics.evaluate import format_table
    from guidekit.sampling.sdedit import check_t0

    for t0 in args.t0:
        check_t0(t0)
    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    data = load_dataset(args.guides, split="test", data_dir=args.data, resolution=model.image_size,
                        channels=model.image_channels)
    K = data.num_classes
    check(K > 0, f"--guides {args.guides} has no labels; the sweep needs labelled images")
    check(args.n >= max(2 * K, 10), f"--n {args.n} is too small: use at least {max(2 * K, 10)} (two images per class)")
    guides, labels, _ = stroke_guides(data, args.n, args.stroke_levels)
    spec = {"guides": data.name, "stroke_levels": args.stroke_levels, "reference": args.reference,
            "split": args.split, "evaluator": args.evaluator}
    cond = {}
    if model.takes_text:  # the class protocol, told in words
        from guidekit.pipelines import class_prompt_cond

        cond = class_prompt_cond(model, labels)
        spec["prompts"] = "class"
    if args.inception_weights:
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    rows = run_sdedit_sweep(model, args.t0, guides, labels, Guidance(w=args.w), sampler_settings(args),
                            preload_eval(args, device), Path(args.out), args.seed,
                            args.repeats, device, not args.no_progress, spec, data.class_names, cond)
    print(format_table(rows, key="t0", extra=("rmse", "l2")))
    print(f"wrote {args.out}/results.csv, results.md, realism_faithfulness.png, grid.png")
