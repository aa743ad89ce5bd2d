"""`guidekit sweep steps`: quality vs model evaluations (NFE) — DDIM (Song et al. 2021) and DPM-Solver++ (Lu et al.
2022) at few steps against ancestral DDPM (Ho et al. 2020) with all 1,000 steps, on the same model and seeds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.errors import check
from guidekit.pipelines import Guidance, SamplerSettings, class_names, sample_guided
from guidekit.experiments.sweep import FIELDS, balanced_labels, check_spec, sweep_rows
from guidekit.images import grid, labelled, save_png
from guidekit.metrics.evaluate import evaluate

STEP_FIELDS = ["nfe"] + FIELDS[1:]


def parse_setting(text: str) -> tuple[str, int]:
    """'dpmpp-2m:15' → ('dpmpp-2m', 15), with an error naming the bad entry."""
    from guidekit.sampling.steps import SAMPLERS

    name, _, steps = text.partition(":")
    check(name in SAMPLERS and steps.isdigit() and int(steps) >= 1,
          f"{text!r} is not SAMPLER:STEPS with SAMPLER one of {sorted(SAMPLERS)} and STEPS >= 1, e.g. ddpm:1000")
    return name, int(steps)


def run_steps_sweep(model: LoadedModel, samplers: list[str], nfes: list[int], baseline: tuple[str, int], w: float,
                    n: int, settings: SamplerSettings, load_eval: Callable[[], tuple], out: Path, seed: int = 0,
                    device="cpu", progress: bool = True, spec: dict | None = None) -> dict[str, list[dict]]:
    """Per sampler (and the baseline), n class-balanced samples at each NFE, scored; OUT/<sampler>/results.csv."""
    names = class_names(model, Guidance(w=w))
    K = len(names or [])
    check(K > 0, "the steps sweep scores class accuracy: use a class-conditional model")
    check(n >= max(2 * K, 10), f"--n {n} is too small: use at least {max(2 * K, 10)} (two images per class)")
    labels, seeds = balanced_labels(n, K), list(range(seed, seed + n))
    cols = min(8, n // K)
    pick = torch.cat([torch.nonzero(labels == c)[:cols, 0] for c in range(K)])
    series = {}
    plan = [(f"{baseline[0]} (baseline)", [baseline[1]])] + [(s, nfes) for s in samplers]  # baseline first
    for label, values in plan:
        sampler = label.split(" ")[0]
        sub = out / label.replace(" (baseline)", "-baseline")
        check_spec(sub, {"model": str(model.path), "n": n, "seed": seed, "w": w, "sampler": sampler,
                         "settings": dataclasses.replace(settings, sampler=sampler, steps=0).to_dict(),
                         **(spec or {})})
        (sub / "grids").mkdir(exist_ok=True)

        def sample_at(k: float, sampler=sampler) -> torch.Tensor:
            at = dataclasses.replace(settings, sampler=sampler, steps=int(k))
            return sample_guided(model, labels, seeds, Guidance(w=w), at, device, progress)

        def draw(k: float, images: torch.Tensor, sampler=sampler, sub=sub) -> None:
            save_png(labelled(grid(images[pick], cols, scale=2), f"{sampler} NFE = {k:g}, w = {w:g}", names,
                              (model.image_size + 2) * 2), sub / "grids" / f"nfe{k:g}.png")

        series[label] = sweep_rows(sub, "nfe", [float(v) for v in values], sample_at, lambda k: f"nfe{k:g}", draw,
                                   load_eval, lambda k, im, ev, ref: evaluate(im, labels, ev, ref, seed=seed),
                                   STEP_FIELDS, progress, label)
    return series


def steps_table(series: dict[str, list[dict]], tag: str = "FMNIST") -> str:
    """Markdown: sampler, NFE, FID, KID, IS, accuracy and FID relative to the baseline row."""
    base = next(rows[0] for label, rows in series.items() if label.endswith("(baseline)"))
    lines = [f"| sampler | NFE | FID-{tag} | FID / baseline | KID-{tag} ×10³ | IS-{tag} | accuracy | img/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, rows in series.items():
        for r in rows:
            acc = "n/a" if r.get("accuracy") is None else f"{r['accuracy']:.3f}"
            ips = "" if r.get("img_per_s") is None else f"{r['img_per_s']:.1f}"
            lines.append(f"| {label} | {r['nfe']:g} | {r['fid']:.2f} | {r['fid'] / base['fid']:.2f} | "
                         f"{1e3 * r['kid']:.2f} | {r['is']:.2f} | {acc} | {ips} |")
    return "\n".join(lines)


def plot_steps(series: dict[str, list[dict]], path: Path, tag: str = "FMNIST", styles: dict[str, dict] | None = None,
               title: str = "Quality vs sampling steps") -> None:
    """FID against NFE (log axis) per sampler, the baseline as a horizontal line with its ±10 % band.

    styles: matplotlib keyword arguments per series label (default: circles joined by lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    for label, rows in series.items():
        if label.endswith("(baseline)"):
            fid = rows[0]["fid"]
            ax.axhline(fid, color="k", lw=1, label=f"{label}, NFE {rows[0]['nfe']:g}")
            ax.axhspan(0.9 * fid, 1.1 * fid, color="k", alpha=0.08, label="baseline ±10 %")
        else:
            style = (styles or {}).get(label, {"marker": "o", "linestyle": "-"})
            ax.plot([r["nfe"] for r in rows], [r["fid"] for r in rows], label=label, **style)
    ax.set_xscale("log")
    nfes = sorted({r["nfe"] for label, rows in series.items() if not label.endswith("(baseline)") for r in rows})
    ax.set_xticks(nfes, [f"{k:g}" for k in nfes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("model evaluations (NFE)")
    ax.set_ylabel(f"FID-{tag} (lower = closer to data)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
