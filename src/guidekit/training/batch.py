"""Batches built on the training device: images kept there once, ε drawn there, the small per-step draws (indices,
t, labels) copied without blocking, so a GPU step never waits for the GPU to drain.

On the CPU every draw comes from the step's CPU generator exactly as before (bit-exact resume and the same runs);
on a GPU, ε comes from a per-step generator on the device (deterministic and resumable on that device too).
"""

from __future__ import annotations

import torch

from guidekit.data.dataset import ImageDataset
from guidekit.transfer import to_device


def draw_noise(shape: tuple, g: torch.Generator, seed: int, step: int, device: torch.device) -> torch.Tensor:
    """Standard normal noise of shape for step: from g on the CPU, from a seeded device generator on a GPU."""
    if device.type == "cpu":
        return torch.randn(shape, generator=g)
    gd = torch.Generator(device).manual_seed(seed * 1_000_003 + step + 0x5EED)
    return torch.randn(shape, generator=gd, device=device)


class DeviceImages:
    """A dataset's uint8 pixels copied to device once; images(idx) returns float32 in [-1, 1] there."""

    def __init__(self, dataset: ImageDataset, device: torch.device):
        self.dataset, self.device = dataset, device
        self.pixels = dataset.pixels if device.type == "cpu" else dataset.pixels.to(device, non_blocking=True)

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """Images at index, on the device (dataset.images(index) bit for bit on the CPU)."""
        if self.device.type == "cpu":
            return self.dataset.images(index)
        return self.pixels[to_device(index, self.device)].to(torch.float32) / 127.5 - 1.0


def caption_embeddings(ids: torch.Tensor, embeddings: torch.Tensor, idx: torch.Tensor, pick: torch.Tensor,
                       drop: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Each image's picked caption embedding (ids[idx, pick] into embeddings, already on device); the rows dropped
    for CFG training get the empty prompt ∅ (zeros)."""
    keep = to_device((~drop).float(), device)[:, None]
    return embeddings[to_device(ids[idx, pick], device)] * keep
