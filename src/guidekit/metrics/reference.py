"""Feature-network features of real data, cached once per (dataset, split, network id) as safetensors."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from guidekit.data.dataset import ImageDataset
from guidekit.errors import check


def cache_dir() -> Path:
    """$GUIDEKIT_CACHE, else ~/.cache/guidekit."""
    return Path(os.environ.get("GUIDEKIT_CACHE") or Path.home() / ".cache" / "guidekit")


@torch.no_grad()
def extract(evaluator: torch.nn.Module, images: torch.Tensor, batch_size: int = 500,
            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) and class probabilities (N, K) of images in [−1, 1] (a metrics.network.FeatureNetwork)."""
    check(images.ndim == 4, f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    device = next(evaluator.parameters()).device
    feats, probs = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress, leave=False):
        x = images[i:i + batch_size].to(device, torch.float32)
        f, p = evaluator.features_and_probs(x)
        feats.append(f.float().cpu())
        probs.append(p.float().cpu())
    return torch.cat(feats), torch.cat(probs)


@dataclass
class Reference:
    """Real-data features and their Gaussian statistics (μ, Σ in float64) for FID/KID/precision-recall."""

    features: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    name: str


def reference(evaluator: torch.nn.Module, dataset: ImageDataset, evaluator_key: str, use_cache: bool = True,
              progress: bool = False) -> Reference:
    """Features of every image of `dataset`, from the cache when present (written atomically on first use)."""
    from guidekit.metrics.scores import gaussian_stats

    name = f"ref-{dataset.name.replace('/', '_')}-{len(dataset)}-{evaluator_key}"
    path = cache_dir() / f"{name}.safetensors"
    if use_cache and path.exists():
        try:
            t = load_file(str(path))
            return Reference(t["features"], t["mu"], t["sigma"], name)
        except Exception:  # a damaged cache file is recomputed, never trusted
            path.unlink(missing_ok=True)
    feats, _ = extract(evaluator, dataset.images(slice(None)), progress=progress)
    mu, sigma = gaussian_stats(feats)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=path.parent)
        os.close(fd)
        try:
            save_file({"features": feats.contiguous(), "mu": mu, "sigma": sigma}, tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return Reference(feats, mu, sigma, name)
