"""`guidekit train`: ε-prediction training with condition dropout to ∅ (Ho & Salimans 2021), on accelerate."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from guidekit.checkpoints.model import model_files
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample, target
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.models.unet import UNet, UNetConfig
from guidekit.training.base import BaseTrainer, _step_generator, batch_indices
from guidekit.training.batch import DeviceImages, caption_embeddings, draw_noise, to_device
from guidekit.training.config import TrainConfig


class Trainer(BaseTrainer):
    """Trains a UNet on an ImageDataset; writes checkpoints/, log.csv and model/ (EMA weights) under out_dir."""

    def __init__(self, unet_config: UNetConfig, dataset: ImageDataset, schedule: NoiseSchedule,
                 config: TrainConfig, out_dir: str | Path, resume: bool = False, mixed_precision: str = "auto",
                 text=None):
        """text: a guidekit.text.table.CaptionTable for a text-conditioned UNet (captions dropped to ∅ = zeros)."""
        config.validate()
        self.unet_config, self.dataset, self.schedule, self.text = unet_config, dataset, schedule, text
        check((text is None) == (unet_config.text_dim == 0),
              "a text-conditioned UNet (text_dim > 0) trains with a caption table, and only it")
        if text is not None:
            text.check_fits(len(dataset), unet_config.text_dim, "dataset images")
        check(len(dataset) > 0, f"dataset {dataset.name} is empty; point --data at a folder with images")
        check(unet_config.in_channels == dataset.channels and unet_config.image_size == dataset.resolution,
              f"model expects {unet_config.in_channels}×{unet_config.image_size}² images, dataset {dataset.name} "
              f"has {dataset.channels}×{dataset.resolution}²")
        check(unet_config.num_classes in (0, dataset.num_classes),
              f"model has {unet_config.num_classes} classes, dataset {dataset.num_classes}")
        super().__init__(config, out_dir, resume, mixed_precision)
        self.on_device = DeviceImages(dataset, self.acc.device)
        if text is not None:
            self.text_embeddings = text.embeddings.float().to(self.acc.device)

    def build(self) -> UNet:
        return UNet(self.unet_config)

    def loss_on(self, step: int) -> torch.Tensor:
        """The diffusion loss of step's (shard of the) batch: MSE to the ε/v/x0 target at uniform t."""
        g, device = _step_generator(self.cfg.seed, step), self.acc.device
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        # draws for the whole global batch, then this process's shard: every image gets its own t, ε, dropout
        t = torch.randint(self.schedule.num_timesteps, (len(idx),), generator=g)
        eps = draw_noise((len(idx), *self.dataset.pixels.shape[1:]), g, self.cfg.seed, step, device)
        drop = torch.rand(len(idx), generator=g) < self.cfg.p_uncond
        pick = torch.randint(self.text.ids.shape[1], (len(idx),), generator=g) if self.text is not None else None
        shard = lambda v: v.chunk(self.acc.num_processes)[self.acc.process_index]  # noqa: E731
        idx, t, eps, drop = shard(idx), shard(t), shard(eps), shard(drop)
        x0 = self.on_device.images(idx)
        ab = to_device(self.schedule.alpha_bar(t).float(), device)
        x_t = q_sample(x0, ab, eps)
        goal = target(x0, eps, ab, self.raw.config.prediction_type)
        y = None
        if self.raw.config.num_classes and self.dataset.labels is not None:
            y = to_device(torch.where(drop, self.raw.config.num_classes, self.dataset.labels[idx]), device)
        kw = {}
        if self.text is not None:  # one of the image's captions; dropped ones get the empty prompt ∅ (zeros)
            kw["text"] = caption_embeddings(self.text.ids, self.text_embeddings, idx, shard(pick), drop, device)
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)  # dropout layers
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        out = self.net(x_t, to_device(t, device), y=y, **kw)
        return F.mse_loss(out.float(), goal)

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        files = model_files(self.raw, self.schedule, self.dataset.class_names, weights)
        if self.text is not None:
            files["config.json"]["text"] = self.text.meta
        return files

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        saved = config["unet"]
        check(saved == self.raw.config.to_dict(), f"--resume: {ckpt} was trained with another model config "
                                                   f"({saved}); use the same --preset/options or a new --out")
