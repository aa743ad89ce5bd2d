"""`guidekit sweep restore`: every restoration method per task and measurement noise on the same images, masks and
noise (DPS, DDNM and ΠGDM against RePaint at equal NFE): errors against the truth, consistency, FID, accuracy, time."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.experiments.sweep import cached_samples, check_spec, write_rows
from guidekit.images import grid, labelled, save_png
from guidekit.masks import make_mask
from guidekit.metrics.evaluate import evaluate
from guidekit.pipelines import Guidance, SamplerSettings, restoration_errors, restore_guided
from guidekit.restoration import METHODS, NOISE_AWARE, TASKS, Method, make_operator
from guidekit.sampling.repaint import expected_nfe

FIELDS = ["task", "sigma_y", "method", "sampler", "steps", "r", "n", "nfe", "psnr", "l2", "masked_psnr", "masked_l2",
          "consistency", "fid", "kid", "kid_std", "accuracy", "s_per_image", "seconds"]
GRID_IMAGES = 4


def resample_steps(steps: int, r: int) -> int:
    """RePaint's steps with jump length 1 and r passes that fit in `steps` evaluations: s + (r − 1)(s − 1) ≤ steps."""
    return max(2, (steps + r - 1) // r)


def configs(methods: list[str], steps: int, repaint_r: int) -> list[tuple[str, int, int]]:
    """(method, steps, r) of the rows: every method at `steps`; RePaint also with r passes (j = 1) at ≤ that NFE."""
    out = [(m, steps, 1) for m in methods]
    if "repaint" in methods and repaint_r > 1:
        out.insert(methods.index("repaint") + 1, ("repaint", resample_steps(steps, repaint_r), repaint_r))
    return out


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    ints, texts = ("steps", "r", "n", "nfe"), ("task", "method", "sampler")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    num = lambda v: float(v) if v not in ("", None) else None  # noqa: E731
    return [{k: (v if k in texts else int(float(v)) if k in ints else num(v)) for k, v in r.items()} for r in rows]


def key_of(row) -> tuple:
    return row["task"], row["sigma_y"], row["method"], row["steps"], row["r"]


def run_restore_sweep(model: LoadedModel, truth: torch.Tensor, truth_labels: torch.Tensor | None,
                      labels: torch.Tensor, tasks: list[str], methods: list[str], sigmas: list[float],
                      guidance: Guidance, settings: SamplerSettings, load_eval: Callable[[], tuple], out: Path,
                      mask_kind: str = "wide", repaint_r: int = 2, zeta: float = 1.0, pigdm_w: float = 1.0,
                      seed: int = 0, device="cpu", progress: bool = True, spec: dict | None = None) -> list[dict]:
    """Rows (task, σ_y, method, steps, r) on the first n images: y = A(truth) + σ_y·n with one seeded mask and noise
    per image shared by every method. Resumable: finished rows are kept and samples reused from OUT/samples/."""
    n = len(truth)
    check(n >= 10, f"--n {n} is too small: FID/KID need at least 10 images")
    check(all(t in TASKS for t in tasks), f"unknown task(s) {[t for t in tasks if t not in TASKS]}: use {TASKS}")
    check(all(m in METHODS for m in methods), f"unknown method(s) {[m for m in methods if m not in METHODS]}: use "
                                              f"{METHODS}")
    check_spec(out, {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(),
                     "mask": mask_kind, "repaint_r": repaint_r, "zeta": zeta, "pigdm_w": pigdm_w,
                     **guidance.describe(), **(spec or {})})
    rows = read_rows(out / "results.csv")
    done = {key_of(r) for r in rows}
    (out / "samples").mkdir(exist_ok=True)
    seeds = list(range(seed, seed + n))
    mask = make_mask(mask_kind, truth.shape[-1], n, torch.Generator().manual_seed(seed))
    evaluator = ref = None
    todo = [(t, s, *c) for t in tasks for s in sigmas for c in configs(methods, settings.steps, repaint_r)]
    shown = {}
    for task, sigma, method, steps, r in tqdm(todo, desc="restore sweep", disable=not progress):
        op = make_operator(task, mask if task == "inpaint" else None)
        y = op.measure(truth, sigma, torch.Generator().manual_seed(seed + 1))
        name = f"{task}-s{sigma:g}-{method}-{steps}-r{r}"
        # DDNM+ (ddnm at σ_y > 0) and DDNM's time travel need a stochastic step: DDPM's where the sweep runs DDIM η 0
        row_settings = replace(settings, steps=steps)
        if method == "ddnm" and sigma > 0 and settings.sampler == "ddim" and settings.eta == 0:
            row_settings = replace(row_settings, sampler="ddpm")
        stats = {}
        make = lambda: restore_guided(model, y, op, Method(method, zeta, pigdm_w), labels, seeds,  # noqa: E731
                                      guidance, row_settings, sigma, 1, r, device, stats=stats)
        images, seconds = cached_samples(out / "samples" / f"{name}.safetensors", make)
        shown[task, sigma, method, steps, r] = (images[:GRID_IMAGES], op.rows(slice(0, GRID_IMAGES)).show(y[:GRID_IMAGES]))
        if (task, sigma, method, steps, r) in done:
            continue
        if evaluator is None:
            evaluator, ref = load_eval()
        errors = restoration_errors(images, truth, op, y)
        metrics = evaluate(images, truth_labels, evaluator, ref, seed=seed)
        mean = lambda k: None if errors[k] is None else float(errors[k].mean())  # noqa: E731
        nfe = round(stats["nfe"]) if "nfe" in stats else expected_nfe(steps, 1, r) * guidance_passes(guidance)
        row = {"task": task, "sigma_y": sigma, "method": method, "sampler": row_settings.sampler, "steps": steps,
               "r": r, "n": n, "nfe": nfe,
               **{k: mean(k) for k in ("psnr", "l2", "masked_psnr", "masked_l2", "consistency")},
               **{m: metrics[m] for m in ("fid", "kid", "kid_std", "accuracy")},
               "s_per_image": seconds / n if seconds else None, "seconds": seconds}
        rows.append(row)
        order = {k: i for i, k in enumerate(todo)}
        rows.sort(key=lambda x: order.get(key_of(x), len(order)))
        write_rows(out / "results.csv", rows, FIELDS)
        if not progress:
            print(f"restore sweep {name}: PSNR {row['psnr']:.2f} dB, FID {row['fid']:.3f}, consistency "
                  f"{row['consistency']:.4f} ({seconds or 0:.0f} s)", flush=True)
    wanted = set(todo)
    rows = [r for r in rows if key_of(r) in wanted]
    tag = getattr(evaluator, "metric_tag", (spec or {}).get("feature_network", "FMNIST"))
    (out / "results.md").write_text(format_report(rows, tag) + "\n")
    for task in tasks:
        for sigma in sigmas:
            keys = [k for k in todo if k[:2] == (task, sigma)]
            save_grid(truth[:GRID_IMAGES], [shown[k] for k in keys], keys, out / f"grid-{task}-s{sigma:g}.png")
    return rows


def guidance_passes(guidance: Guidance) -> int:
    return 2 if guidance.w > 0 else 1


def cell(v, f: str) -> str:
    return "–" if v is None else format(v, f)


def format_table(rows: list[dict], tag: str = "FMNIST") -> str:
    """Markdown: one row per (task, σ_y, method, steps, r)."""
    head = ["task", "σ_y", "method", "sampler", "steps", "r", "n", "NFE", "PSNR (dB)", "L2", "masked PSNR", "consistency",
            f"FID-{tag}", "accuracy", "s/image"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        lines.append(f"| {r['task']} | {r['sigma_y']:g} | {r['method']} | {r['sampler']} | {r['steps']} | {r['r']} | {r['n']} | "
                     f"{r['nfe']} | {cell(r['psnr'], '.2f')} | {cell(r['l2'], '.4f')} | "
                     f"{cell(r['masked_psnr'], '.2f')} | {cell(r['consistency'], '.4f')} | {cell(r['fid'], '.3f')} | "
                     f"{cell(r['accuracy'], '.3f')} | {cell(r['s_per_image'], '.3f')} |")
    return "\n".join(lines)


def best_vs_repaint(rows: list[dict]) -> list[str]:
    """Per task and σ_y: RePaint's best FID against the best of DPS/DDNM/ΠGDM at no more NFE than RePaint's rows."""
    lines = ["| task | σ_y | RePaint best (FID, NFE) | best of DPS/DDNM/ΠGDM (FID, NFE) | verdict |",
             "| --- | --- | --- | --- | --- |"]
    for task, sigma in dict.fromkeys((r["task"], r["sigma_y"]) for r in rows):
        group = [r for r in rows if (r["task"], r["sigma_y"]) == (task, sigma) and r["fid"] is not None]
        rp = [r for r in group if r["method"] == "repaint"]
        if not rp:
            continue
        best_rp = min(rp, key=lambda r: r["fid"])
        budget = max(r["nfe"] for r in rp)  # RePaint's rows share one budget: its r passes fit in the plain NFE
        rivals = [r for r in group if r["method"] in ("dps", "ddnm", "pigdm") and r["nfe"] <= budget]
        if not rivals:
            continue
        best = min(rivals, key=lambda r: r["fid"])
        verdict = "beats RePaint" if best["fid"] < best_rp["fid"] else "RePaint stays best"
        lines.append(f"| {task} | {sigma:g} | {best_rp['fid']:.3f} (r = {best_rp['r']}, {best_rp['nfe']}) | "
                     f"{best['fid']:.3f} ({best['method']}, {best['nfe']}) | {verdict} |")
    return lines


def noise_degradation(rows: list[dict]) -> list[str]:
    """Per task and method: PSNR lost from σ_y = 0 to each σ_y > 0, and whether the noise-aware methods (DPS, DDNM+,
    ΠGDM) lose less than half of what the noise-free ones (RePaint, MCG) lose on average. A cell marked * compares
    two samplers (DDNM+ runs on DDPM's step where the noise-free rows ran DDIM)."""
    lines = ["| task | σ_y | " + " | ".join(f"{m} ΔPSNR" for m in METHODS) + " | noise-aware methods losing < ½ of the noise-free mean |",
             "|" + " --- |" * (3 + len(METHODS))]
    by = {(r["task"], r["sigma_y"], r["method"]): r for r in rows if r["r"] == 1}
    mixed = False
    for task, sigma in dict.fromkeys((r["task"], r["sigma_y"]) for r in rows if r["sigma_y"] > 0):
        drop, cells = {}, []
        for m in METHODS:
            clean, noisy = by.get((task, 0.0, m)), by.get((task, sigma, m))
            if clean and noisy:
                drop[m] = clean["psnr"] - noisy["psnr"]
            star = bool(clean and noisy and clean.get("sampler") != noisy.get("sampler"))
            mixed |= star
            cells.append(cell(drop.get(m), ".2f") + ("*" if star else ""))
        free = [drop[m] for m in drop if m not in NOISE_AWARE]
        aware = [m for m in METHODS if m in drop and m in NOISE_AWARE]
        verdict = "–"
        if free and aware:
            half = 0.5 * sum(free) / len(free)
            met = [m for m in aware if drop[m] < half]
            verdict = f"< {half:.2f}: " + (", ".join(met) or "none") + \
                ("" if len(met) == len(aware) else f" (not {', '.join(m for m in aware if m not in met)})")
        lines.append(f"| {task} | {sigma:g} | " + " | ".join(cells) + f" | {verdict} |")
    if mixed:
        lines += ["", "\\* the σ_y = 0 row ran another sampler (DDNM+ needs a stochastic step)"]
    return lines


def format_report(rows: list[dict], tag: str = "FMNIST") -> str:
    parts = [format_table(rows, tag), "", "Best FID per task: RePaint against DPS/DDNM/ΠGDM at ≤ its NFE", "",
             *best_vs_repaint(rows)]
    if any(r["sigma_y"] > 0 for r in rows):
        parts += ["", "PSNR lost to measurement noise (dB; r = 1 rows)", "", *noise_degradation(rows)]
    return "\n".join(parts)


def save_grid(truth, shown, keys, path: Path) -> None:
    """Rows = images: truth | the measurement as an image (A†y) | each (method, steps, r)."""
    k = len(truth)
    cells = []
    for i in range(k):
        cells += [truth[i], shown[0][1][i].clamp(-1, 1)] + [images[i] for images, _ in shown]
    cols = 2 + len(shown)
    title = "truth | pinv(y) | " + " | ".join(f"{m}" + (f" r={r}" if r > 1 else "") for _, _, m, _, r in keys)
    save_png(labelled(grid(torch.stack(cells), cols, scale=2), title), path)
