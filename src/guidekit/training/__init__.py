"""Training (accelerate), EMA and atomic safetensors checkpoints."""

from guidekit.training.checkpoint import LoadedModel, load_model, resolve_model_dir, write_folder
from guidekit.training.trainer import TrainConfig, Trainer

__all__ = ["LoadedModel", "load_model", "resolve_model_dir", "write_folder", "TrainConfig", "Trainer"]
