"""`guidekit restore`: restore an image from a linear measurement y = A(x) + σ_y·n with DPS, MCG, DDNM(+), ΠGDM or
RePaint (inpainting, ×2/×4 super-resolution, deblurring)."""

from __future__ import annotations

import math

from guidekit.cli.common import (add_data_arg, add_guidance_args, add_output_args, add_sampler_args, check_memory,
                                 command, guidance_passes, nonneg_float, positive_float, positive_int,
                                 sampler_settings, seed_int)
from guidekit.cli.condition import add_prompt_args
from guidekit.errors import check
from guidekit.masks import MASK_KINDS

RESTORE_HELP = """Zero-shot restoration with a pretrained pixel model: the truth x (--image or --from-dataset) is
degraded to y = A(x) + σ_y·n, or y is read as given (--measurement: the low-resolution image of srF, the blurred image
of deblur, the image to inpaint), then restored by --method: repaint (the measured part follows q(x_t | A†y), any A),
dps (a gradient step on ‖y − A(x̂0)‖ after each step), mcg (that step, then RePaint's projection), ddnm (x̂0 ←
A†y + (I − A†A)x̂0; DDNM+ for --sigma-y > 0, on a DDPM or DDIM η > 0 step), pigdm (ΠGDM's pseudo-inverse guidance, a
vector-Jacobian product through the network). Guidance (--class with --w, a classifier) composes with every method.
Writes grid.png (truth | A†y | results), truth.png, measurement.png, one PNG per result and manifest.json (settings,
NFE, PSNR/L2 against the truth, the consistency RMS(y − A(x̂)))."""

QUANTIZATION = 2 / 255 / math.sqrt(12)  # the noise an 8-bit file carries, on the [-1, 1] scale


def register(sub) -> None:
    from guidekit.restoration import METHODS, TASKS

    p = command(sub, "restore", "restore an image from a degraded measurement (DPS, DDNM, ΠGDM, MCG, RePaint)",
                RESTORE_HELP)
    p.add_argument("model", help="pixel-space model folder, run folder or zoo name")
    p.add_argument("--task", required=True, choices=list(TASKS), help="the degradation A")
    p.add_argument("--method", default="ddnm", choices=list(METHODS), help="the restoration method")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="FILE", help="the clean image, degraded here (PNG/JPEG)")
    src.add_argument("--from-dataset", type=int, metavar="INDEX", help="image INDEX of --dataset's --split")
    src.add_argument("--measurement", metavar="FILE",
                     help="y itself: the low-resolution image (srF: side/F pixels), the blurred image (deblur) or "
                          "the image whose --mask region is unknown (inpaint); 8-bit files carry noise, so --sigma-y "
                          f"defaults to {QUANTIZATION:.4f} for them")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset of --from-dataset: fashion-mnist or samples")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of --from-dataset")
    add_data_arg(p)
    p.add_argument("--mask", metavar="KIND|FILE", default=None,
                   help=f"inpaint: mask type ({', '.join(MASK_KINDS)}) or image, white = known")
    p.add_argument("--mask-seed", type=seed_int("--mask-seed"), default=0, help="seed of random mask types")
    p.add_argument("--sigma-y", type=nonneg_float("--sigma-y"), default=None,
                   help="measurement noise std on the [-1, 1] scale (e.g. 0.05): added to the degraded --image, "
                        "assumed of a --measurement (default 0, or the 8-bit quantization's for --measurement)")
    p.add_argument("--noise-seed", type=seed_int("--noise-seed"), default=0, help="seed of the measurement noise")
    p.add_argument("--blur-sigma", type=positive_float("--blur-sigma"), default=None,
                   help="deblur: the Gaussian blur's std in pixels (default 1.5)")
    add_method_args(p)
    p.add_argument("--class", dest="class_", metavar="C", default=None,
                   help="class name or index for a class-conditional model; 'null' = ∅ (default: ∅)")
    add_prompt_args(p)
    add_guidance_args(p)
    p.add_argument("--jump-length", type=positive_int("--jump-length"), default=1,
                   help="j of RePaint's resampling, DDNM's time travel (with --jump-n-sample > 1)")
    p.add_argument("--jump-n-sample", type=positive_int("--jump-n-sample"), default=1,
                   help="r: pass each jump window r times (1 = none)")
    p.add_argument("--n", type=positive_int("--n"), default=4, help="restorations (seeds --seed .. --seed+n-1)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed")
    add_sampler_args(p, steps=50, batch=64)
    add_output_args(p)
    p.set_defaults(run=run)


def add_method_args(p) -> None:
    """--zeta (DPS, MCG) and --pigdm-w (ΠGDM): the methods' own settings."""
    p.add_argument("--zeta", type=positive_float("--zeta"), default=10.0,
                   help="DPS/MCG step size ζ on ∇‖y − A(x̂0)‖ (10 suits 20 steps on fmnist-cfg; docs/results.md)")
    p.add_argument("--pigdm-w", type=nonneg_float("--pigdm-w"), default=1.0, help="ΠGDM's weight (1 = the paper's)")


