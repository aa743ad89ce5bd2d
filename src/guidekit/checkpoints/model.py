"""Base-model folders ("guidekit-unet/1"): config.json (unet, schedule, class_names[, text][, distilled]) +
model.safetensors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from guidekit import zoo
from guidekit.checkpoints.files import (LEGACY_SUFFIXES, check_format, check_not_pickle, format_of, load_weights,
                                        read_json, read_legacy, read_tensors)
from guidekit.checkpoints.runs import is_complete
from guidekit.diffusion.denoiser import ModelDenoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.fast import Fast
from guidekit.models.unet import UNet, UNetConfig


def model_files(net: UNet, schedule: NoiseSchedule, class_names: list[str] | None, weights: dict) -> dict:
    """The files of a model folder: config.json and model.safetensors."""
    config = {"format": format_of("unet"), "unet": net.config.to_dict(), "schedule": schedule.to_config(),
              "class_names": class_names}
    return {"config.json": config, "model.safetensors": weights}


@dataclass
class LoadedModel:
    """A UNet (or DiffusersUNet) with its schedule and class names, as read from a model folder."""

    net: UNet
    schedule: NoiseSchedule
    class_names: list[str] | None
    path: Path
    fast: Fast | None = None  # how the network runs (guidekit.fast); None = as loaded, fp32 eager
    text: dict | None = None  # a text-conditioned model's encoder, null and caption settings (config.json "text")
    latent: object = None  # a latent model's VAE edge (guidekit.latent.LatentSpace); None = pixel space
    prompts: object = None  # a latent model's own prompt encoder (guidekit.latent.ClipPrompts)
    distilled: dict | None = None  # a guidance-distilled student's teacher, w_range and method (guidekit distill)
    _fast_net: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def w_range(self) -> tuple[float, float] | None:
        """The CFG weights [lo, hi] a guidance-distilled student (Meng et al. 2023) was trained on; None otherwise."""
        if self.distilled is None:
            return None
        lo, hi = self.distilled["w_range"]
        return float(lo), float(hi)

    @property
    def takes_text(self) -> bool:
        """Whether the network is text-conditioned (guidekit train --captions, or a Stable Diffusion pipeline)."""
        return getattr(self.net.config, "text_dim", 0) > 0

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the loop integrates: the image, or a latent model's latents."""
        c = self.net.config
        return c.in_channels, c.image_size, c.image_size

    @property
    def image_size(self) -> int:
        """Side of the images this model makes, in pixels (latent side × the VAE's factor for a latent model)."""
        return self.net.config.image_size * (self.latent.factor if self.latent is not None else 1)

    @property
    def image_channels(self) -> int:
        """Channels of the images this model makes (3 for a latent model's RGB decoder)."""
        if self.latent is not None:
            return int(self.latent.vae.config.out_channels)
        return self.net.config.in_channels

    def denoiser(self) -> ModelDenoiser:
        """The eps(x_t, t, cond) adapter of this network (run through self.fast when set)."""
        c = self.net.config
        net = self.net
        if self.fast is not None:  # one wrapper per model: compiled code and captured graphs are reused
            if self._fast_net is None:
                self._fast_net = self.fast.wrap(net, next(self.net.parameters()).device)
            net = self._fast_net
        return ModelDenoiser(net, self.schedule, c.prediction_type, c.num_classes)


def zoo_hint(path: Path) -> str:
    """For a bare name that is no zoo model: the closest zoo names and where to list them."""
    import difflib

    if len(path.parts) != 1:
        return ""
    close = difflib.get_close_matches(str(path), zoo.names(), n=3, cutoff=0.5)
    guess = f"did you mean {' or '.join(close)}? " if close else ""
    return f". {path} is not a zoo model either: {guess}'guidekit zoo list' shows {', '.join(zoo.names())}"


