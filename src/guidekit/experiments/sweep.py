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

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.pipelines import Guidance, SamplerSettings, class_names, sample_guided
from guidekit.experiments.plots import fid_vs_is, metrics_vs_w
from guidekit.images import grid, labelled, save_png
from guidekit.io import write_csv
from guidekit.metrics.evaluate import evaluate, format_table

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


def write_rows(path: Path, rows: list[dict], fields: list[str] = FIELDS) -> None:
    """Rewrite the CSV atomically (guidekit.io.write_csv): a header of fields, then each row's values of them."""
    write_csv(path, [fields] + [[r.get(f) for f in fields] for r in rows])


def check_spec(out: Path, spec: dict) -> None:
    """Record a sweep's settings in OUT/sweep.json, or refuse a folder that holds a sweep with other settings."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text())
        check(old == spec, f"{out} holds a sweep with other settings ({old}); use another --out to compare, or "
                           f"delete it to start over")
    else:
        path.write_text(json.dumps(spec, indent=2) + "\n")


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


def sweep_rows(out: Path, key: str, values: list[float], sample_at: Callable[[float], torch.Tensor],
               file_of: Callable[[float], str], on_sampled: Callable[[float, torch.Tensor], None],
               load_eval: Callable[[], tuple], score: Callable[[float, torch.Tensor, object, object], dict],
               fields: list[str], progress: bool = True, desc: str = "") -> list[dict]:
    """The resumable core of a sweep: rows of OUT/results.csv are kept; each pending value's samples are made (or
    reused from OUT/samples/<file_of(v)>.safetensors) and drawn, then scored (score(v, images, evaluator, ref)), and
    the CSV is rewritten per row."""
    rows = read_rows(out / "results.csv")
    done = {r[key] for r in rows}
    pending = [v for v in values if v not in done]
    (out / "samples").mkdir(parents=True, exist_ok=True)
    loaded = None
    for v in tqdm(pending, desc=f"{desc} (sample, score)".strip(), disable=not progress):
        images, seconds = cached_samples(out / "samples" / f"{file_of(v)}.safetensors", lambda: sample_at(v))
        on_sampled(v, images)
        loaded = loaded or load_eval()  # scored as soon as sampled: a sweep cut short keeps every finished row
        rows.append({key: v, **score(v, images, *loaded),
                     "img_per_s": len(images) / seconds if seconds else None, "seconds": seconds})
        write_rows(out / "results.csv", sorted(rows, key=lambda r: r[key]), fields)
        if not progress:  # no bars: still one line per finished row, so long work shows it is alive
            print(row_line(desc, key, rows[-1]), flush=True)
    return sorted(rows, key=lambda r: r[key])


def row_line(desc: str, key: str, row: dict) -> str:
    """One finished sweep row as a log line: its setting, FID, accuracy and time."""
    v = row[key]
    parts = [f"{desc} {key} = {v:g}:" if isinstance(v, (int, float)) else f"{desc} {key} = {v}:"]
    for name, label in (("fid", "FID"), ("accuracy", "accuracy"), ("l2", "L2"), ("nfe", "NFE")):
        if isinstance(row.get(name), (int, float)):
            parts.append(f"{label} {row[name]:.4g}")
    if row.get("seconds"):
        parts.append(f"({row['seconds']:.0f} s sampling)")
    return " ".join(parts).strip()


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
    spec = {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(), "kind": title,
            **(spec or {})}
    check_spec(out, spec)
    labels, seeds = balanced_labels(n, K), list(range(seed, seed + n))
    (out / "grids").mkdir(exist_ok=True)
    cols = min(8, n // K)
    pick = torch.cat([torch.nonzero(labels == c)[:cols, 0] for c in range(K)])

    def draw(w: float, images: torch.Tensor) -> None:
        save_png(labelled(grid(images[pick], cols, scale=2), f"{title} w = {w:g}", names,
                          (model.image_size + 2) * 2), out / "grids" / f"w{w:g}.png")

    rows = sweep_rows(out, "w", ws,
                      lambda w: sample_guided(model, labels, seeds, guidance_at(w), settings, device, progress),
                      lambda w: f"w{w:g}", draw, load_eval,
                      lambda w, images, evaluator, ref: evaluate(images, labels, evaluator, ref, seed=seed),
                      FIELDS, progress, title)
    tag = spec.get("feature_network", "FMNIST")
    (out / "results.md").write_text(format_table(rows, tag=tag) + "\n")
    fid_vs_is({title: rows}, out / "fid_vs_is.png", tag=tag)
    metrics_vs_w(rows, out / "metrics_vs_w.png", tag=tag)
    return rows
