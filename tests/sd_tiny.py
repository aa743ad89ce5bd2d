"""Tiny random Stable-Diffusion-class components built in the tests (no hub): a UNet2DConditionModel, an
AutoencoderKL, a CLIPTextModel and a CLIP tokenizer written from a small vocabulary, saved as a pipeline folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "the", "red", "blue", "dark", "light", "bag", "shoe", "dress", "coat", "cat", "dog",
         "small", "large", "blurry", "ugly"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_TOKENS = 16


def write_tokenizer(folder: Path) -> None:
    """vocab.json and merges.txt of a byte-pair tokenizer that knows WORDS whole and every letter alone."""
    vocab, merges = {"<|startoftext|>": 0, "<|endoftext|>": 1}, []
    for ch in LETTERS:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def tiny_pipeline(root: Path, prediction: str = "epsilon", seed: int = 0):
    """A StableDiffusionPipeline of tiny random parts (16×16×3 images, 8×8×4 latents), saved under root/tiny-sd."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=16)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=16, sample_size=16)
    write_tokenizer(root / "tokenizer-files")
    tokenizer = CLIPTokenizer(str(root / "tokenizer-files" / "vocab.json"), str(root / "tokenizer-files" / "merges.txt"),
                              model_max_length=MAX_TOKENS)
    vocab = len(json.loads((root / "tokenizer-files" / "vocab.json").read_text()))
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=0,
                                           eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing="trailing",
                              prediction_type=prediction)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    folder = root / "tiny-sd"
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe.set_progress_bar_config(disable=True) or pipe, folder


def tiny_controlnet(pipe, folder: Path, seed: int = 1):
    """A diffusers ControlNetModel of the tiny UNet, its zero convolutions randomized (else it changes nothing),
    saved to folder."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                p.normal_(0, 0.3)
    net.save_pretrained(folder, safe_serialization=True)
    return net
