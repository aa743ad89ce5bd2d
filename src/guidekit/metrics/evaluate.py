"""Sample quality against a real reference: FID/KID/IS (-FMNIST or -Inception), requested-class accuracy, P&R."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from guidekit.diffusion.denoiser import NULL
from guidekit.errors import GuidekitError, check
from guidekit.imageio import read_image
from guidekit.metrics.reference import Reference, extract

SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")  # a folder's samples when it has no manifest.json
METRICS = ("fid", "kid", "kid_std", "is", "is_std", "accuracy", "precision", "recall")


def metric_labels(tag: str = "FMNIST") -> dict:
    """Column labels of the metrics of a feature network with metric_tag tag (FID-FMNIST, FID-Inception, ...)."""
    return {"fid": f"FID-{tag}", "kid": f"KID-{tag}", "is": f"IS-{tag}", "accuracy": "accuracy",
            "precision": "precision", "recall": "recall"}


LABELS = metric_labels()


def evaluate(images: torch.Tensor, requested: torch.Tensor | None, evaluator: torch.nn.Module, ref: Reference,
             k: int = 3, seed: int = 0, progress: bool = False) -> dict:
    """All metrics of one sample set; accuracy (requested label predicted) is None + accuracy_note for Inception."""
    check(len(images) >= 10, f"need at least 10 images to evaluate (IS uses 10 splits), got {len(images)}")
    feats, probs = extract(evaluator, images, progress=progress)
    return evaluate_features(feats, probs, requested, evaluator, ref, k, seed)


def evaluate_features(feats: torch.Tensor, probs: torch.Tensor, requested: torch.Tensor | None,
                      evaluator: torch.nn.Module, ref: Reference, k: int = 3, seed: int = 0) -> dict:
    """evaluate() from the evaluator's features and class probabilities of the images (extract's output)."""
    from guidekit.metrics import scores

    check(len(feats) >= 10, f"need at least 10 images to evaluate (IS uses 10 splits), got {len(feats)}")
    tag = getattr(evaluator, "metric_tag", "FMNIST")
    fake_mu, fake_sigma = scores.gaussian_stats(feats)
    kid_mean, kid_std = scores.kid(ref.features, feats, seed=seed)
    is_mean, is_std = scores.inception_score(probs, seed=seed)
    g = torch.Generator().manual_seed(seed)  # equal-size sets for P/R, chosen by content, not reference order
    real = scores.random_rows(scores.canonical(ref.features), len(feats), g)
    precision, recall = scores.precision_recall(real, feats, k=k)
    out = {"n": len(feats), "fid": scores.fid_from_stats(ref.mu, ref.sigma, fake_mu, fake_sigma),
           "kid": kid_mean, "kid_std": kid_std, "is": is_mean, "is_std": is_std, "accuracy": None,
           "precision": precision, "recall": recall, "reference": ref.name, "feature_network": tag}
    if not getattr(evaluator, "has_requested_classes", True):
        out["accuracy_note"] = (f"not measured: {tag}'s outputs are ImageNet classes, not the Fashion-MNIST "
                                f"classes the samples were requested as")
    elif requested is not None and bool((requested != NULL).any()):
        keep = requested != NULL
        out["accuracy"] = scores.class_accuracy(probs[keep], requested[keep])
        out["per_class_accuracy"] = scores.per_class_accuracy(probs[keep], requested[keep], probs.shape[1])
    return out


def manifest_entries(manifest: Path) -> tuple[list[Path], torch.Tensor]:
    """(files, requested classes) of a `guidekit sample` manifest.json, naming the file when it is not one."""
    try:
        entries = json.loads(manifest.read_text())["images"]
        files = [manifest.parent / e["file"] for e in entries]
        labels = torch.tensor([int(e["class"]) for e in entries], dtype=torch.int64)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise GuidekitError(f"cannot read {manifest} ({type(e).__name__}: {e}): it is not a manifest written by "
                            f"'guidekit sample'; fix it, or delete it to evaluate the folder's PNGs unlabelled") from e
    return files, labels


def load_sample_dir(folder: str | Path, resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PNG samples of a folder (with `guidekit sample`'s manifest.json: requested classes too) in [−1, 1]."""
    folder = Path(folder)
    check(folder.is_dir(), f"{folder} is not a folder of samples")
    manifest = folder / "manifest.json"
    if manifest.exists():
        files, labels = manifest_entries(manifest)
    else:
        files, labels = sorted(p for p in folder.iterdir() if p.suffix.lower() in SAMPLE_SUFFIXES), None
    check(len(files) >= 10, f"{folder} holds {len(files)} images; evaluation needs at least 10 PNG samples")
    out = []
    for f in files:
        a = read_image(f, 1, "sample", "replace it, or delete it (and its manifest.json entry)")[..., 0]
        a = a.astype(np.float32)
        if a.shape == (28, 28) and resolution == 32:
            a = np.pad(a, 2)
        check(a.shape == (resolution, resolution), f"{f} is {a.shape[1]}×{a.shape[0]}; the evaluator needs "
                                                   f"{resolution}×{resolution} (or 28×28) grayscale images")
        out.append(torch.from_numpy(a))
    return torch.stack(out)[:, None] / 127.5 - 1.0, labels


def format_table(rows: list[dict], key: str = "w", tag: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """A Markdown table of metric rows (one per `key` value), labelled by tag or the rows' feature_network.

    extra: further columns (e.g. a ControlNet's adherence scores) shown after n.
    """
    cols = [key, "n", *extra] + [m for m in METRICS if m not in ("kid_std", "is_std")] + ["img_per_s"]
    tag = tag or "/".join(sorted({r["feature_network"] for r in rows if r.get("feature_network")})) or "FMNIST"
    labels = metric_labels(tag)
    head = [labels.get(c, c) for c in cols]
    notes = sorted({r["accuracy_note"] for r in rows if r.get("accuracy_note")})

    def cell(r, c):
        v = r.get(c)
        if v is None:
            return "n/a" if c == "accuracy" and r.get("accuracy_note") else "–"
        if c == "kid":
            return f"{v:.4f} ± {r.get('kid_std', 0):.4f}"
        if c == "is":
            return f"{v:.2f} ± {r.get('is_std', 0):.2f}"
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    if notes:
        lines += [""] + [f"accuracy: {note}" for note in notes]
    return "\n".join(lines)
