"""Checkpoint folders: config.json + safetensors files, written atomically; pickles are refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from guidekit.diffusion.denoiser import ModelDenoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError, check
from guidekit.fast import Fast
from guidekit.io import atomic_folder, slow_point
from guidekit.models.controlnet import ControlNet, ControlNetConfig, backbone_kind
from guidekit.models.unet import UNet, UNetConfig

FORMAT = "guidekit-unet/1"
CONTROLNET_FORMAT = "guidekit-controlnet/1"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def write_folder(dest: Path, files: dict[str, dict | dict[str, torch.Tensor]]) -> Path:
    """Write {name: json-dict | tensor-dict} into dest atomically (temp folder, fsync, rename)."""
    with atomic_folder(dest) as tmp:
        for name, content in files.items():
            if name.endswith(".json"):
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                save_file({k: v.detach().contiguous().cpu() for k, v in content.items()}, str(tmp / name))
            slow_point()
    return Path(dest)


def read_json(path: Path) -> dict:
    """Parse a JSON file, with an error that names the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GuidekitError(f"cannot read {path}: {e}; the checkpoint is corrupt, re-export or re-train it") from e
    check(isinstance(data, dict), f"{path} must hold a JSON object")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, with an error that names the file."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as e:
        raise GuidekitError(f"cannot read {path}: {e}; {pickle_hint(path) or 'the file is corrupt or not safetensors'}"
                            ) from e


LEGACY_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")  # a model folder's legacy weights file, read weights-only


def read_legacy(path: Path) -> dict[str, torch.Tensor]:
    """A legacy torch.save state dict, through torch.load(weights_only=True) only: a pickle that would run code
    (anything beyond tensors and plain containers) is refused before any of it runs."""
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GuidekitError(f"refused {path}: torch.load(weights_only=True) accepts only tensors and plain "
                            f"containers, and this file is not that ({first[:200]}); guidekit never unpickles "
                            f"code — re-save the weights as model.safetensors where you trust their source") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    check(isinstance(obj, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()),
          f"{path} does not hold a state dict (name → tensor); save one with torch.save(net.state_dict(), PATH)")
    return obj


def pickle_hint(path: Path) -> str | None:
    """If path starts like a pickle or a torch.save zip: why guidekit will not load it, and the fix."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if not (head[:1] == b"\x80" or head == b"PK\x03\x04"):
        return None
    return ("it is a pickle (torch.save) file, not safetensors, and guidekit never unpickles weights because that "
            "can run arbitrary code; where you trust the file, convert it: safetensors.torch.save_file(torch.load("
            "PATH, weights_only=True), 'model.safetensors')")


def model_files(net: UNet, schedule: NoiseSchedule, class_names: list[str] | None, weights: dict) -> dict:
    """The files of a model folder: config.json and model.safetensors."""
    config = {"format": FORMAT, "unet": net.config.to_dict(), "schedule": schedule.to_config(),
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
    _fast_net: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def takes_text(self) -> bool:
        """Whether the network is text-conditioned (guidekit train --captions; a DiffusersUNet never is)."""
        return getattr(self.net.config, "text_dim", 0) > 0

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

    from guidekit.zoo import names

    if len(path.parts) != 1:
        return ""
    close = difflib.get_close_matches(str(path), names(), n=3, cutoff=0.5)
    guess = f"did you mean {' or '.join(close)}? " if close else ""
    return f". {path} is not a zoo model either: {guess}'guidekit zoo list' shows {', '.join(names())}"


def resolve_model_dir(path: str | Path, export: str = "model") -> Path:
    """A model folder, a zoo name (guidekit zoo list), or a training run (its <export>/ folder, else newest checkpoint)."""
    from guidekit.training.runs import is_complete
    from guidekit.zoo import resolve

    path = resolve(path)
    check(path.suffix.lower() not in PICKLE_SUFFIXES or path.is_dir(),
          f"{path} looks like a pickled checkpoint ({path.suffix}); guidekit loads only safetensors + config.json "
          f"folders because unpickling can run arbitrary code")
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


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict strictly, naming every missing, unexpected or mis-shaped key."""
    expected = net.state_dict()
    problems = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    problems += [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    check(not problems, f"{source} does not match its config.json ({len(problems)} problem(s)): "
                        + "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10
                                                      else "")
                        + "; keep each model.safetensors with the config.json it was saved with")
    check_float(weights, expected, source)
    check_finite(weights, source)
    net.load_state_dict({k: v.to(expected[k].dtype).contiguous() for k, v in weights.items()})


