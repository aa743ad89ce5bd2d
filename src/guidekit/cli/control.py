"""`guidekit control`: sample a model steered by ControlNets (Zhang et al. 2023) from a condition image."""

from __future__ import annotations

from guidekit.cli.common import (FEW_STEP, add_data_arg, add_guidance_args, add_output_args, add_sampler_args,
                                 check_memory, command, guidance_passes, nonneg_int, number_list, positive_int,
                                 sampler_settings, seed_int)
from guidekit.cli.condition import add_prompt_args
from guidekit.errors import check


CONTROL_HELP = """Sample MODEL steered by one or more ControlNets (Zhang et al. 2023). The hint is either your own
condition image (--condition-image: white strokes/regions on black, as the hints the ControlNet was trained on) or
extracted with each ControlNet's own condition from a test image (--condition-from). Writes grid.png (condition |
outputs), one PNG per image, the hints and manifest.json to --out."""


def register(sub) -> None:
    p = command(sub, "control", "sample with ControlNets from a condition image", CONTROL_HELP)
    p.add_argument("model", help="base model folder or run folder of 'guidekit train'")
    p.add_argument("--controlnet", action="append", required=True, metavar="PATH",
                   help="ControlNet folder or run folder of 'guidekit train-controlnet'; repeat for several "
                        "(their residuals are summed)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--condition-image", nargs="+", metavar="FILE",
                     help="hint image(s): one shared by every ControlNet, or one per --controlnet in order")
    src.add_argument("--condition-from", type=nonneg_int("--condition-from"), metavar="INDEX",
                     help="index of a test image of --dataset; each ControlNet's hint is extracted from it")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="images of --condition-from: fashion-mnist (test split), samples (the embedded set), or a "
                        "folder")
    add_data_arg(p)
    p.add_argument("--class", dest="class_", metavar="C", default=None,
                   help="class name, prefix or index, or 'null' (∅). Default: the source image's class with "
                        "--condition-from, null with --condition-image")
    add_prompt_args(p)  # on a text base the prompt reaches the base and every ControlNet's copy
    add_guidance_args(p)
    p.add_argument("--control-scale", type=number_list("--control-scale", example="1"), default=[1.0], metavar="S",
                   help="residual scale: one value, or comma-separated, one per ControlNet (0 = no control)")
    p.add_argument("--control-start", type=number_list("--control-start", example="0"), default=[0.0], metavar="F",
                   help="trajectory fraction where control starts (0 = pure noise); one or one per ControlNet")
    p.add_argument("--control-end", type=number_list("--control-end", example="1"), default=[1.0], metavar="F",
                   help="trajectory fraction where control ends (1 = clean image); one or one per ControlNet")
    p.add_argument("--hint-cond-only", action="store_true",
                   help="give the hint only to the conditional half of CFG (the ∅ half runs uncontrolled)")
    p.add_argument("--n", type=positive_int("--n"), default=8, help="images (seeds --seed .. --seed+n-1)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0,
                   help="first seed; also seeds the hint extraction (sketch jitter)")
    add_sampler_args(p, **FEW_STEP)
    add_output_args(p)
    p.set_defaults(run=run)


def per_net(values: list[float], k: int, flag: str) -> list[float]:
    """One value per ControlNet from one value or k of them."""
    check(len(values) in (1, k), f"{flag} has {len(values)} values ({','.join(f'{v:g}' for v in values)}) for {k} "
                                 f"ControlNet(s); give one value, or one per --controlnet")
    return values * k if len(values) == 1 else list(values)


def hints_from_files(files: list[str], nets: list, size: int) -> list:
    """One hint per ControlNet from the user's condition images (one shared, or one each)."""
    from guidekit.conditions import load_condition_image

    k = len(nets)
    check(len(files) in (1, k), f"--condition-image got {len(files)} files for {k} ControlNet(s); give one file for "
                                f"all, or one per --controlnet")
    files = files * k if len(files) == 1 else files
    from guidekit.pipelines.control import hint_shape

    return [load_condition_image(f, size=size, channels=hint_shape(n.net, size)[0]) for f, n in zip(files, nets)]


def source_image(args, model):
    """(image (1, C, H, W) in [-1, 1], its label or None, dataset name) of --condition-from."""
    from guidekit.data import load_or_samples

    data = load_or_samples(args.dataset, split="test", data_dir=args.data, resolution=model.image_size,
                           channels=model.image_channels)
    i = args.condition_from
    check(i < len(data), f"--condition-from {i} is out of range: {data.name} has {len(data)} images "
                         f"(use 0..{len(data) - 1})")
    label = int(data.labels[i]) if data.labels is not None else None
    if label is not None and model.class_names and data.class_names != model.class_names:
        label = None  # another label set than the model's: the image's class means nothing to it
    return data.images(slice(i, i + 1)), label, data.name


