"""Classifier folders ("guidekit-classifier/1"): config.json (classifier, schedule, class_names) + model.safetensors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from guidekit.checkpoints.files import check_format, format_of, load_weights, read_json, read_tensors, write_folder
from guidekit.checkpoints.model import resolve_model_dir
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.models.classifier import ClassifierConfig, NoisyClassifier


@dataclass
class LoadedClassifier:
    """A NoisyClassifier with the noise schedule it was trained on and its class names."""

    net: NoisyClassifier
    schedule: NoiseSchedule
    class_names: list[str] | None
    path: Path


def classifier_files(net: NoisyClassifier, schedule: NoiseSchedule, class_names: list[str] | None = None,
                     weights: dict[str, torch.Tensor] | None = None) -> dict:
    """The files of a classifier folder: config.json and model.safetensors (weights default to net's)."""
    check(isinstance(net, NoisyClassifier), f"classifier_files needs a NoisyClassifier, got {type(net).__name__}")
    check(isinstance(schedule, NoiseSchedule), f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    T = net.config.num_train_timesteps
    check(schedule.num_timesteps == T, f"the schedule has {schedule.num_timesteps} timesteps but the classifier "
                                       f"was built for num_train_timesteps={T}; use matching values")
    if class_names is not None:
        check(len(class_names) == net.config.num_classes,
              f"{len(class_names)} class names for a classifier with {net.config.num_classes} classes")
    config = {"format": format_of("classifier"), "classifier": net.config.to_dict(), "schedule": schedule.to_config(),
              "class_names": None if class_names is None else list(class_names)}
    return {"config.json": config, "model.safetensors": net.state_dict() if weights is None else weights}


def save_classifier(net: NoisyClassifier, dest: str | Path, schedule: NoiseSchedule,
                    class_names: list[str] | None = None) -> Path:
    """Write net as a classifier folder (config.json + model.safetensors) atomically; return its path."""
    return write_folder(Path(dest), classifier_files(net, schedule, class_names))


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> LoadedClassifier:
    """Load a classifier folder, or a classifier training run (its model/ export), onto device in eval mode."""
    folder = resolve_model_dir(path)  # refuses pickles
    config = read_json(folder / "config.json")
    check_format(config, "classifier", folder / "config.json")
    check(isinstance(config.get("classifier"), dict) and isinstance(config.get("schedule"), dict),
          f"{folder / 'config.json'} lacks its 'classifier' or 'schedule' section")
    net = NoisyClassifier(ClassifierConfig.from_dict(config["classifier"]))
    file = folder / "model.safetensors"
    check(file.exists(), f"{file} is missing; the classifier folder is incomplete")
    load_weights(net, read_tensors(file), file)
    schedule = NoiseSchedule.from_config(config["schedule"])
    names = config.get("class_names")
    check(names is None or (isinstance(names, list) and len(names) == net.config.num_classes),
          f"{folder / 'config.json'}: class_names must list {net.config.num_classes} names, got {names!r}")
    return LoadedClassifier(net.to(device).eval(), schedule, names, folder)