def resolve_model_dir(path: str | Path, export: str = "model") -> Path:
    """A model folder, a zoo name (guidekit zoo list), or a training run (its <export>/ folder, else newest checkpoint)."""
    path = zoo.resolve(path)
    check_not_pickle(path)
    check(path.exists(), f"model not found: {path}; pass a folder with config.json + model.safetensors, "
                         f"or a run folder written by 'guidekit train'" + zoo_hint(path))
    check(path.is_dir(), f"{path} is a file; pass its folder (config.json + model.safetensors)")
    if (path / "config.json").exists():
        return path
    if (path / export / "config.json").exists():
        return path / export
    ckpts = sorted((path / "checkpoints").glob("step-*")) if (path / "checkpoints").is_dir() else []
    ckpts = [c for c in ckpts if (c / "config.json").exists() and is_complete(c)]  # not one a kill cut short
    check(bool(ckpts), f"{path} has no config.json, {export}/ or checkpoints/step-*: not a guidekit model or run")
    return ckpts[-1]


def weights_file(folder: Path, weights: str) -> Path:
    """folder/weights, else a legacy torch.save file of the same stem (model.pt, ...); refused when neither exists."""
    file = folder / weights
    legacy = [folder / f"{file.stem}{s}" for s in LEGACY_SUFFIXES if (folder / f"{file.stem}{s}").is_file()]
    check(file.exists() or bool(legacy), f"{file} is missing; the model folder is incomplete")
    return file if file.exists() else legacy[0]


def load_model(path: str | Path, device: torch.device | str = "cpu", weights: str = "model.safetensors",
               null_class_index: int | None = None) -> LoadedModel:
    """Load a guidekit model folder (or run folder), or a diffusers UNet2DModel / pipeline folder, onto device,
    in eval mode; null_class_index applies to diffusers models only (guidekit.checkpoints.diffusers_folder)."""
    from guidekit.checkpoints.diffusers_folder import is_diffusers_folder, load_diffusers_model
    from guidekit.checkpoints.latent_folder import is_latent_folder, load_latent_model

    if not is_latent_folder(path) and is_latent_folder(Path(path) / "model"):
        path = Path(path) / "model"  # a latent run folder (guidekit train --latent): its exported pipeline
    if is_latent_folder(path):
        check(null_class_index is None, f"--null-class-index is for class-conditional UNet2DModels; {path} is a "
                                        f"text-to-image pipeline, whose ∅ is the empty prompt")
        return load_latent_model(path, device)
    if is_diffusers_folder(path):
        return load_diffusers_model(path, device, null_class_index)
    check(null_class_index is None, f"null_class_index / --null-class-index is for diffusers models only; {path} "
                                    f"is a guidekit model, whose null class is always its last label")
    folder = resolve_model_dir(path)
    config = read_json(folder / "config.json")
    check_format(config, "unet", folder / "config.json")
    check(isinstance(config.get("unet"), dict) and isinstance(config.get("schedule"), dict),
          f"{folder / 'config.json'} lacks its 'unet' or 'schedule' section")
    net = UNet(UNetConfig.from_dict(config["unet"]))
    file = weights_file(folder, weights)
    load_weights(net, read_tensors(file) if file.suffix == ".safetensors" else read_legacy(file), file)
    schedule = NoiseSchedule.from_config(config["schedule"])
    text = config.get("text")
    check(text is None or (isinstance(text, dict) and net.config.text_dim > 0),
          f"{folder / 'config.json'} has a 'text' section but its UNet takes no text (text_dim=0): the file is damaged")
    check(net.config.text_dim == 0 or isinstance(text, dict),
          f"{folder / 'config.json'} describes a text-conditioned UNet but lacks its 'text' section (encoder, "
          f"thresholds); re-export it with 'guidekit train --captions'")
    distilled = config.get("distilled")
    check(distilled is None or (isinstance(distilled, dict) and net.config.guidance_embed),
          f"{folder / 'config.json'} has a 'distilled' section but its UNet takes no guidance weight "
          f"(guidance_embed is false): the file is damaged")
    if distilled is not None:
        check_w_range(distilled.get("w_range"), f"{folder / 'config.json'}'s distilled.w_range")
    return LoadedModel(net.to(device).eval(), schedule, config.get("class_names"), folder, text=text,
                       distilled=distilled)


def check_w_range(value, what: str = "w_range") -> tuple[float, float]:
    """[lo, hi]: two finite numbers with 0 <= lo < hi (CFG weights of a distilled student); returned as floats."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    check(ok and 0 <= value[0] < value[1], f"{what} must be two finite CFG weights lo,hi with 0 <= lo < hi (e.g. "
                                           f"0,4), got {value!r}")
    return float(value[0]), float(value[1])
