"""A labelled image set seen through a latent model's VAE (Rombach et al. 2022): what a noise-aware classifier for
classifier guidance on latents (Dhariwal & Nichol 2021) is trained on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from guidekit.data.dataset import ImageDataset


@dataclass
class LatentImages(ImageDataset):
    """An ImageDataset whose images(index) are the scaled posterior means z of its pixels (channels and
    resolution are the latents'); the pixels stay, for the fingerprint and the record of the data."""

    latents: torch.Tensor = field(default=None, compare=False)

    @property
    def channels(self) -> int:
        return self.latents.shape[1]

    @property
    def resolution(self) -> int:
        return self.latents.shape[-1]

    def images(self, index) -> torch.Tensor:
        return self.latents[index]


@torch.no_grad()
def encode_dataset(dataset: ImageDataset, space, progress: bool = True, batch: int = 512) -> LatentImages:
    """dataset with its images encoded once by space (a LatentSpace: z = scaling·E(x), the posterior mean)."""
    z = torch.cat([space.encode(dataset.images(slice(i, i + batch))).cpu()
                   for i in tqdm(range(0, len(dataset), batch), desc=f"latents of {dataset.name}",
                                 disable=not progress, leave=False)])
    return LatentImages(dataset.pixels, dataset.labels, dataset.class_names, dataset.name, dataset.source, latents=z)
