"""`guidekit sample`: class-conditional sampling with classifier-free guidance (Ho & Salimans 2021)."""

from __future__ import annotations

from guidekit.cli.common import (FEW_STEP, add_guidance_args, add_output_args, add_sampler_args, check_memory, command,
                                 guidance_from_args, guidance_passes, nonneg_int, positive_int, sampler_settings,
                                 seed_int)
from guidekit.errors import check


SAMPLE_HELP = """Sample from a guidekit model folder (or training run). Guidance weight in the paper's convention:
eps = (1+w)·eps(x, y) − w·eps(x, ∅); w = 0 is the plain conditional model. Writes one PNG per image, grid.png (rows =
classes, columns = seeds) and manifest.json to --out."""


def register(sub) -> None:
    p = command(sub, "sample", "sample images, with classifier-free guidance", SAMPLE_HELP)
    p.add_argument("model", help="model folder (config.json + model.safetensors), a run folder of 'guidekit train', "
                                 "or a diffusers UNet2DModel / pipeline folder")
    p.add_argument("--null-class-index", type=nonneg_int("--null-class-index"), default=None, metavar="I",
                   help="diffusers models: the class-embedding row trained as the null class ∅ (needed for CFG); "
                        "overrides guidekit.json's null_class_index")
    p.add_argument("--class", dest="classes", action="append", metavar="C",
                   help="class name, prefix or index; repeat or comma-separate; 'all' = every class; 'null' = "
                        "unconditional (∅). Default: all classes of a class-conditional model")
    p.add_argument("--prompt", dest="prompts", action="append", metavar="TEXT",
                   help="text-conditioned models (guidekit train --captions): a prompt, e.g. \"a dark pair of "
                        "trousers\"; repeat for several; \"\" = the empty prompt ∅ (unconditional)")
    p.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help="with --prompt and w > 0: replaces ∅ in eps = (1+w)·eps(x, c) − w·eps(x, c_neg)")
    add_guidance_args(p)
    p.add_argument("--n", type=positive_int("--n"), default=4, help="images per class or prompt (seeds --seed .. --seed+n-1)")
    p.add_argument("--seed", type=seed_int("--seed"), default=0, help="first seed; image (class, seed) is "
                   "reproducible whatever the batch size")
    add_sampler_args(p, **FEW_STEP)
    add_output_args(p)
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


def title(guidance) -> str:
    """Grid title: the guidance in force."""
    parts = [f"w = {guidance.w:g}"] if guidance.w or guidance.classifier is None else []
    if guidance.classifier is not None:
        parts.append(f"{'clean ' if guidance.clean else ''}classifier w = {guidance.classifier_w:g}")
    return ", ".join(parts)


def run(args) -> None:
    import torch

    from guidekit.cli.condition import check_prompt_args
    from guidekit.cli.output import seeds_of, start, timed, write_outputs
    from guidekit.cli.sample_text import run_prompts
    from guidekit.diffusion import NULL
    from guidekit.images import grid, labelled
    from guidekit.pipelines import class_names, default_w, sample_guided

    device, model = start(args, "sample", null_class_index=args.null_class_index)
    if check_prompt_args(args, model, classifier=True):
        return run_prompts(args, model, device)
    guidance = guidance_from_args(args, model, device)
    names_all = class_names(model, guidance)
    classes = parse_classes(args.classes, names_all)
    if args.w is None and args.guidance_scale is None and all(y == NULL for y in classes):
        guidance.w = default_w(model, True)  # CFG of ∅ against ∅ changes nothing: no second half
    check_memory(model.net, len(classes) * args.n, args.batch_size, device, guidance_passes(guidance),
                 f"{args.n} × {len(classes)} class(es)")
    seeds = seeds_of(args)
    labels = torch.tensor([c for c in classes for _ in seeds])
    all_seeds = [s for _ in classes for s in seeds]
    settings = sampler_settings(args)
    cond = None
    if model.takes_text:  # classifier guidance on a text model: the classifier reads the class, the model a prompt
        from guidekit.pipelines import prompt_cond

        prompt = args.prompts[0] if args.prompts else ""  # w defaults to 0 under a classifier (the policy)
        cond = prompt_cond(model, [prompt] * len(labels), args.negative_prompt)
    images, elapsed = timed(lambda: sample_guided(model, labels, all_seeds, guidance, settings, device,
                                                  not args.no_progress, cond))
    names = [("null" if y == NULL else names_all[y]) for y in classes]
    pictures, files = {}, []
    for i, (y, s) in enumerate(zip(labels.tolist(), all_seeds)):
        name = f"{i:04d}_class{'null' if y == NULL else y}_seed{s}.png"
        pictures[name] = images[i]
        files.append({"file": name, "class": y, "class_name": names[classes.index(y)], "seed": s})
    cell = (model.image_size + 2) * 3
    picture = labelled(grid(images, len(seeds), scale=3), title(guidance), names, cell)
    write_outputs(args, "sample", model, device, elapsed, pictures, picture,
                  {**settings.to_dict(), **guidance.describe(), "classes": classes, "seeds": seeds}, files)
    print(f"wrote {len(files)} images, grid.png and manifest.json to {args.out} "
          f"({len(files) / elapsed:.1f} img/s on {device})")
