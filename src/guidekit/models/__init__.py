"""Neural networks: the noise-prediction UNet, its building blocks and ControlNet."""

from guidekit.models.controlnet import ControlledUNet, ControlNet, ControlNetConfig
from guidekit.models.unet import PRESETS, UNet, UNetConfig, count_parameters

__all__ = ["PRESETS", "ControlledUNet", "ControlNet", "ControlNetConfig", "UNet", "UNetConfig", "count_parameters"]
