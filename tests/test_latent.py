"""Latent text-to-image models (Rombach et al. 2022): local Stable-Diffusion-class pipeline folders on the one loop,
equal to diffusers' own pipelines for the same noise (tiny random parts built in tests/sd_tiny.py, nothing
downloaded)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from sd_tiny import tiny_pipeline  # noqa: E402

from guidekit import GuidekitError  # noqa: E402
from guidekit.checkpoints import load_model  # noqa: E402
from guidekit.diffusion import NULL  # noqa: E402
from guidekit.pipelines import Guidance, SamplerSettings, prompt_cond, sample_guided  # noqa: E402
from guidekit.sampling.noise import GivenNoise  # noqa: E402

RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(diffusers pipeline, its saved folder, guidekit's LoadedModel of that folder)."""
    pipe, folder = tiny_pipeline(tmp_path_factory.mktemp("sd"))
    return pipe, folder, load_model(folder)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float32 rounding: max |a − b| ≤ RTOL of max |b|."""
    return float((a - b).abs().max()) <= RTOL * max(float(b.abs().max()), 1.0)


def test_a_pipeline_folder_loads_as_a_latent_text_model(tiny):
    _, folder, model = tiny
    assert model.takes_text and model.latent is not None and model.prompts is not None
    assert model.sample_shape == (4, 8, 8) and model.image_size == 16 and model.image_channels == 3
    emb = prompt_cond(model, ["a red bag"], None)
    assert emb["text"].shape == (1, 16, 32) and emb["text_negative"].shape == (1, 16, 32)  # ∅ = "" always given


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_text_to_image_with_cfg_and_a_negative_prompt_equals_stable_diffusion_pipeline(tiny, w):
    pipe, _, model = tiny
    x_T = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    prompts, negative = ["a red bag", "a photo of a blue shoe"], "blurry"
    theirs = pipe(prompts, negative_prompt=[negative] * 2, num_inference_steps=5, guidance_scale=1 + w,
                  latents=x_T.clone(), output_type="pt").images
    ours = sample_guided(model, torch.full((2,), NULL), None, Guidance(w=w), SamplerSettings("ddim", 5, 0.0, "trailing"),
                         cond=prompt_cond(model, prompts, negative), noise=GivenNoise([x_T]))
    assert ours.shape == (2, 3, 16, 16)
    assert close((ours + 1) / 2, theirs), float(((ours + 1) / 2 - theirs).abs().max())


def test_sdxl_and_pickled_parts_are_refused_by_name(tiny, tmp_path):
    import json
    import shutil

    _, folder, _ = tiny
    xl = shutil.copytree(folder, tmp_path / "xl")
    index = json.loads((xl / "model_index.json").read_text())
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (xl / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(GuidekitError, match="SDXL"):
        load_model(xl)
    pickled = shutil.copytree(folder, tmp_path / "pickled")
    weights = next((pickled / "unet").glob("*.safetensors"))
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(GuidekitError, match="only pickled weights.*safe_serialization=True"):
        load_model(pickled)


def test_sdedit_equals_img2img_with_strength_as_t0(tiny):
    """SDEdit at t0 on latents = StableDiffusionImg2ImgPipeline at strength t0: the guide's latent drawn from the
    VAE posterior with the same generator, then the same noise, and the same trailing steps below t0."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from guidekit.pipelines import edit_guided

    pipe, _, model = tiny
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    guide = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(5)) * 2 - 1
    prompt, strength, steps, w = "a dark coat", 0.5, 10, 1.5  # t0·T − 1 and the trailing grid below it coincide
    theirs = img2img(prompt, image=(guide + 1) / 2, strength=strength, num_inference_steps=steps,
                     guidance_scale=1 + w, generator=torch.Generator().manual_seed(7), output_type="pt").images
    g = torch.Generator().manual_seed(7)  # the posterior draw first, then the noise, from one stream as diffusers
    z0 = model.latent.encode(guide, g)
    noise = torch.randn(z0.shape, generator=g)
    ours = edit_guided(model, guide, torch.full((1,), NULL), None, strength, Guidance(w=w),
                       SamplerSettings("ddim", round(steps * strength), 0.0, "trailing"), cond=prompt_cond(model, [prompt]),
                       noise=GivenNoise([noise]), guide_generator=torch.Generator().manual_seed(7))
    assert close((ours + 1) / 2, theirs), float(((ours + 1) / 2 - theirs).abs().max())


