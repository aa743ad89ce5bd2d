"""`guidekit sweep`: metrics over a guidance weight — CFG (Ho & Salimans 2021, Fig. 4), classifier guidance (Dhariwal & Nichol 2021)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from guidekit.errors import check
from guidekit.experiments.generation import Guidance, SamplerSettings, class_names, sample_guided
from guidekit.experiments.plots import fid_vs_is, metrics_vs_w
from guidekit.images import grid, labelled, save_png
from guidekit.metrics.evaluate import evaluate, format_table
from guidekit.metrics.reference import Reference
from guidekit.training.checkpoint import LoadedModel

FIELDS = ["w", "n", "fid", "kid", "kid_std", "is", "is_std", "accuracy", "precision", "recall", "img_per_s",
          "seconds"]


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """Labels 0, 1, …, K−1, 0, 1, … (n of them): every class equally often."""
    return torch.arange(n) % num_classes


def read_rows(path: Path) -> list[dict]:
    """Finished rows of a sweep CSV (numbers parsed; empty cells → None)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rewrite the CSV atomically (temp file + rename): an interruption never leaves half a row."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_sweep(model: LoadedModel, ws: list[float], guidance_at: Callable[[float], Guidance], n: int,
              settings: SamplerSettings, evaluator, ref: Reference, out: Path, seed: int = 0, device="cpu",
              progress: bool = True, title: str = "guidance", spec: dict | None = None) -> list[dict]:
    """Sample n class-balanced images per weight, evaluate each set, write CSV/Markdown/plots/grids; resumable."""
    names = class_names(model, guidance_at(0.0))
    K = len(names or [])
    check(K > 0, "a guidance sweep needs classes: a class-conditional model, or a classifier with class names")
    check(n >= max(2 * K, 10), f"--n {n} is too small: use at least {max(2 * K, 10)} (two images per class)")
    check(all(w >= 0 for w in ws), f"every w must be >= 0, got {ws}")
    out.mkdir(parents=True, exist_ok=True)
    spec = {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(), "reference": ref.name,
            "kind": title, **(spec or {})}
    spec_path = out / "sweep.json"
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        check(old == spec, f"{out} holds a sweep with other settings ({old}); use another --out to compare, or "
                           f"delete it to start over")
    else:
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    rows = read_rows(out / "results.csv")
    done = {r["w"] for r in rows}
    labels, seeds = balanced_labels(n, K), list(range(seed, seed + n))
    (out / "grids").mkdir(exist_ok=True)
    for w in tqdm([w for w in ws if w not in done], desc=f"sweep {title}", disable=not progress):
        start = time.time()
        images = sample_guided(model, labels, seeds, guidance_at(w), settings, device, progress=False)
        sampling = time.time() - start
        row = {"w": w, **evaluate(images, labels, evaluator, ref, seed=seed), "img_per_s": n / sampling,
               "seconds": time.time() - start}
        rows.append(row)
        write_rows(out / "results.csv", sorted(rows, key=lambda r: r["w"]))
        cols = min(8, n // K)
        pick = torch.cat([torch.nonzero(labels == c)[:cols, 0] for c in range(K)])
        save_png(labelled(grid(images[pick], cols, scale=2), f"{title} w = {w:g}", names,
                          (model.net.config.image_size + 2) * 2), out / "grids" / f"w{w:g}.png")
    rows = [r for r in sorted(rows, key=lambda r: r["w"]) if r["w"] in set(ws) | done]
    (out / "results.md").write_text(format_table(rows) + "\n")
    fid_vs_is({title: rows}, out / "fid_vs_is.png")
    metrics_vs_w(rows, out / "metrics_vs_w.png")
    return rows
