"""ControlNet folders ("guidekit-controlnet/1"): config.json (controlnet, condition, base fingerprint) + weights."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from guidekit.checkpoints.files import check_format, format_of, load_weights, read_json, read_tensors, write_folder
from guidekit.checkpoints.model import resolve_model_dir
from guidekit.errors import check
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
    """Load a ControlNet folder (or train-controlnet run) for base, in eval mode on base's device."""
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
