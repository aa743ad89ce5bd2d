"""`guidekit sweep control|control-curve`: ControlNet (Zhang et al. 2023) adherence and FID over scale or training."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_fast_model, nonneg_float, number_list, pick_device,
                                 positive_int, preload_eval, sampler_settings, seed_int)
from guidekit.errors import check

SOURCE = ("For --n class-balanced test images of --dataset (a seeded choice) the ControlNet's own condition gives "
          "the hints; the model samples at the images' labels (CFG at --w) and is scored by adherence (the "
          "condition re-extracted from each sample against its hint: edge_f1 for canny/sketch, iou for mask, l2 "
          "for lowres) and FID/KID/IS-FMNIST and accuracy against --reference. On a text model (train --captions) "
          "each image's prompt names its class and, in turn per round of classes, dark or light; attr_brightness "
          "is the share of outputs on the prompt's side of their class's median brightness. ")


def _common(p, n: int = 1000) -> None:
    p.add_argument("--n", type=positive_int("--n"), default=n, help="test images (and samples) per row")
    p.add_argument("--seed", type=seed_int("--seed"), default=0,
                   help="seed of the image choice, the hint extraction and the first sample (same for every row)")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="where the test images come from: fashion-mnist (test split), samples, or a folder")
    p.add_argument("--w", type=nonneg_float("--w"), default=0.0, help="classifier-free guidance weight")
    p.add_argument("--hint-cond-only", action="store_true", help="hint only to the conditional half of CFG")
    p.add_argument("--base-null", action="store_true",
                   help="sample at ∅ (the model's null class): the class must come from the hint alone; accuracy "
                        "is still measured against the source images' classes")
    add_sweep_args(p)


def register_kind(kinds) -> None:
    c = command(kinds, "control", "ControlNet control scale",
                                  "One row per control scale (0 = the base model without control). " + SOURCE +
                                  "Writes OUT/results.csv, OUT/results.md, OUT/adherence_vs_scale.png and "
                                  "OUT/grids/scale*.png (source | hint | output); finished rows are kept.")
    c.add_argument("model", help="base model folder or run folder")
    c.add_argument("--controlnet", action="append", required=True, metavar="PATH",
                   help="ControlNet folder or train-controlnet run; repeat for several (each at the same scale)")
    c.add_argument("--scale", type=number_list("--scale"), default=[0.0, 0.25, 0.5, 1.0, 1.5, 2.0],
                   help="control scales, comma-separated")
    _common(c)
    c.set_defaults(run=run_scale)
    k = command(kinds, "control-curve", "ControlNet adherence over its training checkpoints",
                                        "One row per checkpoint of a 'guidekit train-controlnet' run (its EMA weights), "
                                        "plus step 0 (zero convolutions: exactly the base model), to see the ControlNet "
                                        "paper's 'sudden convergence'. " + SOURCE + "Writes OUT/results.csv, "
                                        "OUT/results.md, OUT/adherence_vs_step.png and OUT/grids/step-*.png; finished "
                                        "rows are kept, so rerun it as training goes on.")
    k.add_argument("run_dir", metavar="RUN_DIR", help="run folder of 'guidekit train-controlnet' (checkpoints/step-*)")
    k.add_argument("--base", required=True, metavar="MODEL", help="the base model the ControlNet was trained on")
    k.add_argument("--scale", type=nonneg_float("--scale"), default=1.0, help="control scale")
    _common(k, n=500)
    k.set_defaults(run=run_curve)


def _setup(args, model, nets):
    """The control set, the guidance and the spec entries every control sweep records."""
    from guidekit.data import load_dataset
    from guidekit.experiments.control import control_set, with_prompts
    from guidekit.pipelines import condition_of
    from guidekit.pipelines import Guidance

    c, text = model.net.config, model.takes_text
    check(args.w == 0 or c.num_classes > 0 or text, f"--w {args.w}: classifier-free guidance needs a "
                                                    f"class-conditional or text model; use --w 0")
    check(not text or not (args.base_null or args.hint_cond_only),
          f"{model.path} is text-conditioned: every image is sampled at a prompt naming its class, so --base-null "
          f"and --hint-cond-only (class-label options) do not apply; drop them")
    check(not args.base_null or (args.w == 0 and not args.hint_cond_only),
          "--base-null samples every image at ∅ (the class must come from the hint): use it with --w 0 and "
          "without --hint-cond-only")
    check(args.n >= 10, f"--n {args.n} is too small: FID/KID/IS need at least 10 images")
    data = load_dataset(args.dataset, split="test", data_dir=args.data, resolution=model.image_size,
                        channels=model.image_channels)
    cset = control_set(data, [condition_of(n) for n in nets], args.n, args.seed)
    if text:
        cset = with_prompts(cset, model)
    spec = {"dataset": data.name, "w": args.w, "hint_uncond": not args.hint_cond_only,
            "conditions": [n.condition for n in nets], "base_null": args.base_null, "reference": args.reference,
            "split": args.split, "evaluator": args.evaluator}
    if text:  # (class-model sweeps keep their spec, so their folders still resume)
        spec["prompts"] = "class + dark/light"
    if args.inception_weights:
        spec.update(inception_weights=str(args.inception_weights), feature_network="Inception")
    return cset, Guidance(w=args.w), spec


def run_scale(args) -> None:
    from guidekit.checkpoints import load_controlnet
    from guidekit.experiments.control import run_control_sweep, score_keys
    from guidekit.metrics.evaluate import format_table

    check(all(s >= 0 for s in args.scale), f"--scale values must be >= 0, got {args.scale}")
    device = pick_device(args.device)
    model = load_fast_model(args.model, args, device)
    nets = [load_controlnet(path, model.net) for path in args.controlnet]
    cset, guidance, spec = _setup(args, model, nets)
    spec["controlnets"] = [str(n.path) for n in nets]
    rows = run_control_sweep(model, nets, args.scale, cset, sampler_settings(args),
                             preload_eval(args, device), Path(args.out), args.seed,
                             device, not args.no_progress, guidance, not args.hint_cond_only, spec, args.base_null)
    print(format_table(rows, key="scale", extra=tuple(score_keys(cset))))
    print(f"wrote {args.out}/results.csv, results.md, adherence_vs_scale.png, grids/")


def checkpoints_of(run_dir: str | Path) -> dict[int, Path]:
    """{step: folder} of a train-controlnet run's complete checkpoints."""
    from guidekit.checkpoints import complete_checkpoints

    run_dir = Path(run_dir)
    check(run_dir.is_dir(), f"RUN_DIR {run_dir} is not a folder; pass the --out of 'guidekit train-controlnet'")
    found = {int(c.name.split("-")[-1]): c for c in complete_checkpoints(run_dir)}
    check(bool(found), f"{run_dir} has no checkpoints/step-*/ with state.json: pass the run folder of 'guidekit "
                       f"train-controlnet' (not its controlnet/ export)")
    return found


def run_curve(args) -> None:
    from guidekit.checkpoints import load_controlnet
    from guidekit.experiments.control import run_control_curve, score_keys
    from guidekit.metrics.evaluate import format_table

    device = pick_device(args.device)
    model = load_fast_model(args.base, args, device)
    ckpts = checkpoints_of(args.run_dir)
    newest = load_controlnet(ckpts[max(ckpts)], model.net)  # refuses another base before any work
    cset, guidance, spec = _setup(args, model, [newest])
    spec["run"] = str(Path(args.run_dir))
    load = lambda folder: load_controlnet(folder, model.net)  # noqa: E731
    rows = run_control_curve(model, ckpts, load, cset, args.scale, sampler_settings(args),
                             preload_eval(args, device), Path(args.out), args.seed,
                             device, not args.no_progress, guidance, not args.hint_cond_only, spec, args.base_null)
    print(format_table(rows, key="step", extra=tuple(score_keys(cset))))
    print(f"wrote {args.out}/results.csv, results.md, adherence_vs_step.png, grids/")