def test_repaint_on_latents_keeps_the_known_pixels_exactly_without_a_seam(tiny):
    from guidekit.latent.edges import latent_mask, restore_known
    from guidekit.pipelines import inpaint_guided

    _, _, model = tiny
    x0 = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(2)) * 2 - 1
    mask = torch.ones(1, 1, 16, 16)
    mask[..., 4:11, 5:12] = 0  # not aligned to the 2-pixel latent cells
    cells = latent_mask(mask, 2)
    assert cells.shape == (1, 1, 8, 8) and cells[0, 0, 2, 2] == 0 and cells[0, 0, 5, 5] == 0  # partly unknown: generated
    assert cells[0, 0, 5, 6] == 1 and cells[0, 0, 0, 0] == 1
    images, nfe = inpaint_guided(model, x0, mask, torch.full((2,), NULL), [0, 1], Guidance(w=1.0),
                                 SamplerSettings("ddim", 4), 1, 2, cond=prompt_cond(model, ["a bag"] * 2))
    known = mask.expand_as(images).bool()
    assert torch.equal(images[known], x0.expand_as(images)[known]) and nfe == 4 + 1 * 1 * 3
    decoded = torch.zeros(1, 3, 16, 16)  # a decoder off by +0.3 everywhere: the step at the border is carried away
    fixed = restore_known(decoded + 0.3, decoded, mask, 1.0)
    step_before = 0.3
    step_after = float((fixed[..., 4:11, 5] - fixed[..., 4:11, 4]).abs().max())  # first generated vs last kept column
    assert step_after < step_before / 3
    assert torch.equal(fixed[mask.expand_as(fixed).bool()], decoded[mask.expand_as(fixed).bool()])  # kept exactly


@pytest.mark.parametrize("two", [False, True], ids=["one-controlnet", "two-controlnets"])
def test_controlnets_equal_stable_diffusion_controlnet_pipeline(tiny, tmp_path, two):
    """Public diffusers ControlNetModel folders steer the latent base as StableDiffusionControlNetPipeline does,
    with per-net scales and guidance windows (diffusers' control_guidance_end e at N steps = guidekit's e − 1/N)."""
    from diffusers import StableDiffusionControlNetPipeline
    from sd_tiny import tiny_controlnet

    from guidekit.checkpoints import load_controlnet
    from guidekit.pipelines import control_samples

    pipe, _, model = tiny
    nets = [tiny_controlnet(pipe, tmp_path / f"cn{k}", seed=k) for k in range(1 + two)]
    loaded = [load_controlnet(tmp_path / f"cn{k}", model.net) for k in range(1 + two)]
    hints = [torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(10 + k)) for k in range(1 + two)]
    scale, start, end = [1.0, 0.6][:1 + two], [0.2, 0.0][:1 + two], [1.0, 0.6][:1 + two]
    steps, w, prompt = 5, 2.0, "a light dress"
    cn_pipe = StableDiffusionControlNetPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"},
                                                controlnet=nets if two else nets[0])
    cn_pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(4))
    one = (lambda v: v) if two else (lambda v: v[0])
    theirs = cn_pipe(prompt, negative_prompt="ugly", image=one(hints), num_inference_steps=steps, guidance_scale=1 + w,
                     latents=x_T.clone(), controlnet_conditioning_scale=one(scale), control_guidance_start=one(start),
                     control_guidance_end=one(end), output_type="pt").images
    ours = control_samples(model, loaded, hints, torch.full((1,), NULL), None, scale,
                           SamplerSettings("ddim", steps, 0.0, "trailing"), guidance=Guidance(w=w), start=start,
                           end=[e - 1 / steps for e in end], cond=prompt_cond(model, [prompt], "ugly"),
                           noise=GivenNoise([x_T]))
    plain = sample_guided(model, torch.full((1,), NULL), None, Guidance(w=w), SamplerSettings("ddim", steps, 0.0,
                          "trailing"), cond=prompt_cond(model, [prompt], "ugly"), noise=GivenNoise([x_T]))
    assert float(((ours - plain).abs()).max()) > 1e-2  # the ControlNets do change the image
    assert close((ours + 1) / 2, theirs), float(((ours + 1) / 2 - theirs).abs().max())