def measurement_of(args, model, op_for):
    """(truth or None, y of one row, the operator, σ_y, a description) from --image/--from-dataset or --measurement."""
    import torch

    from guidekit.cli.inpaint import load_image, source_image
    from guidekit.imageio import read_image

    side, c = model.image_size, model.image_channels
    if args.measurement is None:
        if args.from_dataset is not None:
            check(args.from_dataset >= 0, f"--from-dataset must be >= 0, got {args.from_dataset}")
        truth, _, source = source_image(args, model)
        op = op_for(truth)
        sigma = args.sigma_y or 0.0
        return truth, op.measure(truth, sigma, torch.Generator().manual_seed(args.noise_seed)), op, sigma, source
    sigma = QUANTIZATION if args.sigma_y is None else args.sigma_y
    path = args.measurement
    if args.task.startswith("sr"):
        f = int(args.task[2:])
        check(side % f == 0, f"the model's {side}×{side} images are not divisible by ×{f}")
        from pathlib import Path

        check(Path(path).is_file(), f"--measurement {path} does not exist; give a PNG or JPEG file")
        a = read_image(path, c, "--measurement", "give a PNG or JPEG file")
        check(a.shape[0] == a.shape[1] == side // f,
              f"--measurement {path} is {a.shape[1]}×{a.shape[0]}, but {args.task} of this {side}×{side} model "
              f"measures {side // f}×{side // f} images; resize it to {side // f}×{side // f}, or give the clean image "
              f"with --image")
        y = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
        return None, y, op_for(None), sigma, path
    x = load_image(path, side, c)
    op = op_for(x)
    return None, (op(x) if args.task == "inpaint" else x), op, sigma, path


def run(args) -> None:
    import torch

    from guidekit.cli.condition import request
    from guidekit.cli.output import seeds_of, start, timed, write_outputs
    from guidekit.images import grid, labelled
    from guidekit.masks import check_mask, mask_from_arg
    from guidekit.pipelines import check_restorable, restoration_errors, restore_guided
    from guidekit.restoration import GaussianBlur, Method, make_operator

    check(args.task == "inpaint" or args.mask is None, f"--mask is for --task inpaint, not {args.task}")
    check(args.task != "inpaint" or args.mask is not None, "--task inpaint needs --mask KIND|FILE (white = known)")
    check(args.task == "deblur" or args.blur_sigma is None, f"--blur-sigma is for --task deblur, not {args.task}")
    check(args.method in ("dps", "mcg") or args.zeta == 10.0, f"--zeta is DPS/MCG's step size, not {args.method}'s")
    device, model = start(args, "restore")
    check_restorable(model)
    req = request(args, model, device, args.class_, None, args.n)
    settings = sampler_settings(args)

    def op_for(x):
        if args.task == "inpaint":
            side = model.image_size
            mask = mask_from_arg(args.mask, side, 1, torch.Generator().manual_seed(args.mask_seed))
            return make_operator("inpaint", check_mask(mask, torch.zeros(1, 1, side, side)))
        return GaussianBlur(args.blur_sigma) if args.task == "deblur" and args.blur_sigma else make_operator(args.task)

    truth, y, op, sigma, source = measurement_of(args, model, op_for)
    check_memory(model.net, args.n, args.batch_size, device, guidance_passes(req.guidance) * 3, str(args.n))
    method = Method(args.method, args.zeta, args.pigdm_w)
    seeds, stats = seeds_of(args), {}
    images, elapsed = timed(lambda: restore_guided(
        model, y.expand(args.n, *y.shape[1:]), op, method, torch.full((args.n,), req.label), seeds, req.guidance,
        settings, sigma, args.jump_length, args.jump_n_sample, device, not args.no_progress, stats=stats))
    ys = y.expand(args.n, *y.shape[1:])
    errors = restoration_errors(images, truth.expand_as(images) if truth is not None else images, op, ys)
    shown = op.show(y).clamp(-1, 1)
    pictures = {"measurement.png": y[0].clamp(-1, 1)}
    if truth is not None:
        pictures = {"truth.png": truth[0], **pictures}
    files = []
    for i, s in enumerate(seeds):
        pictures[f"{i:04d}_seed{s}.png"] = images[i]
        entry = {"file": f"{i:04d}_seed{s}.png", "seed": s, "consistency": float(errors["consistency"][i])}
        if truth is not None:
            entry.update(psnr=float(errors["psnr"][i]), l2=float(errors["l2"][i]))
        files.append(entry)
    row = torch.cat([*([truth] if truth is not None else []), shown, images])
    title = f"{args.method} {args.task} sigma_y={sigma:g} {args.sampler}-{args.steps} NFE={stats['nfe']:g} class={req.name}"
    summary = {"psnr_mean": float(errors["psnr"].mean()), "l2_mean": float(errors["l2"].mean())} \
        if truth is not None else {}
    write_outputs(args, "restore", model, device, elapsed, pictures, labelled(grid(row, len(row), scale=3), title),
                  {"source": source, "task": args.task, "mask": args.mask, "sigma_y": sigma, **method.describe(),
                   **req.info(args), **settings.to_dict(), **req.guidance.describe(),
                   "jump_length": args.jump_length, "jump_n_sample": args.jump_n_sample, "nfe": stats["nfe"],
                   "seeds": seeds, "consistency_mean": float(errors["consistency"].mean()), **summary}, files)
    print(f"NFE {stats['nfe']:g} per image ({args.method}, {args.sampler} {args.steps} steps)")
    said = f"PSNR {summary['psnr_mean']:.2f} dB against the truth, " if truth is not None else ""
    print(f"wrote {args.n} restorations, grid.png and manifest.json to {args.out} ({said}consistency "
          f"{float(errors['consistency'].mean()):.4f}, {args.n / elapsed:.1f} img/s on {device})")
