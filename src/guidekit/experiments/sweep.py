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
        rows = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]
    return [dict(r, n=int(r["n"])) for r in rows]


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


def cached_samples(path: Path, make: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float | None]:
    """Samples of one setting as uint8 safetensors (what a PNG would hold) with their sampling time; made if missing."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if path.exists():
        with safe_open(str(path), "pt") as f:
            seconds = (f.metadata() or {}).get("seconds")
            return f.get_tensor("images").float() / 127.5 - 1, float(seconds) if seconds else None
    start = time.time()
    images = make()
    seconds = time.time() - start
    u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"images": u8.contiguous()}, str(tmp), metadata={"seconds": f"{seconds:.3f}"})
    os.replace(tmp, path)
    return u8.float() / 127.5 - 1, seconds


def run_sweep(model: LoadedModel, ws: list[float], guidance_at: Callable[[float], Guidance], n: int,
              settings: SamplerSettings, load_eval: Callable[[], tuple], out: Path, seed: int = 0, device="cpu",
              progress: bool = True, title: str = "guidance", spec: dict | None = None) -> list[dict]:
    """Sample n class-balanced images per weight (cached), then evaluate each set; write CSV/Markdown/plots/grids.

    Resumable at two levels: finished rows are kept, and sampled sets are reused from OUT/samples/.
    """
    names = class_names(model, guidance_at(0.0))
    K = len(names or [])
    check(K > 0, "a guidance sweep needs classes: a class-conditional model, or a classifier with class names")
    check(n >= max(2 * K, 10), f"--n {n} is too small: use at least {max(2 * K, 10)} (two images per class)")
    check(all(w >= 0 for w in ws), f"every w must be >= 0, got {ws}")
    out.mkdir(parents=True, exist_ok=True)
    spec = {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(), "kind": title,
            **(spec or {})}
    spec_path = out / "sweep.json"
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        check(old == spec, f"{out} holds a sweep with other settings ({old}); use another --out to compare, or "
                           f"delete it to start over")
    else:
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    rows = read_rows(out / "results.csv")
    done = {r["w"] for r in rows}
    pending = [w for w in ws if w not in done]
    labels, seeds = balanced_labels(n, K), list(range(seed, seed + n))
    (out / "grids").mkdir(exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    sets = {}
    for w in tqdm(pending, desc=f"sample {title}", disable=not progress):
        sets[w] = cached_samples(out / "samples" / f"w{w:g}.safetensors",
                                 lambda: sample_guided(model, labels, seeds, guidance_at(w), settings, device))
        cols = min(8, n // K)
        pick = torch.cat([torch.nonzero(labels == c)[:cols, 0] for c in range(K)])
        save_png(labelled(grid(sets[w][0][pick], cols, scale=2), f"{title} w = {w:g}", names,
                          (model.net.config.image_size + 2) * 2), out / "grids" / f"w{w:g}.png")
    if pending:
        evaluator, ref = load_eval()
    for w in tqdm(pending, desc="evaluate", disable=not progress):
        images, seconds = sets[w]
        row = {"w": w, **evaluate(images, labels, evaluator, ref, seed=seed),
               "img_per_s": n / seconds if seconds else None, "seconds": seconds}
        rows.append(row)
        write_rows(out / "results.csv", sorted(rows, key=lambda r: r["w"]))
    rows = [r for r in sorted(rows, key=lambda r: r["w"]) if r["w"] in set(ws) | done]
    tag = spec.get("feature_network", "FMNIST")
    (out / "results.md").write_text(format_table(rows, tag=tag) + "\n")
    fid_vs_is({title: rows}, out / "fid_vs_is.png", tag=tag)
    metrics_vs_w(rows, out / "metrics_vs_w.png", tag=tag)
    return rows
