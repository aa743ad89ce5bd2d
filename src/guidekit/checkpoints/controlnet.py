"""ControlNet folders ("guidekit-controlnet/1"): config.json (controlnet, condition, base fingerprint) + weights."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from guidekit.checkpoints.files import check_format, format_of, load_weights, read_json, read_tensors, write_folder
from guidekit.checkpoints.model import resolve_model_dir
from guidekit.errors import GuidekitError, check
from guidekit.models.controlnet import ControlNet, ControlNetConfig, backbone_kind
from guidekit.models.unet import UNet


def fingerprint(net: torch.nn.Module) -> str:
    """sha256 of a base model's (UNet or DiffusersUNet) config and float32 weights: identifies a ControlNet's base."""
    h = hashlib.sha256(json.dumps(net.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(net.state_dict().items()):
        v = v.detach().cpu()
        v = (v.float() if v.is_floating_point() else v).contiguous().reshape(-1)
        h.update(f"{k}:{v.dtype}:{v.numel()};".encode())
        h.update(v.view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def controlnet_files(net: ControlNet, base_fingerprint: str, condition: str, weights: dict) -> dict:
    """The files of a ControlNet folder: config.json and model.safetensors."""
    config = {"format": format_of("controlnet"), "controlnet": net.config.to_dict(), "condition": condition,
              "base": base_fingerprint}
    return {"config.json": config, "model.safetensors": weights}


def save_controlnet(folder: str | Path, net: ControlNet, base: UNet, condition: str) -> Path:
    """Write a ControlNet folder (its current weights, tied to base's fingerprint) atomically."""
    check(isinstance(condition, str) and condition != "",
          f"condition must name the hint, e.g. 'canny', got {condition!r}")
    return write_folder(Path(folder), controlnet_files(net, fingerprint(base), condition, net.state_dict()))


@dataclass
class LoadedControlNet:
    """A ControlNet with the name of its condition, as read from a ControlNet folder."""

    net: ControlNet
    condition: str
    path: Path


def check_base(folder: Path, config: dict, cfg: ControlNetConfig, base: UNet) -> None:
    """Refuse a base model other than the one the ControlNet was trained on: kind, config, then weights."""
    kind = backbone_kind(base)
    check(cfg.base_kind == kind, f"{folder} was trained for a {cfg.base_kind} base model, not a {kind} one; pass "
                                 f"the base model it was trained on")
    check(cfg.unet == base.config.to_dict(), f"{folder} was trained for a base model with config {cfg.unet}, "
                                             f"not {base.config.to_dict()}; pass the base model it was trained on")
    mine = fingerprint(base)
    check(config.get("base") == mine, f"{folder} was trained on another base model (fingerprint "
                                      f"{str(config.get('base'))[:19]}, this base is {mine[:19]}): same config, "
                                      f"different weights; pass the base model it was trained on")


def load_controlnet(path: str | Path, base: UNet, weights: str = "model.safetensors") -> LoadedControlNet:
    """Load a ControlNet folder (or train-controlnet run) for base, in eval mode on base's device; a diffusers
    ControlNetModel folder (config.json "_class_name": "ControlNetModel", safetensors) for a latent base."""
    if is_diffusers_controlnet(path):
        return load_diffusers_controlnet(Path(path), base)
    if is_diffusers_controlnet(Path(path) / "controlnet"):  # a train-controlnet run on a latent base
        return load_diffusers_controlnet(Path(path) / "controlnet", base)
    folder = resolve_model_dir(path, export="controlnet")
    file = folder / "config.json"
    config = read_json(file)
    check_format(config, "controlnet", file)
    check(isinstance(config.get("controlnet"), dict), f"{file} lacks its 'controlnet' section")
    cfg = ControlNetConfig.from_dict(config["controlnet"])
    check_base(folder, config, cfg, base)
    net = ControlNet(cfg)
    file = folder / weights
    check(file.exists(), f"{file} is missing; the ControlNet folder is incomplete")
    load_weights(net, read_tensors(file), file)
    return LoadedControlNet(net.to(next(base.parameters()).device).eval(), str(config.get("condition", "")), folder)


def is_diffusers_controlnet(path: str | Path) -> bool:
    """Whether path is a folder written by diffusers' ControlNetModel.save_pretrained."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return read_json(config).get("_class_name") == "ControlNetModel"
    except GuidekitError:
        return False


def load_diffusers_controlnet(folder: Path, base) -> LoadedControlNet:
    """A public diffusers ControlNetModel folder for a latent base (its cross-attention width and blocks checked);
    its condition name comes from an optional guidekit.json {"condition": "canny"} (else the hint is yours)."""
    from guidekit.checkpoints.latent_folder import check_safetensors
    from guidekit.models.diffusers_cond_unet import DiffusersCondUNet
    from guidekit.models.diffusers_unet import import_diffusers

    check(isinstance(base, DiffusersCondUNet), f"{folder} is a diffusers ControlNetModel, which steers a latent "
                                               f"text-to-image UNet (a Stable Diffusion pipeline folder as MODEL), "
                                               f"not this base")
    check_safetensors(folder, "ControlNet")
    try:
        net = import_diffusers().ControlNetModel.from_pretrained(str(folder), use_safetensors=True,
                                                                  local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise GuidekitError(f"cannot load the ControlNetModel in {folder}: {str(e).splitlines()[0][:300]}") from e
    mine, theirs = base.config.unet, dict(net.config)
    for key in ("cross_attention_dim", "block_out_channels", "in_channels"):
        check(list(_listed(mine.get(key))) == list(_listed(theirs.get(key))),
              f"{folder} was made for a UNet with {key} {theirs.get(key)}, this base has {mine.get(key)}; pass the "
              f"ControlNet of this base model family")
    options = read_json(folder / "guidekit.json") if (folder / "guidekit.json").is_file() else {}
    device = next(base.parameters()).device
    return LoadedControlNet(net.float().to(device).eval(), str(options.get("condition", "")), folder)


def _listed(v):
    """A config value as a list (ints and lists alike)."""
    return v if isinstance(v, (list, tuple)) else [v]
