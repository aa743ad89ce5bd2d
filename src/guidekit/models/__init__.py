"""Neural networks: the noise-prediction UNet, its building blocks, ControlNet and pretrained diffusers UNets."""

from guidekit.models.controlnet import ControlledUNet, ControlNet, ControlNetConfig
from guidekit.models.diffusers_unet import DiffusersUNet, DiffusersUNetConfig
from guidekit.models.unet import PRESETS, UNet, UNetConfig, count_parameters

__all__ = ["PRESETS", "ControlledUNet", "ControlNet", "ControlNetConfig", "DiffusersUNet", "DiffusersUNetConfig", "UNet",
           "UNetConfig", "count_parameters"]
