"""What crosses the VAE edge besides images: a pixel mask on the latent grid, and the known pixels put back
exactly after decoding, with the decoder's error at the border spread into the generated side (no seam, no
colour shift, nothing of the unknown region's original content)."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F


def latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A (B, 1, H, W) pixel mask (1 = known) on the latent grid: a cell is known only if all its pixels are, so a
    cell touching the region to generate is generated (its known pixels are restored after decoding)."""
    return -F.max_pool2d(-mask.float(), factor) if factor > 1 else mask.float()


def restore_known(decoded: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """decoded with its known pixels (mask 1) set to x0 exactly; the decoder's error there, x0 − decoded, is carried
    a few pixels (Gaussian, sigma) into the generated side, so the completion meets the kept pixels without a seam
    or a colour step: generated pixel p gets Σ G·m·(x0 − decoded) / Σ G·m, weighted by min(1, 4·Σ G·m)."""
    m = mask.float().expand_as(decoded)
    error = (x0.to(decoded) - decoded) * m
    k = 2 * int(3 * sigma) + 1
    blur = lambda t: kornia.filters.gaussian_blur2d(t, (k, k), (sigma, sigma), border_type="replicate")  # noqa: E731
    reach = blur(m)
    carried = blur(error) / reach.clamp(min=1e-6) * (4 * reach).clamp(max=1.0)
    return (m * x0.to(decoded) + (1 - m) * (decoded + carried)).clamp(-1, 1)
