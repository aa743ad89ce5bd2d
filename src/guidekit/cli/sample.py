"""`guidekit sample`: class-conditional sampling with classifier-free guidance (Ho & Salimans 2021)."""

from __future__ import annotations

import argparse
import json
import time

from guidekit.cli.common import add_device, nonneg_float, nonneg_int, pick_device, positive_int
from guidekit.errors import check


def register(sub) -> None:
    p = sub.add_parser("sample", help="sample images, with classifier-free guidance",
                       description="Sample from a guidekit model folder (or training run). Guidance weight in the "
                                   "paper's convention: eps = (1+w)·eps(x, y) − w·eps(x, ∅); w = 0 is the plain "
                                   "conditional model. Writes one PNG per image, grid.png (rows = classes, columns "
                                   "= seeds) and manifest.json to --out.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder (config.json + model.safetensors) or a run folder of 'guidekit train'")
    p.add_argument("--class", dest="classes", action="append", metavar="C",
                   help="class name, prefix or index; repeat or comma-separate; 'all' = every class; 'null' = "
                        "unconditional (∅). Default: all classes of a class-conditional model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--w", type=nonneg_float("--w"), default=None,
                   help="guidance weight w >= 0 (default 1.0 for class-conditional models, 0 otherwise)")
    g.add_argument("--guidance-scale", type=float, default=None, metavar="S",
                   help="alias in the diffusers/Imagen convention: S = 1 + w (S >= 1)")
    p.add_argument("--n", type=positive_int("--n"), default=4, help="images per class (seeds --seed .. --seed+n-1)")
    p.add_argument("--seed", type=nonneg_int("--seed"), default=0, help="first seed; image (class, seed) is "
                   "reproducible whatever the batch size")
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpmpp-2m"], help="sampler")
    p.add_argument("--steps", type=positive_int("--steps"), default=50, help="model evaluations per image (per half)")
    p.add_argument("--eta", type=nonneg_float("--eta"), default=0.0, help="DDIM η (0 deterministic, 1 DDPM-like)")
    p.add_argument("--spacing", default="trailing", choices=["trailing", "leading", "linspace"],
                   help="how the steps are spread over the T training timesteps")
    p.add_argument("--no-clip", action="store_true", help="do not clamp the predicted x0 to [-1, 1]")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="images per forward")
    p.add_argument("--out", required=True, help="output folder (created; see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device(p)
    p.set_defaults(run=run)


def parse_classes(values: list[str] | None, class_names: list[str] | None) -> list[int]:
    """--class values to label indices; -1 (NULL) for 'null'."""
    from guidekit.data import class_index
    from guidekit.diffusion import NULL

    items = [v.strip() for val in (values or []) for v in val.split(",") if v.strip()]
    if not class_names:
        check(all(v.lower() == "null" for v in items),
              f"--class {','.join(items)}: this model is unconditional; drop --class")
        return [NULL]
    if not items or items == ["all"]:
        return list(range(len(class_names)))
    return [NULL if v.lower() == "null" else class_index(class_names, v) for v in items]


def resolve_w(args) -> float | None:
    from guidekit.guidance import guidance_scale_to_w

    if args.guidance_scale is not None:
        return guidance_scale_to_w(args.guidance_scale)
    return args.w  # None: the model decides (1.0 if class-conditional, else 0)


def run(args) -> None:
    import torch

    from guidekit.diffusion import NULL
    from guidekit.experiments.generation import SamplerSettings, sample_cfg
    from guidekit.images import grid, labelled, save_png, to_pil
    from guidekit.io import atomic_folder, check_output
    from guidekit.training import load_model

    check_output(args.out, args.overwrite)
    w = resolve_w(args)
    device = pick_device(args.device)
    model = load_model(args.model, device)
    classes = parse_classes(args.classes, model.class_names)
    w = (1.0 if model.net.config.num_classes > 0 else 0.0) if w is None else w
    seeds = list(range(args.seed, args.seed + args.n))
    labels = torch.tensor([c for c in classes for _ in seeds])
    all_seeds = [s for _ in classes for s in seeds]
    settings = SamplerSettings(args.sampler, args.steps, args.eta, args.spacing, not args.no_clip, args.batch_size)
    start = time.time()
    images = sample_cfg(model, labels, all_seeds, w, settings, device, progress=not args.no_progress)
    elapsed = time.time() - start
    c = model.net.config
    names = [("null" if y == NULL else model.class_names[y]) for y in classes]
    files = []
    with atomic_folder(args.out, overwrite=args.overwrite) as tmp:
        for i, (y, s) in enumerate(zip(labels.tolist(), all_seeds)):
            name = f"{i:04d}_class{'null' if y == NULL else y}_seed{s}.png"
            save_png(to_pil(images[i]), tmp / name)
            files.append({"file": name, "class": y, "class_name": names[classes.index(y)], "seed": s})
        cell = (c.image_size + 2) * 3
        save_png(labelled(grid(images, len(seeds), scale=3), f"w = {w:g}", names, cell), tmp / "grid.png")
        manifest = {"model": str(model.path), **settings.to_dict(), "w": w, "classes": classes,
                    "seeds": seeds, "device": str(device), "seconds": round(elapsed, 3),
                    "images_per_second": round(len(all_seeds) / elapsed, 3), "images": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(files)} images, grid.png and manifest.json to {args.out} "
          f"({len(files) / elapsed:.1f} img/s on {device})")
