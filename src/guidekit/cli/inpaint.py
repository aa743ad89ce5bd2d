"""`guidekit inpaint`: fill the unknown region of an image with RePaint (Lugmayr et al. 2022)."""

from __future__ import annotations

from guidekit.cli.common import (add_data_arg, add_guidance_args, add_output_args, add_sampler_args, check_memory,
                                 command, guidance_passes, nonneg_float, nonneg_int, positive_int, sampler_settings,
                                 seed_int)
from guidekit.cli.condition import add_prompt_args
from guidekit.errors import check
from guidekit.masks import MASK_KINDS

JUMP_LENGTH = 10  # the paper's j (of its 250 DDPM steps)


def add_jump_args(p, jump_n_sample: int = 10) -> None:
    """--jump-length j and --jump-n-sample r of RePaint's resampling schedule."""
    j = p.add_mutually_exclusive_group()
    j.add_argument("--jump-length", type=positive_int("--jump-length"), default=None,
                   help=f"j: every j sampler steps, go back up j steps (RePaint's jump length; default "
                        f"{JUMP_LENGTH}, or steps // 2 with {JUMP_LENGTH} --steps or fewer)")
    j.add_argument("--jump-timesteps", type=positive_int("--jump-timesteps"), default=None, metavar="N",
                   help="the jump length in training timesteps instead (the paper's j = 10 of 250 DDPM steps is "
                        "40): j = round(N·steps/T), so a few-step sampler jumps as far back in noise as the paper")
    p.add_argument("--jump-n-sample", type=positive_int("--jump-n-sample"), default=jump_n_sample,
                   help="r: pass each jump window r times (1 = no resampling); NFE = steps + (r-1)·j·(ceil(steps/j)-1)")


