"""Checkpoint folders: config.json + safetensors files, written atomically; pickles are refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from guidekit.diffusion.denoiser import ModelDenoiser
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import GuidekitError, check
from guidekit.io import atomic_folder
from guidekit.models.unet import UNet, UNetConfig

FORMAT = "guidekit-unet/1"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def write_folder(dest: Path, files: dict[str, dict | dict[str, torch.Tensor]]) -> Path:
    """Write {name: json-dict | tensor-dict} into dest atomically (temp folder, fsync, rename)."""
    with atomic_folder(dest) as tmp:
        for name, content in files.items():
            if name.endswith(".json"):
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                save_file({k: v.detach().contiguous().cpu() for k, v in content.items()}, str(tmp / name))
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
        raise GuidekitError(f"cannot read {path}: {e}; the file is corrupt or not safetensors") from e


def model_files(net: UNet, schedule: NoiseSchedule, class_names: list[str] | None, weights: dict) -> dict:
    """The files of a model folder: config.json and model.safetensors."""
    config = {"format": FORMAT, "unet": net.config.to_dict(), "schedule": schedule.to_config(),
              "class_names": class_names}
    return {"config.json": config, "model.safetensors": weights}


@dataclass
class LoadedModel:
    """A UNet with its schedule and class names, as read from a model folder."""

    net: UNet
    schedule: NoiseSchedule
    class_names: list[str] | None
    path: Path

    def denoiser(self) -> ModelDenoiser:
        """The eps(x_t, t, cond) adapter of this network."""
        c = self.net.config
        return ModelDenoiser(self.net, self.schedule, c.prediction_type, c.num_classes)


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, or a training run (its model/ export, else its newest checkpoint)."""
    path = Path(path)
    check(path.suffix.lower() not in PICKLE_SUFFIXES or path.is_dir(),
          f"{path} looks like a pickled checkpoint ({path.suffix}); guidekit loads only safetensors + config.json "
          f"folders because unpickling can run arbitrary code")
    check(path.exists(), f"model not found: {path}; pass a folder with config.json + model.safetensors, "
                         f"or a run folder written by 'guidekit train'")
    check(path.is_dir(), f"{path} is a file; pass its folder (config.json + model.safetensors)")
    if (path / "config.json").exists():
        return path
    if (path / "model" / "config.json").exists():
        return path / "model"
    ckpts = sorted((path / "checkpoints").glob("step-*")) if (path / "checkpoints").is_dir() else []
    ckpts = [c for c in ckpts if (c / "config.json").exists()]
    check(bool(ckpts), f"{path} has no config.json, model/ or checkpoints/step-*: not a guidekit model or run")
    return ckpts[-1]


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict strictly, naming every missing, unexpected or mis-shaped key."""
    expected = net.state_dict()
    problems = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    problems += [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    check(not problems, f"{source} does not match its config ({len(problems)} problem(s)): "
                        + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else ""))
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})


def load_model(path: str | Path, device: torch.device | str = "cpu", weights: str = "model.safetensors") -> LoadedModel:
    """Load a guidekit model folder (or run folder) onto device, in eval mode."""
    folder = resolve_model_dir(path)
    config = read_json(folder / "config.json")
    check(config.get("format") == FORMAT, f"{folder / 'config.json'} has format {config.get('format')!r}, "
                                          f"expected {FORMAT!r}: not a guidekit UNet folder")
    check(isinstance(config.get("unet"), dict) and isinstance(config.get("schedule"), dict),
          f"{folder / 'config.json'} lacks its 'unet' or 'schedule' section")
    net = UNet(UNetConfig.from_dict(config["unet"]))
    file = folder / weights
    check(file.exists(), f"{file} is missing; the model folder is incomplete")
    load_weights(net, read_tensors(file), file)
    schedule = NoiseSchedule.from_config(config["schedule"])
    return LoadedModel(net.to(device).eval(), schedule, config.get("class_names"), folder)
