"""`guidekit edit`: SDEdit (Meng et al. 2022) — noise a guide (a drawing or a stroke painting) to t0, then denoise."""

from __future__ import annotations

import argparse

from guidekit.cli.common import (add_data_arg, add_guidance_args, add_output_args, add_sampler_args, check_memory,
                                 command, guidance_passes, nonneg_int, positive_int, sampler_settings, seed_int)
from guidekit.cli.condition import add_prompt_args
from guidekit.errors import check


def t0_value(text: str) -> float:
    """argparse type for --t0: a noise level in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--t0 must be a number in (0, 1], got {text!r}")
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"--t0 must lie in (0, 1] (small = faithful to the guide, 1 = start from "
                                         f"pure noise), got {text}; try 0.5")
    return v


def add_stroke_args(p: argparse.ArgumentParser) -> None:
    """--stroke-levels: how many flat grey levels a stroke painting keeps."""
    p.add_argument("--stroke-levels", type=positive_int("--stroke-levels"), default=5,
                   help="flat grey levels of a stroke painting (guidekit.guides.stroke_painting)")


EDIT_HELP = """SDEdit (Meng et al. 2022): x_t0 = √ᾱ·guide + √(1−ᾱ)·n at the noise level t0 (timestep t0·T − 1; 1 =
pure noise), then denoise with the sampler; --repeats K repeats the noise-then-denoise from the last output. --mask
keeps its known (white / 1) pixels exactly equal to the guide. Writes grid.png (guide | outputs), guide.png, one PNG
per output and manifest.json to --out."""


def register(sub) -> None:
    p = command(sub, "edit", "SDEdit: turn a drawing or stroke painting into a realistic image", EDIT_HELP)
    p.add_argument("model", help="model folder or run folder of 'guidekit train'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--guide", metavar="FILE", help="the guide: a drawing (PNG etc.; gray, RGB or transparent = "
                                                     "black), light garment on black like Fashion-MNIST")
    src.add_argument("--stroke-from", metavar="INDEX", type=nonneg_int("--stroke-from"),
                     help="index of a --dataset test image turned into a stroke painting (the paper's input)")
    p.add_argument("--invert", action="store_true", help="invert --guide (a dark drawing on white paper)")
    add_stroke_args(p)
    p.add_argument("--dataset", default="fashion-mnist", help="data set of --stroke-from: fashion-mnist | samples")
    add_data_arg(p)
    p.add_argument("--t0", type=t0_value, default=0.5, help="noise level in (0, 1]: realism grows, faithfulness "
                                                            "falls with t0")
    p.add_argument("--repeats", type=positive_int("--repeats"), default=1, help="K noise-then-denoise rounds")
    p.add_argument("--mask", metavar="KIND|FILE", default=None,
                   help="known region kept exactly: a mask image (white = keep the guide) or a kind of "
                        "guidekit.masks (wide, narrow, every-second-line, half, expand, sr2; drawn from --seed)")
    p.add_argument("--class", dest="cls", metavar="C", default=None,
                   help="class name, prefix or index for a class-conditional model; 'null' = ∅. Default: the "
                        "image's class with --stroke-from, else ∅")
    add_prompt_args(p)
    add_guidance_args(p)
    p.add_argument("--n", type=positive_int("--n"), default=4, help="outputs (seeds --seed .. --seed+n-1)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed")
    add_sampler_args(p)
    add_output_args(p)
    p.set_defaults(run=run)


def read_guide(args, model):
    """(guide (1, C, H, W) in [−1, 1], its dataset label or None, a description) from --guide / --stroke-from."""
    from guidekit.data import load_or_samples
    from guidekit.guides import load_guide, stroke_painting

    if args.guide:
        guide = load_guide(args.guide, model.image_size, args.invert)
        return guide.expand(-1, model.image_channels, -1, -1), None, {"guide": str(args.guide), "invert": args.invert}
    check(not args.invert, "--invert applies to a --guide drawing, not to --stroke-from")
    data = load_or_samples(args.dataset, split="test", data_dir=args.data, resolution=model.image_size,
                           channels=model.image_channels)
    check(args.stroke_from < len(data), f"--stroke-from {args.stroke_from} is out of range: {data.name} has "
                                        f"{len(data)} images (0..{len(data) - 1})")
    label = None if data.labels is None else int(data.labels[args.stroke_from])
    guide = stroke_painting(data.images([args.stroke_from]), args.stroke_levels)
    return guide, label, {"stroke_from": args.stroke_from, "dataset": data.name, "stroke_levels": args.stroke_levels,
                          "label": label}


def run(args) -> None:
    import torch

    from guidekit.cli.condition import request
    from guidekit.cli.output import seeds_of, start, timed, write_outputs
    from guidekit.images import grid, labelled
    from guidekit.masks import check_mask, mask_from_arg
    from guidekit.pipelines import edit_guided, faithfulness

    device, model = start(args, "edit")
    guide, label, source = read_guide(args, model)
    req = request(args, model, device, args.cls, label, args.n)
    mask = None
    if args.mask:
        mask = check_mask(mask_from_arg(args.mask, model.image_size, 1,
                                        torch.Generator().manual_seed(args.seed)), guide)
    check_memory(model.net, args.n, args.batch_size, device, guidance_passes(req.guidance), str(args.n))
    seeds, settings = seeds_of(args), sampler_settings(args)
    images, elapsed = timed(lambda: edit_guided(model, guide, torch.full((args.n,), req.label), seeds, args.t0,
                                                req.guidance, settings, args.repeats, mask, device,
                                                not args.no_progress, req.cond))
    pictures = {"guide.png": guide[0], **({"mask.png": mask[0] * 2 - 1} if mask is not None else {})}
    files = []
    for i, s in enumerate(seeds):
        pictures[f"{i:04d}_seed{s}.png"] = images[i]
        files.append({"file": f"{i:04d}_seed{s}.png", "seed": s, **faithfulness(images[i:i + 1], guide)})
    title = f"SDEdit t0 = {args.t0:g}" + (f", K = {args.repeats}" if args.repeats > 1 else "") + \
        (f", class {req.name}" if req.prompt is None else f", prompt {req.prompt!r}") + \
        (f", w = {req.guidance.w:g}" if req.guidance.w else "")
    cells = torch.cat([guide, images])
    write_outputs(args, "edit", model, device, elapsed, pictures, labelled(grid(cells, len(cells), scale=3), title),
                  {"method": "sdedit", "t0": args.t0, "start_timestep": model.schedule.t_from_fraction(args.t0),
                   "repeats": args.repeats, **source, "mask": args.mask, **req.info(args), **settings.to_dict(),
                   **req.guidance.describe(), "seeds": seeds}, files)
    print(f"wrote {len(files)} edits, guide.png, grid.png and manifest.json to {args.out} "
          f"({elapsed:.1f} s on {device})")
