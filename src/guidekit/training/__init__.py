"""Training (accelerate) and EMA. Names are imported on first use, so that `guidekit.training.config` (the run
settings the command line shows) loads without the trainers; the model-folder loaders live in guidekit.checkpoints
(re-exported here for older code)."""

import importlib

_WHERE = {
    "TrainConfig": "config", "ClassifierTrainConfig": "config", "ControlNetTrainConfig": "config",
    "Trainer": "trainer", "ControlNetTrainer": "controlnet_trainer", "ClassifierTrainer": "classifier_trainer",
    "DistillConfig": "config", "DistillTrainer": "distill_trainer",
}
_CHECKPOINTS = ("LoadedControlNet", "LoadedModel", "load_controlnet", "load_diffusers_model", "load_model",
                "resolve_model_dir", "save_controlnet", "write_folder")

__all__ = sorted([*_WHERE, *_CHECKPOINTS])


def __getattr__(name: str):
    """guidekit.training.X: the trainer or config named X (imported now), or a checkpoints re-export."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"guidekit.training.{_WHERE[name]}"), name)
    if name in _CHECKPOINTS:
        return getattr(importlib.import_module("guidekit.checkpoints"), name)
    raise AttributeError(f"module 'guidekit.training' has no attribute {name!r}")
