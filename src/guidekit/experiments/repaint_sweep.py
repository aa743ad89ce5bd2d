"""`guidekit sweep repaint`: RePaint (Lugmayr et al. 2022, Table 1 style) per mask type, with and without resampling."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.pipelines import Guidance, SamplerSettings
from guidekit.pipelines import inpaint_guided, masked_errors
from guidekit.experiments.sweep import cached_samples, check_spec, row_line, write_rows
from guidekit.images import grid, labelled, save_png
from guidekit.masks import MASK_KINDS, make_mask
from guidekit.metrics.evaluate import evaluate
from guidekit.sampling.repaint import expected_nfe

FIELDS = ["mask", "r", "n", "known", "nfe", "l2", "psnr", "fid", "kid", "kid_std", "accuracy", "img_per_s", "seconds"]
GRID_IMAGES = 3


def read_rows(path: Path) -> list[dict]:
    """Finished rows of OUT/results.csv (mask a name, r and n integers, the rest numbers or None)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    num = lambda v: float(v) if v not in ("", None) else None  # noqa: E731
    return [{k: (v if k == "mask" else int(v) if k in ("r", "n", "nfe") else num(v)) for k, v in r.items()}
            for r in rows]


def format_table(rows: list[dict], tag: str = "FMNIST") -> str:
    """Markdown: one row per (mask, r)."""
    head = ["mask", "r", "n", "known", "NFE", "L2", "PSNR (dB)", f"FID-{tag}", f"KID-{tag}", "accuracy", "img/s"]
    cell = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        kid = "–" if r["kid"] is None else f"{r['kid']:.4f} ± {r['kid_std'] or 0:.4f}"
        lines.append(f"| {r['mask']} | {r['r']} | {r['n']} | {cell(r['known'], '.2f')} | {r['nfe']} | "
                     f"{cell(r['l2'], '.4f')} | {cell(r['psnr'], '.2f')} | {cell(r['fid'], '.3f')} | {kid} | "
                     f"{cell(r['accuracy'], '.3f')} | {cell(r['img_per_s'], '.3g')} |")
    return "\n".join(lines)


def run_repaint_sweep(model: LoadedModel, truth: torch.Tensor, truth_labels: torch.Tensor | None,
                      labels: torch.Tensor, kinds: list[str], rs: list[int], jump_length: int, guidance: Guidance,
                      settings: SamplerSettings, load_eval: Callable[[], tuple], out: Path, seed: int = 0,
                      device="cpu", progress: bool = True, spec: dict | None = None,
                      cond: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Per mask kind and r: inpaint truth (n images) under seeded masks, score the generated region and the images.
    cond: further conditions, one row per image (a text model's class prompts, class_prompt_cond).

    Resumable: finished (mask, r) rows are kept and sampled sets reused from OUT/samples/.
    """
    n = len(truth)
    check(n >= 10, f"--n {n} is too small: FID/KID need at least 10 images")
    check(all(k in MASK_KINDS for k in kinds), f"unknown mask kind(s) {[k for k in kinds if k not in MASK_KINDS]}: "
                                               f"use {', '.join(MASK_KINDS)}")
    check_spec(out, {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(),
                     "jump_length": jump_length, **guidance.describe(), **(spec or {})})
    rows = read_rows(out / "results.csv")
    done = {(r["mask"], r["r"]) for r in rows}
    (out / "samples").mkdir(exist_ok=True)
    seeds = list(range(seed, seed + n))
    masks = {k: make_mask(k, truth.shape[-1], n, torch.Generator().manual_seed(seed)) for k in kinds}
    sets, evaluator = {}, None
    todo = [(k, r) for k in kinds for r in rs]
    for kind, r in tqdm(todo, desc="repaint sweep", disable=not progress):
        make = lambda: inpaint_guided(model, truth, masks[kind], labels, seeds, guidance, settings,  # noqa: E731
                                      jump_length, r, device, cond=cond)[0]
        sets[kind, r] = cached_samples(out / "samples" / f"{kind}-r{r}.safetensors", make)
        if (kind, r) in done:
            continue
        if evaluator is None:
            evaluator, ref = load_eval()
        images, seconds = sets[kind, r]
        l2, psnr = masked_errors(images, truth, masks[kind])
        metrics = evaluate(images, truth_labels, evaluator, ref, seed=seed)
        rows.append({"mask": kind, "r": r, "n": n, "known": float(masks[kind].mean()),
                     "nfe": expected_nfe(settings.steps, jump_length, r), "l2": float(l2.mean()),
                     "psnr": float(psnr.mean()), **{m: metrics[m] for m in ("fid", "kid", "kid_std", "accuracy")},
                     "img_per_s": n / seconds if seconds else None, "seconds": seconds})
        order = lambda row: (MASK_KINDS.index(row["mask"]), row["r"])  # noqa: E731
        rows.sort(key=order)
        write_rows(out / "results.csv", rows, FIELDS)
        if not progress:  # no bars: still one line per finished row
            print(row_line("repaint sweep", "mask", next(x for x in rows if (x["mask"], x["r"]) == (kind, r)))
                  + f" r = {r}", flush=True)
    rows = [row for row in rows if row["mask"] in kinds and row["r"] in rs]
    tag = getattr(evaluator, "metric_tag", (spec or {}).get("feature_network", "FMNIST"))
    (out / "results.md").write_text(format_table(rows, tag) + "\n")
    save_grid(truth, masks, sets, kinds, rs, out / "grid.png")
    return rows


def save_grid(truth, masks, sets, kinds, rs, path: Path) -> None:
    """Rows = mask types; per image: ground truth | mask | result for each r."""
    k = min(GRID_IMAGES, len(truth))
    cells = []
    for kind in kinds:
        for i in range(k):
            cells += [truth[i], masks[kind][i] * 2 - 1] + [sets[kind, r][0][i] for r in rs]
    cols = k * (2 + len(rs))
    cell = (truth.shape[-1] + 2) * 2
    title = "per image: truth | mask (white = known) | " + " | ".join(f"r={r}" for r in rs)
    save_png(labelled(grid(torch.stack(cells), cols, scale=2), title, kinds, cell), path)
