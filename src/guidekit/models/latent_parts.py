"""The diffusers parts of a latent diffusion model trained here (Rombach et al. 2022): a KL autoencoder and a
UNet2DConditionModel with cross-attention to a frozen text encoder's token embeddings, sized by preset."""

from __future__ import annotations

from guidekit.errors import check

#: preset -> (VAE widths per level, VAE groups, UNet widths per level, UNet layers per block)
PRESETS = {"tiny": ((8, 16, 16), 4, (32, 32), 1),
           "small": ((16, 32, 64), 8, (64, 128, 128), 1)}


def vae_config(preset: str, channels: int, image_size: int) -> dict:
    """AutoencoderKL settings: image_size² × channels → (image_size/4)² × 4 latents (three levels)."""
    check(preset in PRESETS, f"unknown latent preset {preset!r}; use one of {', '.join(PRESETS)}")
    widths, groups, _, _ = PRESETS[preset]
    check(image_size % 2 ** (len(widths) - 1) == 0,
          f"the image size {image_size} must be divisible by the VAE's {2 ** (len(widths) - 1)}× downsampling")
    return {"in_channels": channels, "out_channels": channels, "latent_channels": 4,
            "block_out_channels": list(widths), "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(widths), "layers_per_block": 1,
            "norm_num_groups": groups, "sample_size": image_size, "scaling_factor": 1.0}


def unet_config(preset: str, latent_size: int, latent_channels: int, text_dim: int) -> dict:
    """UNet2DConditionModel settings: cross-attention in every level but the lowest, to text_dim-wide tokens."""
    check(preset in PRESETS, f"unknown latent preset {preset!r}; use one of {', '.join(PRESETS)}")
    _, _, widths, layers = PRESETS[preset]
    n = len(widths)
    return {"sample_size": latent_size, "in_channels": latent_channels, "out_channels": latent_channels,
            "block_out_channels": list(widths), "layers_per_block": layers,
            "down_block_types": ["CrossAttnDownBlock2D"] * (n - 1) + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (n - 1),
            "cross_attention_dim": text_dim, "attention_head_dim": 8, "norm_num_groups": min(32, widths[0])}


def build_vae(config: dict):
    """A fresh diffusers AutoencoderKL."""
    from guidekit.models.diffusers_unet import import_diffusers

    return import_diffusers().AutoencoderKL(**config)


def build_unet(config: dict):
    """A fresh diffusers UNet2DConditionModel."""
    from guidekit.models.diffusers_unet import import_diffusers

    return import_diffusers().UNet2DConditionModel(**config)