def run(args) -> None:
    import torch

    from guidekit.checkpoints import load_controlnet
    from guidekit.cli.condition import request
    from guidekit.cli.output import seeds_of, start, timed, write_outputs
    from guidekit.diffusion import NULL
    from guidekit.images import labelled
    from guidekit.pipelines import condition_of, control_samples, controlled, extract_hints, hint_image

    device, model = start(args, "control")
    nets = [load_controlnet(path, model.net) for path in args.controlnet]
    k = len(nets)
    scale = per_net(args.control_scale, k, "--control-scale")
    begin = per_net(args.control_start, k, "--control-start")
    end = per_net(args.control_end, k, "--control-end")
    check(all(s >= 0 for s in scale), f"--control-scale must be >= 0, got {args.control_scale}")
    controlled(model, nets, scale, begin, end, not args.hint_cond_only)  # validate before any work
    source, source_label, source_info = None, None, {}
    if args.condition_from is not None:
        source, source_label, name = source_image(args, model)
        hints = [extract_hints(condition_of(n), source, args.seed) for n in nets]
        source_info = {"condition_from": args.condition_from, "dataset": name, "source_label": source_label}
    else:
        hints = hints_from_files(args.condition_image, nets, model.image_size)
        source_info = {"condition_images": [str(f) for f in args.condition_image]}
    req = request(args, model, device, args.class_, source_label, args.n)
    check(req.prompt is None or not args.hint_cond_only, "--hint-cond-only needs a class-conditional base: a text "
                                                         "model's ∅ half (the empty or negative prompt) cannot be "
                                                         "told apart from a prompt; drop it")
    check(not (args.hint_cond_only and req.label == NULL), "--hint-cond-only gives the hint only to the conditional "
                                                           "half, and the class is null (∅), so nothing would be "
                                                           "controlled; pass --class or drop --hint-cond-only")
    check_memory(model.net, args.n, args.batch_size, device, guidance_passes(req.guidance) * (1 + len(nets)),
                 str(args.n))
    seeds, settings = seeds_of(args), sampler_settings(args)
    images, elapsed = timed(lambda: control_samples(
        model, nets, hints, torch.full((args.n,), req.label), seeds, scale, settings, device, req.guidance, begin,
        end, not args.hint_cond_only, not args.no_progress, cond=req.cond))
    lead = ([source[0]] if source is not None else []) + [hint_image(h[0], model.image_channels) for h in hints]
    heads = (["source"] if source is not None else []) + [n.condition for n in nets]
    pictures = {"source.png": source[0]} if source is not None else {}
    hint_files = [f"hint{i}_{n.condition}.png" for i, n in enumerate(nets)]
    for f, h in zip(hint_files, hints):
        pictures[f] = hint_image(h[0], h.shape[1] if h.shape[1] in (1, 3) else 1)
    files = []
    for i, s in enumerate(seeds):
        pictures[f"{i:04d}_seed{s}.png"] = images[i]
        files.append({"file": f"{i:04d}_seed{s}.png", "seed": s})
    what = f"class {req.name}" if req.prompt is None else f"prompt {req.prompt!r}"
    title = (f"{' | '.join(heads)} | {args.n} seed(s); {what}, scale {','.join(f'{v:g}' for v in scale)}, "
             f"w = {req.guidance.w:g}")
    write_outputs(args, "control", model, device, elapsed, pictures, labelled(control_grid(lead, images), title),
                  {"controlnets": [{"path": str(n.path), "condition": n.condition, "control_scale": s,
                                    "control_start": a, "control_end": b, "hint_file": f}
                                   for n, s, a, b, f in zip(nets, scale, begin, end, hint_files)],
                   "hint_uncond": not args.hint_cond_only, **source_info, **req.info(args),
                   **req.guidance.describe(), **settings.to_dict(), "seeds": seeds}, files)
    print(f"wrote {args.n} images, grid.png and manifest.json to {args.out} ({args.n / elapsed:.1f} img/s on {device})")


def control_grid(lead: list, images, per_row: int = 8):
    """condition cells, then the outputs, per_row of them a row (later rows start with blank cells)."""
    import torch

    from guidekit.images import grid

    rows, blank = [], torch.ones_like(images[0])
    for r in range(0, len(images), per_row):
        chunk = list(images[r:r + per_row].clamp(-1, 1))
        chunk += [blank] * (min(per_row, len(images)) - len(chunk))
        rows += (lead if r == 0 else [blank] * len(lead)) + chunk
    return grid(torch.stack(rows), len(lead) + min(per_row, len(images)), scale=3)
