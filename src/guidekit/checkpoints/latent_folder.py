"""Local Stable-Diffusion-class pipeline folders (diffusers layout), loaded as a latent LoadedModel; nothing is
downloaded. model_index.json names the parts: unet/ (UNet2DConditionModel), vae/ (AutoencoderKL), text_encoder/
(CLIPTextModel, or the BertModel of a model trained here), tokenizer/ and scheduler/ (its config gives the noise
schedule and prediction type).
Weights are read only from safetensors; a part with only pickled .bin weights is refused with the conversion."""

from __future__ import annotations

from pathlib import Path

import torch

from guidekit.checkpoints.diffusers_folder import WEIGHTS, schedule_from_scheduler
from guidekit.checkpoints.files import PICKLE_SUFFIXES, check_format, read_json
from guidekit.checkpoints.model import LoadedModel
from guidekit.errors import GuidekitError, check

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SDXL_PARTS = ("text_encoder_2", "tokenizer_2")


def is_latent_folder(path: str | Path) -> bool:
    """Whether path is a diffusers pipeline folder with a VAE and a text encoder (a latent text-to-image model)."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    try:
        parts = read_json(index)
    except GuidekitError:
        return False
    return "vae" in parts and "text_encoder" in parts


def check_parts(path: Path, index: dict) -> None:
    """Every part a Stable Diffusion pipeline needs is there; SDXL's second encoder is refused by name."""
    name = index.get("_class_name", "pipeline")
    extra = [p for p in SDXL_PARTS if index.get(p) and index[p] != [None, None]]
    check(not extra, f"{path} is an SDXL pipeline ({name}: {', '.join(extra)}, pooled prompt embeddings and added "
                     f"time ids); guidekit runs Stable Diffusion 1.x/2.x pipelines (one CLIP text encoder) so far")
    check(not index.get("transformer") and not index.get("text_encoder_3"),
          f"{path} is a diffusion-transformer pipeline ({name}: transformer/ instead of unet/, as SD3 and Flux have); "
          f"guidekit runs UNet pipelines (Stable Diffusion 1.x/2.x) so far")
    missing = [p for p in PARTS if not (path / p).is_dir()]
    check(not missing, f"{path} ({name}) lacks {', '.join(p + '/' for p in missing)}; a text-to-image pipeline "
                       f"folder (StableDiffusionPipeline.save_pretrained) has {', '.join(p + '/' for p in PARTS)}")


def check_safetensors(folder: Path, what: str) -> None:
    """A part's weights must be safetensors; pickled weights are refused with the one-time conversion."""
    if any(f.name.endswith(".safetensors") or f.name.endswith(".safetensors.index.json") for f in folder.iterdir()):
        return
    pickles = sorted(f.name for f in folder.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES)
    check(not pickles, f"{folder} has only pickled weights ({', '.join(pickles)}); guidekit reads only safetensors "
                       f"because unpickling can run arbitrary code. Convert once where you trust the files: python "
                       f"-c \"from diffusers import DiffusionPipeline; p = DiffusionPipeline.from_pretrained('"
                       f"{folder.parent}', use_safetensors=False); p.save_pretrained('{folder.parent}', "
                       f"safe_serialization=True)\"")
    raise GuidekitError(f"{folder} has no weights ({WEIGHTS} or model.safetensors); save the pipeline with "
                        f"save_pretrained(..., safe_serialization=True)")


def _load(kind, folder: Path, what: str):
    """kind.from_pretrained(folder) from local safetensors only, with an error that names the part."""
    try:
        return kind.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError, EnvironmentError) as e:
        raise GuidekitError(f"cannot load the {what} in {folder}: {str(e).splitlines()[0][:300]}") from e


def load_vae(folder: str | Path, device: torch.device | str = "cpu"):
    """An AutoencoderKL folder (diffusers layout, safetensors) as a LatentSpace, frozen, in eval mode."""
    from guidekit.latent import LatentSpace
    from guidekit.models.diffusers_unet import import_diffusers

    folder = Path(folder)
    check((folder / "config.json").is_file(), f"{folder} is not an AutoencoderKL folder (no config.json); pass "
                                              f"the model/ folder of a VAE run, or a pipeline's vae/")
    check_safetensors(folder, "vae")
    vae = _load(import_diffusers().AutoencoderKL, folder, "VAE").float().to(device).eval().requires_grad_(False)
    return LatentSpace(vae, vae.config.scaling_factor, getattr(vae.config, "shift_factor", None))


#: The text encoders (and tokenizers) a pipeline folder may name: Stable Diffusion's CLIP, and the BERT-family
#: sentence encoder of the latent models trained here.
TEXT_ENCODERS = ("CLIPTextModel", "BertModel")
TOKENIZERS = ("CLIPTokenizer", "CLIPTokenizerFast", "BertTokenizer", "BertTokenizerFast")


def _class_of(index: dict, part: str, allowed: tuple[str, ...], path: Path) -> str:
    entry = index.get(part)
    name = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
    check(name in allowed, f"{path}/model_index.json names {part} {name!r}; guidekit loads {', '.join(allowed)}")
    return name


def load_latent_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A Stable Diffusion 1.x/2.x pipeline folder as a LoadedModel on latents: its UNet, VAE edge and prompts."""
    from guidekit.latent import ClipPrompts
    from guidekit.models.diffusers_cond_unet import DiffusersCondUNet
    from guidekit.models.diffusers_unet import import_diffusers

    path = Path(path)
    index = read_json(path / "model_index.json")
    check_parts(path, index)
    for part in ("unet", "vae", "text_encoder"):
        check_safetensors(path / part, part)
    diffusers = import_diffusers()
    try:
        import transformers
    except ImportError as e:
        raise GuidekitError("latent text-to-image models need transformers for their text encoder: "
                            "pip install 'guidekit[diffusers]'") from e
    source = path / "scheduler" / "scheduler_config.json"
    schedule, prediction = schedule_from_scheduler(read_json(source), str(source))
    unet = _load(diffusers.UNet2DConditionModel, path / "unet", "UNet")
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # its per-tensor "Loading weights" bar, for a local folder
    try:
        kind = getattr(transformers, _class_of(index, "text_encoder", TEXT_ENCODERS, path))
        encoder = _load(kind, path / "text_encoder", "text encoder")
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    try:
        kind = getattr(transformers, _class_of(index, "tokenizer", TOKENIZERS, path))
        tokenizer = kind.from_pretrained(str(path / "tokenizer"), local_files_only=True)
    except (OSError, ValueError) as e:
        raise GuidekitError(f"cannot load the tokenizer in {path / 'tokenizer'}: {e}") from e
    net = DiffusersCondUNet(unet.float(), schedule.num_timesteps, prediction).to(device).eval()
    latent = load_vae(path / "vae", device)
    record = read_json(path / "guidekit.json") if (path / "guidekit.json").is_file() else {}
    if record:
        check_format(record, "latent", path / "guidekit.json")
    return LoadedModel(net, schedule, record.get("class_names"), path, latent=latent,
                       prompts=ClipPrompts(tokenizer, encoder.float().to(device).eval()), text=record.get("text"))
