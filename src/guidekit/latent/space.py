"""The VAE edge of a latent diffusion model (Rombach et al. 2022): pixels in [−1, 1] ↔ latents z."""

from __future__ import annotations

import torch

from guidekit.errors import check

SLICE = 8  # images per VAE call: decoding a large batch at once is what runs a GPU out of memory


class LatentSpace:
    """z = scaling_factor·(E(x) − shift_factor) and x = D(z / scaling_factor + shift_factor), in slices of SLICE."""

    def __init__(self, vae: torch.nn.Module, scaling_factor: float, shift_factor: float | None = None):
        check(isinstance(scaling_factor, (int, float)) and scaling_factor > 0,
              f"the VAE's scaling_factor must be a positive number, got {scaling_factor!r}")
        self.vae, self.scale, self.shift = vae, float(scaling_factor), float(shift_factor or 0.0)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)  # pixels per latent cell, per side
        self.channels = int(vae.config.latent_channels)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents of images x (B, C, H, W) in [−1, 1]: the posterior's mean, or a draw from it with a generator."""
        p = next(self.vae.parameters())
        out = []
        for part in x.split(SLICE):
            posterior = self.vae.encode(part.to(p.device, p.dtype)).latent_dist
            z = posterior.mode() if generator is None else posterior.sample(generator)
            out.append((z.float() - self.shift) * self.scale)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] (clamped) of latents z (B, channels, h, w), on the latents' device, float32."""
        p = next(self.vae.parameters())
        out = [self.vae.decode((part / self.scale + self.shift).to(p.device, p.dtype)).sample.float()
               for part in z.split(SLICE)]
        return torch.cat(out).clamp(-1, 1).to(z.device)