def test_repaint_cfg_and_a_controlnet_compose_in_one_call_on_a_latent_model(tiny, tmp_path):
    from sd_tiny import tiny_controlnet

    from guidekit.checkpoints import load_controlnet
    from guidekit.pipelines import controlled, inpaint_guided

    pipe, _, model = tiny
    tiny_controlnet(pipe, tmp_path / "cn")
    cn = load_controlnet(tmp_path / "cn", model.net)
    x0 = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(8)) * 2 - 1
    mask = torch.ones(1, 1, 16, 16)
    mask[..., :, 8:] = 0
    hint = torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(9))
    images, nfe = inpaint_guided(controlled(model, [cn]), x0, mask, torch.full((2,), NULL), [0, 1], Guidance(w=2.0),
                                 SamplerSettings("ddim", 4), 1, 2,
                                 cond={**prompt_cond(model, ["a bag"] * 2, "ugly"), "hint": hint.expand(2, -1, -1, -1)})
    assert images.shape == (2, 3, 16, 16) and bool(torch.isfinite(images).all())
    known = mask.expand_as(images).bool()
    assert torch.equal(images[known], x0.expand_as(images)[known])


def test_every_command_takes_a_pipeline_folder(tiny, tmp_path, capsys):
    from PIL import Image
    from sd_tiny import tiny_controlnet

    from guidekit.cli import main

    pipe, folder, _ = tiny
    tiny_controlnet(pipe, tmp_path / "cn")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "guide.png")
    quick = ["--n", "1", "--steps", "2", "--no-progress"]
    runs = {
        "sample": ["sample", folder, "--prompt", "a red bag", "--negative-prompt", "blurry", "--w", "2"],
        "edit": ["edit", folder, "--guide", tmp_path / "guide.png", "--t0", "0.5", "--prompt", "a red bag"],
        "inpaint": ["inpaint", folder, "--image", tmp_path / "guide.png", "--mask", "half", "--prompt", "a bag",
                    "--jump-n-sample", "1"],
        "control": ["control", folder, "--controlnet", tmp_path / "cn", "--condition-image", tmp_path / "guide.png",
                    "--prompt", "a shoe", "--guidance-scale", "3"],
    }
    for name, argv in runs.items():
        code = main([str(a) for a in argv] + quick + ["--out", str(tmp_path / name)])
        assert code == 0, (name, capsys.readouterr().err)
        assert Image.open(next((tmp_path / name).glob("0000_*.png"))).size == (16, 16)


def test_the_web_ui_service_runs_a_pipeline_folder(tiny):
    import numpy as np

    from guidekit.ui import service

    _, folder, _ = tiny
    p = service.Params(prompt="a red bag", negative_prompt="blurry", steps=2, n=1, jump_length=1, jump_n_sample=1)
    image = np.full((16, 16, 3), 128, np.uint8)
    mask = np.full((16, 16), 255, np.uint8)
    mask[:, 8:] = 0
    for method in ("sample", "sdedit", "repaint"):
        result = service.run_method(method, str(folder), p, image=image, mask=mask, sketch=image)
        assert result.images.shape[1:3] == (16, 16), method
