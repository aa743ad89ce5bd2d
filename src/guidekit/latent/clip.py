"""Prompts as a text encoder's token embeddings (CLIP, or the BERT of a model trained here), the condition a latent
UNet cross-attends to."""

from __future__ import annotations

import warnings

import torch

from guidekit.errors import check


class ClipPrompts:
    """A pipeline folder's tokenizer and text encoder (CLIPTextModel, BertModel): encode(prompts) → (B, L, D),
    padded to the tokenizer's max length as Stable Diffusion's pipelines do; "" is the empty prompt, CFG's ∅."""

    def __init__(self, tokenizer, text_encoder: torch.nn.Module):
        self.tokenizer, self.encoder = tokenizer, text_encoder
        self.length = int(tokenizer.model_max_length)
        self.dim = int(text_encoder.config.hidden_size)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Token embeddings (len(prompts), max_length, hidden_size) in float32 on the CPU."""
        check(isinstance(prompts, list) and all(isinstance(p, str) for p in prompts),
              f"prompts must be a list of strings, got {prompts!r}")
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.length, truncation=True,
                                return_tensors="pt")
        full = self.tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] > self.length:
            warnings.warn(f"a prompt is longer than the text encoder's {self.length} tokens and was cut there",
                          UserWarning, stacklevel=2)
        p = next(self.encoder.parameters())
        mask = tokens.attention_mask.to(p.device) if getattr(self.encoder.config, "use_attention_mask", False) \
            else None
        return self.encoder(tokens.input_ids.to(p.device), attention_mask=mask)[0].float().cpu()

    def encode_all(self, prompts: list[str], batch: int = 512, progress: bool = False) -> torch.Tensor:
        """encode() over many prompts, batch at a time (a training set's captions)."""
        from tqdm.auto import tqdm

        return torch.cat([self.encode(prompts[i:i + batch]) for i in tqdm(
            range(0, len(prompts), batch), desc="token embeddings", disable=not progress, leave=False)])
