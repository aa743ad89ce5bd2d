"""Training (accelerate) and EMA; the model-folder loaders live in guidekit.checkpoints (re-exported here)."""

from guidekit.checkpoints import (LoadedControlNet, LoadedModel, load_controlnet, load_diffusers_model, load_model,
                                  resolve_model_dir, save_controlnet, write_folder)
from guidekit.training.controlnet_trainer import ControlNetTrainConfig, ControlNetTrainer
from guidekit.training.trainer import TrainConfig, Trainer

__all__ = ["LoadedControlNet", "LoadedModel", "load_controlnet", "load_model", "resolve_model_dir", "save_controlnet",
           "write_folder", "load_diffusers_model", "ControlNetTrainConfig", "ControlNetTrainer", "TrainConfig", "Trainer"]
