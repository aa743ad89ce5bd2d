"""Neural networks: the noise-prediction UNet and its building blocks."""

from guidekit.models.unet import PRESETS, UNet, UNetConfig, count_parameters

__all__ = ["PRESETS", "UNet", "UNetConfig", "count_parameters"]
