"""`guidekit train --latent`, first stage: the KL autoencoder of latent diffusion (Rombach et al. 2022), x ↔ z,
trained by reconstruction (L1 + MSE) with a weak KL term; exported as a diffusers AutoencoderKL folder whose
scaling_factor makes the latents unit-variance."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from guidekit.checkpoints.files import format_of
from guidekit.data.dataset import ImageDataset
from guidekit.errors import check
from guidekit.models.latent_parts import build_vae
from guidekit.training.base import BaseTrainer, _step_generator, batch_indices
from guidekit.training.batch import DeviceImages
from guidekit.training.config import TrainConfig

SCALE_IMAGES = 2048  # the first images of the dataset whose latents set scaling_factor = 1 / their std


class Autoencode(nn.Module):
    """x → (reconstruction from z = μ + σ·n, KL(q(z|x) ‖ N(0, I)) per image)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.mean + posterior.std * n).sample, posterior.kl()


class VAETrainer(BaseTrainer):
    """Trains an AutoencoderKL on an ImageDataset; writes checkpoints/, log.csv and model/ (diffusers layout)."""

    config_name = "guidekit.json"
    weights_name = "diffusion_pytorch_model.safetensors"

    def __init__(self, vae_config: dict, dataset: ImageDataset, config: TrainConfig, out_dir: str | Path,
                 resume: bool = False, mixed_precision: str = "auto", kl_weight: float = 1e-4):
        config.validate()
        check(len(dataset) > 0, f"dataset {dataset.name} is empty; point --data at a folder with images")
        check(vae_config["in_channels"] == dataset.channels and vae_config["sample_size"] == dataset.resolution,
              f"the VAE expects {vae_config['in_channels']}×{vae_config['sample_size']}² images, dataset "
              f"{dataset.name} has {dataset.channels}×{dataset.resolution}²")
        check(kl_weight >= 0, f"kl_weight must be >= 0, got {kl_weight}")
        self.vae_config, self.dataset, self.kl_weight = dict(vae_config), dataset, float(kl_weight)
        super().__init__(config, out_dir, resume, mixed_precision)
        self.on_device = DeviceImages(dataset, self.acc.device)
        f = 2 ** (len(vae_config["block_out_channels"]) - 1)
        self.latent_shape = (vae_config["latent_channels"], dataset.resolution // f, dataset.resolution // f)

    def build(self) -> nn.Module:
        return Autoencode(build_vae(self.vae_config))

    def trainable(self, net: nn.Module) -> nn.Module:
        return net.vae

    def loss_on(self, step: int) -> torch.Tensor:
        """L1 + MSE of the reconstruction per pixel, plus kl_weight × the KL per pixel."""
        g, device = _step_generator(self.cfg.seed, step), self.acc.device
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        n = torch.randn((len(idx), *self.latent_shape), generator=g)
        shard = lambda v: v.chunk(self.acc.num_processes)[self.acc.process_index]  # noqa: E731
        idx, n = shard(idx), shard(n)
        x = self.on_device.images(idx)
        recon, kl = self.net(x, n.to(device))
        pixels = x[0].numel()
        return F.l1_loss(recon.float(), x) + F.mse_loss(recon.float(), x) + self.kl_weight * kl.float().mean() / pixels

    @torch.no_grad()
    def scaling_factor(self, weights: dict[str, torch.Tensor]) -> float:
        """1 / std of the posterior means of the first SCALE_IMAGES images under these weights."""
        vae = build_vae(self.vae_config)
        vae.load_state_dict(weights)
        vae.to(self.acc.device).eval()
        n = min(SCALE_IMAGES, len(self.dataset))
        z = torch.cat([vae.encode(self.on_device.images(torch.arange(i, min(i + 256, n)))).latent_dist.mean.float()
                       for i in range(0, n, 256)])
        return float(1.0 / z.std().clamp(min=1e-6))

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        import diffusers

        scale = self.scaling_factor(weights)
        config = dict(self.vae_config, scaling_factor=scale, _class_name="AutoencoderKL",
                      _diffusers_version=diffusers.__version__)
        record = {"format": format_of("vae"), "vae": self.vae_config, "kl_weight": self.kl_weight,
                  "scaling_factor": scale, "class_names": self.dataset.class_names}
        return {"config.json": config, "diffusion_pytorch_model.safetensors": weights, "guidekit.json": record}

    def extra_state(self) -> dict:
        return {"kl_weight": self.kl_weight}

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        check(config.get("vae") == self.vae_config and state.get("kl_weight") == self.kl_weight,
              f"--resume: {ckpt} was trained with another autoencoder ({config.get('vae')}, KL weight "
              f"{state.get('kl_weight')}); use the same options or a new --out")
