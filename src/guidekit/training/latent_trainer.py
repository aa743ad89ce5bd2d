"""`guidekit train --latent`, second stage: a text-conditioned UNet on the latents of a frozen autoencoder, cross-
attending to a frozen text encoder's token embeddings, with captions dropped to the empty prompt ∅ (Rombach et al.
2022; Ho & Salimans 2021); exported as a diffusers StableDiffusionPipeline folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from guidekit.checkpoints.diffusers_folder import PREDICTIONS
from guidekit.checkpoints.files import format_of, read_tensors
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.parameterization import q_sample, target
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check
from guidekit.latent.data import posterior_latents
from guidekit.models.diffusers_cond_unet import DiffusersCondUNet
from guidekit.models.latent_parts import build_unet
from guidekit.training.base import BaseTrainer, _step_generator, batch_indices
from guidekit.training.batch import draw_noise, to_device
from guidekit.training.config import TrainConfig

MAX_TOKENS = 24  # the tokenizer's max length in the exported pipeline (every Fashion-MNIST caption fits)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
DIFFUSERS_PREDICTION = {ours: theirs for theirs, ours in PREDICTIONS.items()}  # "v" -> "v_prediction"


def scheduler_config(schedule: NoiseSchedule, prediction: str) -> dict:
    """A diffusers DDIMScheduler config with guidekit's schedule and prediction type (trailing spacing, η = 0; the
    last step lands on the clean image, ᾱ = 1, as guidekit's does: set_alpha_to_one)."""
    import diffusers

    c = schedule.to_config()
    betas = {"linear": {"beta_schedule": "linear", "beta_start": c.get("beta_start"), "beta_end": c.get("beta_end")},
             "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": c.get("beta_start"),
                               "beta_end": c.get("beta_end")},
             "cosine": {"beta_schedule": "squaredcos_cap_v2"}}[c["kind"]]
    return {"_class_name": "DDIMScheduler", "_diffusers_version": diffusers.__version__,
            "num_train_timesteps": schedule.num_timesteps, **betas, "prediction_type": DIFFUSERS_PREDICTION[prediction],
            "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 1, "timestep_spacing": "trailing"}


class TokenEncoder:
    """The frozen text encoder's token embeddings (B, MAX_TOKENS, D) of prompts, from its local folder, through the
    same ClipPrompts the exported pipeline is sampled with (the attention mask passed, the tokenizer cut at
    MAX_TOKENS)."""

    def __init__(self, path: Path):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from guidekit.latent.clip import ClipPrompts

        hf_logging.disable_progress_bar()  # its per-tensor "Loading weights" bar, for a local folder
        self.path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.tokenizer.model_max_length = MAX_TOKENS
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval().requires_grad_(False)
        self.model.config.use_attention_mask = True
        self.prompts = ClipPrompts(self.tokenizer, self.model)
        self.dim = self.prompts.dim

    def encode(self, prompts: list[str], progress: bool = False) -> torch.Tensor:
        return self.prompts.encode_all(prompts, progress=progress)

    def files(self) -> dict:
        """The text_encoder/ and tokenizer/ files of the exported pipeline (the attention mask switched on, as
        diffusers' pipelines then pass it, and the tokenizer cut at MAX_TOKENS)."""
        config = json.loads((self.path / "config.json").read_text())
        config.update(use_attention_mask=True, architectures=[type(self.model).__name__])
        files = {"text_encoder/config.json": config,
                 "text_encoder/model.safetensors": read_tensors(self.path / "model.safetensors")}
        for name in TOKENIZER_FILES:
            if (self.path / name).is_file():
                files[f"tokenizer/{name}"] = (self.path / name).read_bytes()
        tc = json.loads((self.path / "tokenizer_config.json").read_text())
        files["tokenizer/tokenizer_config.json"] = dict(tc, model_max_length=MAX_TOKENS)
        return files


def latent_draws(trainer, step: int, captions: int, hint_drop: bool = False) -> tuple[torch.Tensor, ...]:
    """(idx, t, ε, n, drop[, drop_hint], pick) of step's shard, drawn from the step's generator in this order: the
    images, their timesteps, noise, the posterior draw z0 = μ + σ·n, the caption dropout (p_uncond), the hint
    dropout (p_drop_hint) and which of each image's `captions` captions."""
    cfg, device = trainer.cfg, trainer.acc.device
    g = _step_generator(cfg.seed, step)
    idx = batch_indices(len(trainer.dataset), cfg.batch_size, cfg.seed, step)
    t = torch.randint(trainer.schedule.num_timesteps, (len(idx),), generator=g)
    shape = (len(idx), *trainer.mean.shape[1:])
    eps = draw_noise(shape, g, cfg.seed, step, device)
    n = torch.randn(shape, generator=g)
    drawn = [idx, t, eps, n, torch.rand(len(idx), generator=g) < cfg.p_uncond]
    if hint_drop:
        drawn.append(torch.rand(len(idx), generator=g) < cfg.p_drop_hint)
    drawn.append(torch.randint(captions, (len(idx),), generator=g))
    return tuple(v.chunk(trainer.acc.num_processes)[trainer.acc.process_index] for v in drawn)


class LatentTrainer(BaseTrainer):
    """Trains a latent UNet2DConditionModel on captioned images; writes checkpoints/, log.csv and model/, a
    StableDiffusionPipeline folder (unet, vae, text_encoder, tokenizer, scheduler) with guidekit.json."""

    config_name = "guidekit.json"
    weights_name = "unet/diffusion_pytorch_model.safetensors"
    other_entries = ("vae",)  # the first stage's run folder

    def __init__(self, unet_config: dict, vae_dir: Path, dataset: ImageDataset, text, encoder: TokenEncoder,
                 schedule: NoiseSchedule, prediction: str, config: TrainConfig, out_dir: str | Path,
                 resume: bool = False, mixed_precision: str = "auto", progress: bool = True):
        """text: a CaptionTable of dataset (its captions and ids; CFG's ∅ is the empty prompt's tokens)."""
        from guidekit.checkpoints.latent_folder import load_vae

        config.validate()
        check(len(dataset) > 0, f"dataset {dataset.name} is empty")
        text.check_fits(len(dataset), text.embeddings.shape[1], "dataset images")
        self.unet_config, self.dataset, self.text, self.encoder = dict(unet_config), dataset, text, encoder
        self.schedule, self.prediction, self.vae_dir = schedule, prediction, Path(vae_dir)
        check(unet_config["cross_attention_dim"] == encoder.dim,
              f"the UNet cross-attends to {unet_config['cross_attention_dim']}-wide tokens, the text encoder gives "
              f"{encoder.dim}")
        super().__init__(config, out_dir, resume, mixed_precision)
        self.space = load_vae(self.vae_dir, self.acc.device)
        check(self.space.channels == unet_config["in_channels"],
              f"the VAE's latents have {self.space.channels} channels, the UNet takes {unet_config['in_channels']}")
        self.mean, self.std = posterior_latents(dataset, self.space, self.acc.device, progress)
        self.fixed_files = {  # the frozen parts' files, the same in every export: read once
            "vae/config.json": json.loads((self.vae_dir / "config.json").read_text()),
            "vae/diffusion_pytorch_model.safetensors":
                read_tensors(self.vae_dir / "diffusion_pytorch_model.safetensors"),
            "scheduler/scheduler_config.json": scheduler_config(schedule, prediction), **encoder.files()}
        self.tokens = encoder.encode(text.captions + [""], progress).half().to(self.acc.device)
        self.null_id = len(text.captions)

    def build(self) -> DiffusersCondUNet:
        return DiffusersCondUNet(build_unet(self.unet_config), self.schedule.num_timesteps, self.prediction)

    def trainable(self, net: DiffusersCondUNet) -> torch.nn.Module:
        return net.unet  # its state dict is the diffusers UNet's, as exported

    def loss_on(self, step: int) -> torch.Tensor:
        """MSE to the ε/v/x0 target at uniform t, z0 drawn from each image's posterior, its caption or ∅."""
        device = self.acc.device
        idx, t, eps, n, drop, pick = latent_draws(self, step, self.text.ids.shape[1])
        d = to_device(idx, device)
        z0 = self.mean[d] + self.std[d] * to_device(n, device)
        ab = to_device(self.schedule.alpha_bar(t).float(), device)
        z_t = q_sample(z0, ab, eps)
        goal = target(z0, eps, ab, self.prediction)
        ids = torch.where(drop, self.null_id, self.text.ids[idx, pick])
        text = self.tokens[to_device(ids, device)].float()
        torch.manual_seed(self.cfg.seed * 1_000_003 + step)
        out = self.net(z_t, to_device(t, device), text=text)
        return F.mse_loss(out.float(), goal)

    def export_files(self, weights: dict[str, torch.Tensor]) -> dict:
        import diffusers

        files = {"model_index.json": {
            "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", type(self.encoder.model).__name__],
            "tokenizer": ["transformers", type(self.encoder.tokenizer).__name__],
            "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
            "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False},
            "unet/config.json": dict(self.unet_config, _class_name="UNet2DConditionModel",
                                     _diffusers_version=diffusers.__version__),
            "unet/diffusion_pytorch_model.safetensors": weights, **self.fixed_files,
            "guidekit.json": {"format": format_of("latent"), "unet": self.unet_config,
                              "schedule": self.schedule.to_config(), "prediction_type": self.prediction,
                              "class_names": self.dataset.class_names, "text": self.text.meta,
                              "image_size": self.dataset.resolution, "image_channels": self.dataset.channels}}
        return files

    def check_resume(self, ckpt: Path, config: dict, state: dict) -> None:
        check(config.get("unet") == self.unet_config and config.get("prediction_type") == self.prediction
              and config.get("schedule") == self.schedule.to_config(),
              f"--resume: {ckpt} was trained with another UNet, schedule or prediction ({config.get('unet')}); use "
              f"the same options or a new --out")
