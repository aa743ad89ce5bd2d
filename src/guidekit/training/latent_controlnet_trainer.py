"""`guidekit train-controlnet` on a latent base (Zhang et al. 2023): a trainable copy of the frozen UNet2DCondition-
Model's encoder (diffusers ControlNetModel.from_unet: zero convolutions, a conditioning embedding from the pixel-size
hint to the latent grid), trained with the base's own latent denoising loss; prompts drop to "" with p_uncond (the
paper replaces 50 % of them). Exported as a ControlNetModel folder (+ guidekit.json: the condition)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from guidekit.checkpoints.controlnet import fingerprint
from guidekit.checkpoints.files import format_of
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample, target
from guidekit.errors import check
from guidekit.models.diffusers_cond_unet import ControlledCondUNet
from guidekit.training.base import BaseTrainer
from guidekit.training.batch import to_device
from guidekit.training.config import ControlNetTrainConfig
from guidekit.latent.data import posterior_latents
from guidekit.training.latent_trainer import latent_draws


class LatentControlNetTrainer(BaseTrainer):
    """Trains a diffusers ControlNetModel for a frozen latent base (a LoadedModel with .latent and .prompts) on
    (image, hint, caption) triples; writes checkpoints/, log.csv and controlnet/ under out_dir."""

    desc = "train-controlnet"
    export_name = "controlnet"
    weights_name = "diffusion_pytorch_model.safetensors"
    config_name = "guidekit.json"

    def __init__(self, base, pairs: ImageDataset, hints: torch.Tensor, condition: str, text,
                 config: ControlNetTrainConfig, out_dir: str | Path, resume: bool = False,
                 mixed_precision: str = "auto", progress: bool = True):
        """text: a CaptionTable of the pairs (their captions; ∅ is the empty prompt), or None: every prompt ""."""
        config.validate()
        check(base.latent is not None and base.prompts is not None, "a latent ControlNet needs a latent text base")
        check(pairs.channels == base.image_channels and pairs.resolution == base.image_size,
              f"the base makes {base.image_channels}×{base.image_size}² images, {pairs.name} has "
              f"{pairs.channels}×{pairs.resolution}²")
        check(isinstance(hints, torch.Tensor) and hints.dim() == 4 and hints.shape[0] == len(pairs)
              and hints.shape[2:] == (base.image_size, base.image_size),
              f"hints must be (N, C, {base.image_size}, {base.image_size}) with one per pair, got "
              f"{tuple(getattr(hints, 'shape', ()))}")
        self.base, self.dataset, self.hints, self.condition, self.text = base, pairs, hints.float(), condition, text
        self.schedule = base.schedule
        self.base_fingerprint = fingerprint(base.net)
        super().__init__(config, out_dir, resume, mixed_precision)
        device = self.acc.device
        self.mean, self.std = posterior_latents(pairs, base.latent, device, progress)
        captions = (text.captions if text is not None else []) + [""]
        self.tokens = base.prompts.encode_all(captions, progress=progress).half().to(device)
        self.null_id = len(captions) - 1
        self.hints_on_device = self.hints.to(device)

    def build(self) -> ControlledCondUNet:
        from guidekit.models.diffusers_unet import import_diffusers

        levels = self.base.latent.factor.bit_length()  # factor 2^k: k stride-2 convolutions, k + 1 widths
        widths = tuple(16 * 2 ** i for i in range(levels))
        net = import_diffusers().ControlNetModel.from_unet(
            self.base.net.unet, conditioning_channels=self.hints.shape[1], conditioning_embedding_out_channels=widths)
        return ControlledCondUNet(self.base.net, [net]).train()

    def trainable(self, net: ControlledCondUNet) -> torch.nn.Module:
        return net.controlnets[0]

    def loss_on(self, step: int) -> torch.Tensor:
        """The base's latent diffusion loss with the ControlNet's residuals, on step's (shard of the) pairs."""
        device = self.acc.device
        captions = self.text.ids.shape[1] if self.text is not None else 1
        idx, t, eps, n, drop, drop_hint, pick = latent_draws(self, step, captions, hint_drop=True)
        rows = to_device(idx, device)
        z0 = self.mean[rows] + self.std[rows] * to_device(n, device)
        ab = to_device(self.schedule.alpha_bar(t).float(), device)
        z_t = q_sample(z0, ab, eps)
        goal = target(z0, eps, ab, self.base.net.config.prediction_type)
        ids = torch.full((len(idx),), self.null_id) if self.text is None else \
            torch.where(drop, self.null_id, self.text.ids[idx, pick])
        text = self.tokens[to_device(ids, device)].float()
        hint = self.hints_on_device[rows] * to_device((~drop_hint).float(), device)[:, None, None, None]
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)
        out = self.net(z_t, to_device(t, device), hint=hint, text=text)
        return F.mse_loss(out.float(), goal)

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        import diffusers

        config = {k: v for k, v in dict(self.trained.config).items() if not k.startswith("_")}
        config.update(_class_name="ControlNetModel", _diffusers_version=diffusers.__version__)
        return {"config.json": config, "diffusion_pytorch_model.safetensors": weights,
                "guidekit.json": {"format": format_of("controlnet"), "condition": self.condition,
                                  "base": self.base_fingerprint, "pairs": len(self.dataset)}}

    def extra_state(self) -> dict:
        return {"pairs": len(self.dataset)}

    def save(self) -> None:
        check(fingerprint(self.base.net) == self.base_fingerprint,
              "the frozen base's weights changed during ControlNet training; this is a bug in guidekit")
        super().save()

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        check(config.get("base") == self.base_fingerprint and config.get("condition") == self.condition
              and config.get("pairs") == len(self.dataset),
              f"--resume: {ckpt} was trained on another base, condition or number of pairs; use the same BASE, "
              f"--condition and --pairs, or a new --out")
