"""`guidekit train-controlnet`: train a ControlNet (Zhang et al. 2023) on (x0, hint, y) pairs; the base stays frozen.

The loss is the base model's own denoising loss (ε, v or x0 target) with the ControlNet's residuals added;
labels drop to ∅ with p_uncond (CFG training) and hints to zeros with p_drop_hint. On a text base every pair gets
one of its captions, which the base and the copy both see; captions drop to the empty prompt with p_uncond (the
paper replaces 50 % of prompts by empty strings). Only the ControlNet is optimized, averaged (EMA) and saved;
every checkpoint verifies that the base weights are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from guidekit.checkpoints.controlnet import controlnet_files, fingerprint
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample, target
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.models.controlnet import ControlledUNet, ControlNet, backbone_kind
from guidekit.training.base import BaseTrainer, _step_generator, batch_indices
from guidekit.training.batch import DeviceImages, caption_embeddings, draw_noise, to_device
from guidekit.training.config import ControlNetTrainConfig


def make_pairs(dataset: ImageDataset, condition: Callable, n: int, seed: int = 0,
               batch: int = 512) -> tuple[ImageDataset, torch.Tensor]:
    """n images of dataset (a seeded random choice) and their hints condition(x0, generator=g), computed once."""
    check(isinstance(n, int) and 1 <= n <= len(dataset),
          f"--pairs {n} must be between 1 and the {len(dataset)} images of {dataset.name}")
    pairs = dataset.subset(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n])
    g = torch.Generator().manual_seed(seed)
    hints = torch.cat([condition(pairs.images(slice(i, i + batch)), generator=g) for i in range(0, n, batch)])
    return pairs, hints.float()


class ControlNetTrainer(BaseTrainer):
    """Trains a ControlNet for a frozen base (UNet or DiffusersUNet); writes checkpoints/, log.csv and controlnet/ under out_dir."""

    desc = "train-controlnet"
    export_name = "controlnet"

    def __init__(self, base: torch.nn.Module, schedule: NoiseSchedule, pairs: ImageDataset, hints: torch.Tensor,
                 condition: str, config: ControlNetTrainConfig, out_dir: str | Path, resume: bool = False,
                 mixed_precision: str = "auto", hint_widths: Sequence[int] = (16, 32), text=None):
        """text: a guidekit.text.table.CaptionTable of the pairs, for a text base (None there = always ∅)."""
        config.validate()
        backbone_kind(base)
        c = base.config
        check(len(pairs) > 0, f"dataset {pairs.name} is empty; pass at least one (image, hint) pair")
        check(c.in_channels == pairs.channels and c.image_size == pairs.resolution,
              f"base model expects {c.in_channels}×{c.image_size}² images, {pairs.name} has "
              f"{pairs.channels}×{pairs.resolution}²; load the data at the model's resolution")
        check(c.num_classes in (0, pairs.num_classes), f"base model has {c.num_classes} classes, {pairs.name} "
                                                       f"{pairs.num_classes}")
        check(not (c.num_classes and config.p_uncond > 0 and not getattr(c, "has_null", True)),
              f"p_uncond={config.p_uncond} drops labels to the null class ∅, but the base model has none; use "
              f"--p-uncond 0, or name its null class (null_class_index in guidekit.json)")
        check(schedule.num_timesteps == c.num_train_timesteps, f"the schedule has {schedule.num_timesteps} "
              f"timesteps, the base model {c.num_train_timesteps}; use the base model's schedule")
        check(isinstance(hints, torch.Tensor) and hints.is_floating_point() and hints.dim() == 4
              and hints.shape[0] == len(pairs) and hints.shape[2:] == pairs.pixels.shape[2:],
              f"hints must be a float (N, C, H, W) tensor with one hint per image ({len(pairs)}, C, "
              f"{pairs.resolution}, {pairs.resolution}), got {tuple(getattr(hints, 'shape', ()))}")
        check(bool(torch.isfinite(hints).all()), "hints contain NaN or infinite values; re-extract them")
        check(text is None or getattr(c, "text_dim", 0) > 0, "captions need a text-conditioned base model "
                                                             "(guidekit train --captions); this one takes none")
        if text is not None:
            text.check_fits(len(pairs), c.text_dim, "pairs")
        self.text = text
        self.base, self.schedule, self.dataset, self.hints = base, schedule, pairs, hints.float().cpu()
        self.condition, self.hint_widths = condition, tuple(hint_widths)
        self.base_fingerprint = fingerprint(base)
        super().__init__(config, out_dir, resume, mixed_precision)
        self.on_device = DeviceImages(pairs, self.acc.device)
        self.hints_on_device = self.hints.to(self.acc.device)
        if text is not None:
            self.text_embeddings = text.embeddings.float().to(self.acc.device)

    def build(self) -> ControlledUNet:
        net = ControlNet.from_unet(self.base, self.hints.shape[1], self.hint_widths)
        return ControlledUNet(self.base, net).train()

    def trainable(self, net: ControlledUNet) -> ControlNet:
        return net.controlnets[0]

    def loss_on(self, step: int) -> torch.Tensor:
        """The base model's diffusion loss with control, on step's (shard of the) batch of pairs."""
        g, device, cfg = _step_generator(self.cfg.seed, step), self.acc.device, self.base.config
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        t = torch.randint(self.schedule.num_timesteps, (len(idx),), generator=g)
        eps = draw_noise((len(idx), *self.dataset.pixels.shape[1:]), g, self.cfg.seed, step, device)
        drop = torch.rand(len(idx), generator=g) < self.cfg.p_uncond
        drop_hint = torch.rand(len(idx), generator=g) < self.cfg.p_drop_hint
        pick = torch.randint(self.text.ids.shape[1], (len(idx),), generator=g) if self.text is not None else None
        shard = lambda v: v.chunk(self.acc.num_processes)[self.acc.process_index]  # noqa: E731
        idx, t, eps, drop, drop_hint = shard(idx), shard(t), shard(eps), shard(drop), shard(drop_hint)
        x0 = self.on_device.images(idx)
        rows = to_device(idx, device)
        keep_hint = to_device((~drop_hint).float(), device)[:, None, None, None]
        hint = self.hints_on_device[rows] * keep_hint
        ab = to_device(self.schedule.alpha_bar(t).float(), device)
        x_t = q_sample(x0, ab, eps)
        goal = target(x0, eps, ab, cfg.prediction_type)
        y = None
        if cfg.num_classes and self.dataset.labels is not None:
            y = to_device(torch.where(drop, cfg.num_classes, self.dataset.labels[idx]), device)
        kw = {}
        if self.text is not None:  # one of the image's captions; dropped ones get the empty prompt ∅ (zeros)
            kw["text"] = caption_embeddings(self.text.ids, self.text_embeddings, idx, shard(pick), drop, device)
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)  # dropout layers
        out = self.net(x_t, to_device(t, device), y=y, hint=hint, **kw)
        return F.mse_loss(out.float(), goal)

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        files = controlnet_files(self.trained, self.base_fingerprint, self.condition, weights)
        if self.text is not None:
            files["config.json"]["text"] = self.text.meta
        return files

    def extra_state(self) -> dict:
        return {"pairs": len(self.dataset)}

    def check_base_unchanged(self) -> None:
        """Raise if the frozen base model's weights differ from those training started with."""
        if fingerprint(self.raw.base) != self.base_fingerprint:
            raise RuntimeError("the frozen base model's weights changed during ControlNet training; "
                               "this is a bug in guidekit, please report it")

    def save(self) -> None:
        """Check the base is unchanged, then write the checkpoint and controlnet/ (BaseTrainer.save)."""
        self.check_base_unchanged()
        super().save()

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        saved = config.get("controlnet")
        if isinstance(saved, dict) and "base_kind" not in saved:  # written before diffusers bases existed
            saved = dict(saved, base_kind="guidekit")
        check(saved == self.trained.config.to_dict(), f"--resume: {ckpt} was trained with another ControlNet "
                                                      f"config ({saved}); use the same options or a new --out")
        check(config.get("base") == self.base_fingerprint, f"--resume: {ckpt} was trained on another base model; "
                                                           f"pass the same BASE or a new --out")
        check(config.get("condition") == self.condition, f"--resume: {ckpt} was trained on condition "
              f"{config.get('condition')!r}, not {self.condition!r}; use the same --condition or a new --out")
        check(state.get("pairs") == len(self.dataset), f"--resume: {ckpt} was trained on {state.get('pairs')} "
              f"pairs, not {len(self.dataset)}; use the same --pairs or a new --out")
