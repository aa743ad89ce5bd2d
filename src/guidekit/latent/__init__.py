"""Latent text-to-image models (Rombach et al. 2022): the VAE edge and the prompt encoder around the one loop.

The loop, the samplers and the guidance transforms run on latents unchanged; only the edges differ: images and
guides are encoded into the latent space and the result decoded (LatentSpace), and prompts become the token
embeddings the UNet cross-attends to (ClipPrompts)."""

from guidekit.latent.clip import ClipPrompts
from guidekit.latent.space import LatentSpace

__all__ = ["ClipPrompts", "LatentSpace"]
