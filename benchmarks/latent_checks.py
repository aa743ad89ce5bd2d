"""Two checks of a latent model trained here (`guidekit train --latent`), on its real weights:

1. diffusers' own StableDiffusionPipeline loads the exported folder and, for the same initial latents, prompts and
   DDIM steps with CFG, gives guidekit's images (max abs difference in [0, 1]);
2. RePaint on latents keeps the known pixels exactly after decoding: the largest |output − input| over the known
   pixels of n test images per mask, inpainted with their class prompts (and the mean error in the generated part).

  python benchmarks/latent_checks.py runs/fmnist-latent --n 200
"""

from __future__ import annotations

import argparse

import torch

from guidekit.diffusion import NULL
from guidekit.masks import make_mask
from guidekit.pipelines import (Guidance, SamplerSettings, class_prompt_cond, inpaint_guided, prompt_cond,
                                sample_guided)
from guidekit.sampling.noise import GivenNoise


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a latent run folder or its model/ pipeline folder")
    p.add_argument("--n", type=int, default=200, help="test images per mask")
    p.add_argument("--masks", default="half,expand", help="mask types, comma-separated")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (test split) or samples")
    p.add_argument("--data", default=None, help="folder with the IDX files")
    return p.parse_args(argv)


@torch.no_grad()
def against_diffusers(model, steps: int = 5, scale: float = 3.0) -> float:
    """Max |guidekit − StableDiffusionPipeline| of two images in [0, 1] from the same latents."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model.path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn((2, *model.sample_shape), generator=torch.Generator().manual_seed(3))
    prompts = ["a dark coat", "a pair of trousers"]
    side = model.image_size
    theirs = pipe(prompts, negative_prompt=[""] * 2, num_inference_steps=steps, guidance_scale=scale,
                  latents=x_T.clone(), height=side, width=side, output_type="pt").images
    ours = sample_guided(model, torch.full((2,), NULL), None, Guidance(w=scale - 1),
                         SamplerSettings("ddim", steps, 0.0, "trailing"), cond=prompt_cond(model, prompts),
                         noise=GivenNoise([x_T]))
    return float(((ours + 1) / 2 - theirs).abs().max())


def known_pixels(model, data, n: int, kind: str) -> dict:
    """RePaint of the first n images under mask `kind` with their class prompts at w = 2, DDIM 20, j = 2, r = 2."""
    x0, y = data.images(slice(0, n)), data.labels[:n]
    mask = make_mask(kind, model.image_size, n, torch.Generator().manual_seed(0))
    out, nfe = inpaint_guided(model, x0, mask, torch.full((n,), NULL), list(range(n)), Guidance(w=2),
                              SamplerSettings("ddim", 20), 2, 2, cond=class_prompt_cond(model, y))
    known = mask.expand_as(out).bool()
    diff = (out - x0).abs()
    return {"mask": kind, "n": n, "nfe": nfe, "known_max_abs": float(diff[known].max()),
            "generated_mean_abs": float(diff[~known].mean())}


def main(argv=None) -> dict:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vae_reconstruction import latent_model_and_data

    a = parse_args(argv)
    model, data = latent_model_and_data(a)
    r = {"diffusers_max_abs": against_diffusers(model),
         "repaint": [known_pixels(model, data, min(a.n, len(data)), k) for k in a.masks.split(",")]}
    print(f"StableDiffusionPipeline vs guidekit, same latents (DDIM 5, guidance scale 3): max |diff| "
          f"{r['diffusers_max_abs']:.2e}")
    print("| mask | n | NFE | max abs(output − input), known pixels | mean abs(output − truth), generated |")
    print("| --- | --- | --- | --- | --- |")
    for x in r["repaint"]:
        print(f"| {x['mask']} | {x['n']} | {x['nfe']} | {x['known_max_abs']:.3g} | {x['generated_mean_abs']:.3f} |")
    return r


if __name__ == "__main__":
    main()