def check_float(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights stored as integers (or bool) where the network holds floats, naming tensor and dtype."""
    bad = [f"{k} ({v.dtype})" for k, v in weights.items()
           if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    check(not bad, f"{source} stores {len(bad)} weight tensor(s) as integers, not floats: {', '.join(bad[:5])}"
                   f"{' ...' if len(bad) > 5 else ''}; a conversion truncated them: re-export the weights as float32 "
                   f"or float16 safetensors")


def check_finite(weights: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights holding NaN or inf, naming the tensors: a model with them only ever samples NaN."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    check(not bad, f"{source} holds NaN/inf values in {len(bad)} tensor(s): {', '.join(bad[:5])}"
                   f"{' ...' if len(bad) > 5 else ''}; the checkpoint is broken (diverged training or a bad "
                   f"conversion): use an earlier checkpoint or re-train")


def load_model(path: str | Path, device: torch.device | str = "cpu", weights: str = "model.safetensors",
               null_class_index: int | None = None) -> LoadedModel:
    """Load a guidekit model folder (or run folder), or a diffusers UNet2DModel / pipeline folder, onto device,
    in eval mode; null_class_index applies to diffusers models only (guidekit.training.diffusers_folder)."""
    from guidekit.training.diffusers_folder import is_diffusers_folder, load_diffusers_model

    if is_diffusers_folder(path):
        return load_diffusers_model(path, device, null_class_index)
    check(null_class_index is None, f"null_class_index / --null-class-index is for diffusers models only; {path} "
                                    f"is a guidekit model, whose null class is always its last label")
    folder = resolve_model_dir(path)
    config = read_json(folder / "config.json")
    check(config.get("format") == FORMAT, f"{folder / 'config.json'} has format {config.get('format')!r}, "
                                          f"expected {FORMAT!r}: not a guidekit UNet folder")
    check(isinstance(config.get("unet"), dict) and isinstance(config.get("schedule"), dict),
          f"{folder / 'config.json'} lacks its 'unet' or 'schedule' section")
    net = UNet(UNetConfig.from_dict(config["unet"]))
    file = folder / weights
    legacy = [folder / f"{file.stem}{s}" for s in LEGACY_SUFFIXES if (folder / f"{file.stem}{s}").is_file()]
    check(file.exists() or bool(legacy), f"{file} is missing; the model folder is incomplete")
    file = file if file.exists() else legacy[0]
    load_weights(net, read_tensors(file) if file.suffix == ".safetensors" else read_legacy(file), file)
    schedule = NoiseSchedule.from_config(config["schedule"])
    text = config.get("text")
    check(text is None or (isinstance(text, dict) and net.config.text_dim > 0),
          f"{folder / 'config.json'} has a 'text' section but its UNet takes no text (text_dim=0): the file is damaged")
    check(net.config.text_dim == 0 or isinstance(text, dict),
          f"{folder / 'config.json'} describes a text-conditioned UNet but lacks its 'text' section (encoder, "
          f"thresholds); re-export it with 'guidekit train --captions'")
    return LoadedModel(net.to(device).eval(), schedule, config.get("class_names"), folder, text=text)


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
    config = {"format": CONTROLNET_FORMAT, "controlnet": net.config.to_dict(), "condition": condition,
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


def load_controlnet(path: str | Path, base: UNet, weights: str = "model.safetensors") -> LoadedControlNet:
    """Load a ControlNet folder (or train-controlnet run) for base, in eval mode on base's device."""
    folder = resolve_model_dir(path, export="controlnet")
    file = folder / "config.json"
    config = read_json(file)
    check(config.get("format") == CONTROLNET_FORMAT, f"{file} has format {config.get('format')!r}, expected "
                                                     f"{CONTROLNET_FORMAT!r}: not a guidekit ControlNet folder")
    check(isinstance(config.get("controlnet"), dict), f"{file} lacks its 'controlnet' section")
    cfg = ControlNetConfig.from_dict(config["controlnet"])
    kind = backbone_kind(base)
    check(cfg.base_kind == kind, f"{folder} was trained for a {cfg.base_kind} base model, not a {kind} one; pass "
                                 f"the base model it was trained on")
    check(cfg.unet == base.config.to_dict(), f"{folder} was trained for a base model with config {cfg.unet}, "
                                             f"not {base.config.to_dict()}; pass the base model it was trained on")
    mine = fingerprint(base)
    check(config.get("base") == mine, f"{folder} was trained on another base model (fingerprint "
                                      f"{str(config.get('base'))[:19]}, this base is {mine[:19]}): same config, "
                                      f"different weights; pass the base model it was trained on")
    net = ControlNet(cfg)
    file = folder / weights
    check(file.exists(), f"{file} is missing; the ControlNet folder is incomplete")
    load_weights(net, read_tensors(file), file)
    return LoadedControlNet(net.to(next(base.parameters()).device).eval(), str(config.get("condition", "")), folder)
