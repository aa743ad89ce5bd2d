"""`guidekit sample --prompt`: text-prompted classifier-free guidance (Ho & Salimans 2021) with negative prompts."""

from __future__ import annotations

import dataclasses
import json
import time

from guidekit.errors import check


def check_prompt_args(args, model, prompts: bool | None = None, classes: bool | None = None) -> bool:
    """True when this is a prompt run; refuses prompts for label models, labels for text models, and the like.
    prompts / classes: whether --prompt / --class were given (default: args.prompts / args.classes)."""
    texted = model.takes_text
    prompts = args.prompts is not None if prompts is None else prompts
    classes = bool(args.classes) if classes is None else classes
    check(not prompts or texted, f"--prompt: {args.model} takes no text prompt (it was trained on class labels or "
                                 f"unconditionally); use --class, or a model trained with 'guidekit train --captions'")
    check(args.negative_prompt is None or prompts, "--negative-prompt needs --prompt (and a text-conditioned model)")
    if not texted:
        return False
    check(not classes, f"--class: {args.model} is text-conditioned; describe the image with --prompt instead, "
                            f"e.g. --prompt \"a dark pair of trousers\"")
    check(prompts, f"{args.model} is text-conditioned: give --prompt \"...\" (repeatable; --prompt \"\" samples "
                   f"unconditionally)")
    check(not (args.classifier or args.clean_classifier or args.base_null),
          "--classifier / --clean-classifier / --base-null need class labels; a text-conditioned model is guided "
          "with --w (and --negative-prompt)")
    return True


def add_prompt_args(p) -> None:
    """--prompt / --negative-prompt for one prompt shared by every output (edit, inpaint, control)."""
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="a text-conditioned model (guidekit train --captions): the prompt of every output; \"\" = "
                        "the empty prompt ∅")
    p.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help="with --prompt and w > 0: replaces ∅ in eps = (1+w)·eps(x, c) − w·eps(x, c_neg)")


def one_prompt(args, model, class_given: bool, n: int) -> tuple[str | None, dict]:
    """(the normalized --prompt, its cond {"text"[, "text_negative"]} with n rows) on a text-conditioned model, else
    (None, {}); refuses a prompt for a label model and a class for a text model (check_prompt_args)."""
    if not check_prompt_args(args, model, prompts=args.prompt is not None, classes=class_given):
        return None, {}
    from guidekit.experiments.generation import prompt_cond
    from guidekit.text.encoder import normalize_prompt

    prompt = normalize_prompt(args.prompt)
    negative = None if args.negative_prompt is None else normalize_prompt(args.negative_prompt)
    return prompt, {k: v.repeat(n, 1) for k, v in prompt_cond(model, [prompt], negative).items()}


def condition_info(args, prompt: str | None, label: int, name: str) -> dict:
    """What a manifest records of the condition: the class, or on a text model the prompt and negative prompt."""
    if prompt is None:
        return {"class": label, "class_name": name}
    return {"prompt": prompt, "negative_prompt": args.negative_prompt}


def check_negative(args, guidance) -> None:
    """A negative prompt needs w > 0: it only replaces ∅ in the CFG difference."""
    check(args.negative_prompt is None or guidance.w > 0,
          f"--negative-prompt replaces ∅ in the CFG difference, which w = {guidance.w:g} does not use; give --w > 0")


def run_prompts(args, model, device) -> None:
    """Sample --n seeds per prompt; write PNGs, grid.png (rows = prompts) and manifest.json."""
    import torch

    from guidekit.cli.common import check_memory, guidance_passes, memory_guard, sampler_settings
    from guidekit.cli.common import guidance_from_args
    from guidekit.diffusion import NULL
    from guidekit.experiments.generation import prompt_cond, sample_guided
    from guidekit.images import grid, labelled, save_png, to_pil
    from guidekit.io import atomic_folder
    from guidekit.text.captions import parse_prompt
    from guidekit.text.encoder import normalize_prompt

    guidance = guidance_from_args(args, model, device)
    check_negative(args, guidance)
    prompts = [normalize_prompt(p) for p in args.prompts]
    check_memory(model.net, len(prompts) * args.n, args.batch_size, device, guidance_passes(guidance),
                 f"{args.n} × {len(prompts)} prompt(s)")
    seeds = list(range(args.seed, args.seed + args.n))
    per_image = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    cond = prompt_cond(model, per_image, args.negative_prompt)
    labels = torch.full((len(per_image),), NULL)
    settings = sampler_settings(args)
    start = time.time()
    with memory_guard("--batch-size"):
        images = sample_guided(model, labels, all_seeds, guidance, settings, device, not args.no_progress, cond=cond)
    elapsed = time.time() - start
    classes = [parse_prompt(p)[0] for p in prompts]
    files = []
    with atomic_folder(args.out, overwrite=args.overwrite) as tmp:
        for i, (p, s) in enumerate(zip(per_image, all_seeds)):
            k = prompts.index(p)
            name = f"{i:04d}_prompt{k}_seed{s}.png"
            save_png(to_pil(images[i]), tmp / name)
            c = classes[k]
            files.append({"file": name, "prompt": p, "class": NULL if c is None else c,
                          "class_name": None if c is None or not model.class_names else model.class_names[c],
                          "seed": s})
        size = model.net.config.image_size
        title = f"w = {guidance.w:g}" + (f", negative: {args.negative_prompt!r}" if args.negative_prompt else "")
        save_png(labelled(grid(images, len(seeds), scale=3), title, [p or '"" (∅)' for p in prompts],
                          (size + 2) * 3, margin=230, max_chars=40), tmp / "grid.png")
        manifest = {"command": "sample", "model": str(model.path), **settings.to_dict(), **guidance.describe(),
                    "prompts": prompts,
                    "negative_prompt": args.negative_prompt, "seeds": seeds, "device": str(device),
                    "fast": dataclasses.asdict(model.fast) if model.fast else None, "seconds": round(elapsed, 3),
                    "images_per_second": round(len(all_seeds) / elapsed, 3), "images": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(files)} images, grid.png and manifest.json to {args.out} "
          f"({len(files) / elapsed:.1f} img/s on {device})")
