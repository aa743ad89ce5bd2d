"""`guidekit sweep prompts`: text-prompt CFG (Ho & Salimans 2021) over w — accuracy and attribute adherence, seen vs held-out phrasings."""

from __future__ import annotations

from pathlib import Path

from guidekit.cli.common import (add_sweep_args, command, load_fast_model, number_list, pick_device, positive_int,
                                 preload_eval, sampler_settings, seed_int)


PROMPTS_HELP = """For each w: sample the fixed evaluation prompts (per class: seen paraphrases, the held-out
paraphrase, the held-out attribute combination) with --n // #prompts seeds each, and measure FID/IS-FMNIST, the
accuracy of the prompt's class per group and attribute adherence (dark/light, small/large, plain/patterned
re-measured on the output). Writes OUT/results.csv, OUT/results.md, OUT/adherence_vs_w.png, OUT/grids/w*.png (prompts
× seeds) and OUT/per_prompt/w*.csv (accuracy and adherence per prompt, with the class of the seen caption the encoder
puts nearest). 'guidekit sweep cfg' on a text-conditioned model runs this sweep."""


def register_kind(kinds) -> None:
    p = command(kinds, "prompts", "text prompts: class accuracy and attribute adherence over w", PROMPTS_HELP)
    p.add_argument("model", help="a text-conditioned model (guidekit train --captions)")
    p.add_argument("--w", type=number_list("--w"), default=[0.0, 0.5, 1.0, 2.0, 4.0],
                   help="weights, comma-separated")
    p.add_argument("--n", type=positive_int("--n"), default=1200, help="images per weight (spread over the prompts)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed (the same seeds for every w)")
    add_sweep_args(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.errors import check

    check(all(w >= 0 for w in args.w), f"--w values must be >= 0, got {args.w}")
    device = pick_device(args.device)
    run_model(args, load_fast_model(args.model, args, device), device)


def run_model(args, model, device) -> None:
    """The prompt sweep of an already loaded model (also what 'sweep cfg' runs on a text model)."""
    from guidekit.errors import check
    from guidekit.experiments.text_sweep import format_rows, run_prompt_sweep

    check(not getattr(args, "inception_weights", None), "--inception-weights: the prompt sweep measures class "
                                                        "accuracy, which needs the Fashion-MNIST evaluator")
    spec = {"reference": args.reference, "split": args.split, "evaluator": args.evaluator}
    rows = run_prompt_sweep(model, args.w, args.n, sampler_settings(args),
                            preload_eval(args, device), Path(args.out), args.seed, device,
                            not args.no_progress, spec)
    print(format_rows(rows))
    print(f"wrote {args.out}/results.csv, results.md, adherence_vs_w.png, grids/")