def jump_length_of(args, num_timesteps: int) -> int:
    """--jump-length, or --jump-timesteps converted to sampler steps (at least 1), or the default; refused (in the
    command's flags) where it leaves no room to jump back within --steps."""
    from guidekit.sampling.repaint import jump_length_for

    if args.jump_timesteps is not None:
        j, said = jump_length_for(args.jump_timesteps, args.steps, num_timesteps), \
            f" (--jump-timesteps {args.jump_timesteps} at --steps {args.steps})"
    elif args.jump_length is not None:
        j, said = args.jump_length, ""
    else:
        j, said = (JUMP_LENGTH if args.steps > JUMP_LENGTH else max(1, args.steps // 2)), " (the default)"
    check(args.jump_n_sample == 1 or j < args.steps,
          f"--jump-length {j}{said} leaves no room to jump back within --steps {args.steps}: use a --jump-length "
          f"below {args.steps}, more --steps, or --jump-n-sample 1 (no resampling)")
    return j


INPAINT_HELP = """RePaint (Lugmayr et al. 2022): sample the unknown pixels with the model while, after every step,
the known pixels are replaced by the forward-process sample of the image at that noise level; with resampling, the
trajectory jumps back up --jump-length steps --jump-n-sample - 1 times. Mask convention: 1 / white = known (kept), 0
/ black = generated. Writes grid.png (image | mask | masked input | results), image.png, mask.png, masked.png, one
PNG per result and manifest.json (settings, NFE, masked-region L2/PSNR against the image)."""


def register(sub) -> None:
    p = command(sub, "inpaint", "inpaint masked pixels of an image (RePaint)", INPAINT_HELP)
    p.add_argument("model", help="model folder or run folder of 'guidekit train'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="FILE", help="image to inpaint (PNG/JPEG; 28x28 is padded to 32x32)")
    src.add_argument("--from-dataset", type=nonneg_int("--from-dataset"), metavar="INDEX",
                     help="inpaint image INDEX of --dataset's --split")
    p.add_argument("--dataset", default="fashion-mnist", help="dataset of --from-dataset: fashion-mnist or samples")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of --from-dataset")
    add_data_arg(p)
    p.add_argument("--mask", required=True, metavar="KIND|FILE",
                   help=f"mask type ({', '.join(MASK_KINDS)}) or a mask image: white = known, black = inpaint")
    p.add_argument("--mask-seed", type=seed_int("--mask-seed"), default=0, help="seed of random mask types")
    p.add_argument("--class", dest="class_", metavar="C", default=None,
                   help="class name or index for a class-conditional model; 'null' = ∅ (default: the dataset "
                        "image's label with --from-dataset, else null)")
    add_prompt_args(p)
    add_guidance_args(p)
    p.add_argument("--controlnet", action="append", default=[], metavar="CN",
                   help="ControlNet folder or zoo name (repeatable): its condition is extracted from the whole "
                        "image, so the completion also follows the image's edges/sketch (RePaint + ControlNet)")
    p.add_argument("--control-scale", type=nonneg_float("--control-scale"), default=1.0,
                   help="scale of the ControlNets' residuals (0 = off)")
    add_jump_args(p)
    p.add_argument("--n", type=positive_int("--n"), default=4, help="completions (seeds --seed .. --seed+n-1)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed")
    add_sampler_args(p, steps=50, batch=64)
    add_output_args(p)
    p.set_defaults(run=run)


def load_image(path: str, size: int, channels: int):
    """One (1, C, size, size) image in [−1, 1] from a file: read by guidekit.imageio (16-bit/float scaled, transparency
    on black), padded with background to a square, 28x28 padded to 32x32, else resized."""
    from pathlib import Path

    import torch

    from guidekit.data.dataset import to_resolution
    from guidekit.imageio import pad_square, read_image

    check(Path(path).exists(), f"--image {path} does not exist; give a PNG or JPEG file")
    check(Path(path).is_file(), f"--image {path} is a folder, not an image file; give a PNG or JPEG file (a folder "
                                f"of images: --dataset FOLDER --from-dataset INDEX)")
    a = pad_square(read_image(path, channels, "--image", "give a PNG or JPEG file"), f"--image {path}")
    return to_resolution(torch.from_numpy(a).permute(2, 0, 1)[None], size).float() / 127.5 - 1


def source_image(args, model):
    """(x0 of shape (1, C, H, W), its dataset label or None, a description) from --image or --from-dataset."""
    from guidekit.data import load_or_samples

    if args.image:
        return load_image(args.image, model.image_size, model.image_channels), None, args.image
    data = load_or_samples(args.dataset, split=args.split, data_dir=args.data, resolution=model.image_size,
                           channels=model.image_channels)
    i = args.from_dataset
    check(i < len(data), f"--from-dataset {i} is out of range: {data.name} has {len(data)} images (0..{len(data) - 1})")
    label = None if data.labels is None else int(data.labels[i])
    return data.images(slice(i, i + 1)), label, f"{data.name}[{i}]"


def with_controlnets(args, model, x0):
    """(model, cond): the model steered by --controlnet with hints extracted from x0 (Zhang et al. 2023)."""
    if not args.controlnet:
        return model, None
    from guidekit.checkpoints import load_controlnet
    from guidekit.pipelines import as_nets, condition_of, controlled, extract_hints, join_hints

    nets = [load_controlnet(path, model.net) for path in args.controlnet]
    hints = [extract_hints(condition_of(n), x0, seed=args.seed) for n in nets]
    return controlled(model, nets, args.control_scale), {"hint": join_hints(hints, as_nets(nets), args.n)}


def run(args) -> None:
    import torch

    from guidekit.cli.condition import request
    from guidekit.cli.output import seeds_of, start, timed, write_outputs
    from guidekit.images import grid, labelled
    from guidekit.masks import check_mask, mask_from_arg
    from guidekit.pipelines import inpaint_guided, masked_errors
    from guidekit.sampling.repaint import repaint_levels

    device, model = start(args, "inpaint")
    x0, dataset_label, source = source_image(args, model)
    req = request(args, model, device, args.class_, dataset_label, args.n)
    mask = check_mask(mask_from_arg(args.mask, x0.shape[-1], 1, torch.Generator().manual_seed(args.mask_seed)), x0)
    steered, cond = with_controlnets(args, model, x0)
    settings = sampler_settings(args)
    args.jump_length = jump_length_of(args, model.schedule.num_timesteps)
    repaint_levels(model.schedule.timesteps(settings.steps, settings.spacing), args.jump_length, args.jump_n_sample)
    check_memory(model.net, args.n, args.batch_size, device, guidance_passes(req.guidance), str(args.n))
    seeds = seeds_of(args)
    (images, nfe), elapsed = timed(lambda: inpaint_guided(
        steered, x0, mask, torch.full((args.n,), req.label), seeds, req.guidance, settings, args.jump_length,
        args.jump_n_sample, device, not args.no_progress, {**req.cond, **(cond or {})}))
    l2, psnr = masked_errors(images, x0, mask)
    masked = x0 * mask  # unknown pixels shown as mid-gray (0)
    shown = (mask * 2 - 1).expand_as(x0)  # the mask as an image of the picture's channels
    pictures = {"image.png": x0[0], "mask.png": mask[0] * 2 - 1, "masked.png": masked[0]}
    files = []
    for i, s in enumerate(seeds):
        pictures[f"{i:04d}_seed{s}.png"] = images[i]
        files.append({"file": f"{i:04d}_seed{s}.png", "seed": s, "l2": float(l2[i]), "psnr": float(psnr[i])})
    row = torch.cat([x0, shown, masked, images])
    title = (f"RePaint {args.sampler}-{args.steps} j={args.jump_length} r={args.jump_n_sample} NFE={nfe} "
             + (f"class={req.name}" if req.prompt is None else f"prompt={req.prompt!r}"))
    write_outputs(args, "inpaint", model, device, elapsed, pictures, labelled(grid(row, len(row), scale=3), title),
                  {"source": source, "mask": args.mask, "mask_seed": args.mask_seed,
                   "known_fraction": float(mask.mean()), **req.info(args), **settings.to_dict(),
                   **req.guidance.describe(), "jump_length": args.jump_length, "jump_n_sample": args.jump_n_sample,
                   "controlnets": args.controlnet, "control_scale": args.control_scale, "nfe": nfe, "seeds": seeds,
                   "l2_mean": float(l2.mean()), "psnr_mean": float(psnr.mean())}, files)
    print(f"NFE {nfe} per image ({args.sampler}, {args.steps} steps, jump_length {args.jump_length}, "
          f"jump_n_sample {args.jump_n_sample})")
    print(f"wrote {args.n} completions, grid.png and manifest.json to {args.out} "
          f"(masked-region PSNR {float(psnr.mean()):.2f} dB, {args.n / elapsed:.1f} img/s on {device})")
