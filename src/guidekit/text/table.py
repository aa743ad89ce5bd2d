"""Captions of a training set, embedded once per unique caption by the frozen encoder (Rombach et al. 2022; CFG dropout per Ho & Salimans 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from guidekit.errors import check
from guidekit.text import captions as cap
from guidekit.text.attributes import Thresholds, measure


@dataclass
class CaptionTable:
    """ids (N, K) into the unique captions; their embeddings (U, D); meta is stored as config.json's "text"."""

    ids: torch.Tensor
    embeddings: torch.Tensor
    captions: list[str]
    meta: dict

    def check_fits(self, n: int, text_dim: int, what: str) -> None:
        """Refuse a table whose rows are not the trainer's n images (`what` names them) or whose dim is not text_dim."""
        check(self.ids.shape[0] == n and self.embeddings.shape[1] == text_dim,
              f"caption table ({self.ids.shape[0]} images, dim {self.embeddings.shape[1]}) does not match the {n} "
              f"{what} and the UNet's text_dim {text_dim}: build it from the same data (guidekit.text.build_table)")


def text_meta(thresholds: Thresholds, per_image: int, seed: int, dim: int, encoder_sha256: str | None) -> dict:
    """What a text-conditioned model folder records: the encoder, the null, the caption recipe and thresholds."""
    from guidekit.text.encoder import ENCODER_NAME

    return {"format": cap.FORMAT, "encoder": ENCODER_NAME, "encoder_sha256": encoder_sha256, "dim": dim,
            "null": "zeros", "captions_per_image": per_image, "seed": seed, "thresholds": thresholds.to_dict(),
            "held_out": {"phrases": [c[cap.HELD_OUT_PHRASE][1] for c in cap.CLASS_PHRASES],
                         "combos": [cap.held_out_combo(c) for c in range(len(cap.CLASS_PHRASES))]}}


def build_table(dataset, per_image: int, seed: int, encoder=None, thresholds: Thresholds | None = None,
                embed: bool = True) -> CaptionTable:
    """Measure every image, fit the thresholds (unless given), caption each image per_image times, embed the unique
    captions once; embed=False leaves the embeddings empty (U, 0), for a model that encodes the captions itself
    (a latent model's token embeddings)."""
    from guidekit.text.encoder import DIM, model_dir, shared_encoder, weights_sha256

    check(dataset.labels is not None and dataset.num_classes == len(cap.CLASS_PHRASES),
          f"captions describe the {len(cap.CLASS_PHRASES)} Fashion-MNIST classes; dataset {dataset.name} has "
          f"{dataset.num_classes} classes (use --dataset fashion-mnist or samples)")
    values = measure(torch.cat([dataset.images(slice(i, i + 4096)) for i in range(0, len(dataset), 4096)]))
    thresholds = thresholds or Thresholds.fit(values, dataset.labels)
    levels = thresholds.levels(values, dataset.labels)
    per = cap.dataset_captions(dataset.labels.tolist(), levels, seed, per_image)
    unique = sorted({c for row in per for c in row})
    index = {c: i for i, c in enumerate(unique)}
    ids = torch.tensor([[index[c] for c in row] for row in per], dtype=torch.int64)
    if not embed:
        return CaptionTable(ids, torch.zeros(len(unique), 0), unique,
                            text_meta(thresholds, per_image, seed, DIM, weights_sha256(model_dir())))
    encoder = encoder or shared_encoder()
    emb = encoder.encode(unique)
    sha = weights_sha256(encoder.path) if encoder.path is not None else None
    return CaptionTable(ids, emb, unique, text_meta(thresholds, per_image, seed, DIM, sha))
