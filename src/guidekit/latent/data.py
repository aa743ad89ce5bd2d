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
def posterior_latents(dataset: ImageDataset, space, device, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image's posterior mean and std under the frozen VAE of space (a LatentSpace), scaled, on device."""
    means, stds = [], []
    for i in tqdm(range(0, len(dataset), 512), desc="latents", disable=not progress, leave=False):
        post = space.vae.encode(dataset.images(torch.arange(i, min(i + 512, len(dataset)))).to(device)).latent_dist
        means.append((post.mean.float() - space.shift) * space.scale)
        stds.append(post.std.float() * space.scale)
    return torch.cat(means), torch.cat(stds)


def encode_dataset(dataset: ImageDataset, space, progress: bool = True) -> LatentImages:
    """dataset with its images encoded once by space (a LatentSpace: z = scaling·(E(x) − shift), the posterior
    mean)."""
    z, _ = posterior_latents(dataset, space, next(space.vae.parameters()).device, progress)
    return LatentImages(dataset.pixels, dataset.labels, dataset.class_names, dataset.name, dataset.source,
                        latents=z.cpu())
