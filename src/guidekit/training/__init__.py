"""Training (accelerate), EMA and atomic safetensors checkpoints."""

from guidekit.training.checkpoint import (LoadedControlNet, LoadedModel, load_controlnet, load_model,
                                         resolve_model_dir, save_controlnet, write_folder)
from guidekit.training.diffusers_folder import load_diffusers_model
from guidekit.training.controlnet_trainer import ControlNetTrainConfig, ControlNetTrainer
from guidekit.training.trainer import TrainConfig, Trainer

__all__ = ["LoadedControlNet", "LoadedModel", "load_controlnet", "load_model", "resolve_model_dir", "save_controlnet",
           "write_folder", "load_diffusers_model", "ControlNetTrainConfig", "ControlNetTrainer", "TrainConfig", "Trainer"]
