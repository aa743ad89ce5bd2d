"""`guidekit sample --prompt`: text-prompted classifier-free guidance (Ho & Salimans 2021) with negative prompts."""

from __future__ import annotations


def run_prompts(args, model, device) -> None:
    """Sample --n seeds per prompt; write PNGs, grid.png (rows = prompts) and manifest.json."""
    import torch

    from guidekit.cli.common import check_memory, guidance_from_args, guidance_passes, sampler_settings
    from guidekit.cli.condition import check_negative
    from guidekit.cli.output import seeds_of, timed, write_outputs
    from guidekit.diffusion import NULL
    from guidekit.images import grid, labelled
    from guidekit.pipelines import prompt_cond, sample_guided
    from guidekit.text.captions import parse_prompt
    from guidekit.text.encoder import normalize_prompt

    prompts = [normalize_prompt(p) for p in args.prompts]
    guidance = guidance_from_args(args, model, device, unconditional=all(p == "" for p in prompts))
    check_negative(args, guidance)
    check_memory(model.net, len(prompts) * args.n, args.batch_size, device, guidance_passes(guidance),
                 f"{args.n} × {len(prompts)} prompt(s)")
    seeds = seeds_of(args)
    per_image = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    cond = prompt_cond(model, per_image, args.negative_prompt)
    settings = sampler_settings(args)
    images, elapsed = timed(lambda: sample_guided(model, torch.full((len(per_image),), NULL), all_seeds, guidance,
                                                  settings, device, not args.no_progress, cond=cond))
    classes = [parse_prompt(p)[0] for p in prompts]
    pictures, files = {}, []
    for i, (p, s) in enumerate(zip(per_image, all_seeds)):
        k, c = prompts.index(p), classes[prompts.index(p)]
        name = f"{i:04d}_prompt{k}_seed{s}.png"
        pictures[name] = images[i]
        files.append({"file": name, "prompt": p, "class": NULL if c is None else c,
                      "class_name": None if c is None or not model.class_names else model.class_names[c], "seed": s})
    size = model.image_size
    title = f"w = {guidance.w:g}" + (f", negative: {args.negative_prompt!r}" if args.negative_prompt else "")
    picture = labelled(grid(images, len(seeds), scale=3), title, [p or '"" (∅)' for p in prompts], (size + 2) * 3,
                       margin=230, max_chars=40)
    write_outputs(args, "sample", model, device, elapsed, pictures, picture,
                  {**settings.to_dict(), **guidance.describe(), "prompts": prompts,
                   "negative_prompt": args.negative_prompt, "seeds": seeds}, files)
    print(f"wrote {len(files)} images, grid.png and manifest.json to {args.out} "
          f"({len(files) / elapsed:.1f} img/s on {device})")
