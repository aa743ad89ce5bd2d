"""SDEdit (Meng et al. 2022) on a loaded model: editing under guidance, and the realism–faithfulness sweep over t0."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.data import ImageDataset
from guidekit.errors import check
from guidekit.experiments.sweep import cached_samples, check_spec, sweep_rows
from guidekit.guides import stroke_painting
from guidekit.images import grid, labelled, save_png
from guidekit.metrics.evaluate import evaluate, format_table
from guidekit.pipelines import Guidance, SamplerSettings, edit_guided, faithfulness
from guidekit.sampling.sdedit import check_t0

FIELDS = ["t0", "n", "rmse", "l2", "fid", "kid", "kid_std", "is", "is_std", "accuracy", "precision", "recall",
          "img_per_s", "seconds"]
UNITS = ("rmse = per-pixel RMSE and l2 = ‖x0 − guide‖₂ per image (SDEdit's L2 faithfulness), both in [0, 1] pixel "
         "units, averaged over the images; lower = more faithful to the stroke guide.")


def stroke_guides(dataset: ImageDataset, n: int, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(guides, labels, index) for n class-balanced images: the j-th image of class i % K as a stroke painting."""
    check(dataset.labels is not None, f"{dataset.name} has no labels: stroke guides need a labelled data set")
    K = dataset.num_classes
    per_class = [torch.nonzero(dataset.labels == c)[:, 0] for c in range(K)]
    need = -(-n // K)
    short = [c for c in range(K) if len(per_class[c]) < need]
    check(not short, f"--n {n} needs {need} images of each class but {dataset.name} has fewer for classes {short}; "
                     f"lower --n or use a larger data set")
    index = torch.stack([per_class[i % K][i // K] for i in range(n)])
    return stroke_painting(dataset.images(index), levels), dataset.labels[index], index


def realism_faithfulness(rows: list[dict], path: Path, tag: str = "FMNIST") -> None:
    """SDEdit's trade-off (Meng et al. 2022, Fig. 3 style): FID vs L2 labelled by t0, then L2 and FID against t0."""
    from guidekit.experiments.plots import plt

    rows = sorted(rows, key=lambda r: r["t0"])
    t0s, l2, fid = [r["t0"] for r in rows], [r["l2"] for r in rows], [r["fid"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=120)
    axes[0].plot(l2, fid, "o-", color="C0")
    for t, a, b in zip(t0s, l2, fid):
        axes[0].annotate(f"{t:g}", (a, b), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes[0].set_xlabel("L2 to the guide (lower = more faithful)")
    axes[0].set_ylabel(f"FID-{tag} (lower = more realistic)")
    axes[0].set_title("realism vs faithfulness over t0", fontsize=9)
    axes[1].plot(t0s, l2, "o-", color="C2")
    axes[1].set_ylabel("L2 to the guide")
    axes[2].plot(t0s, fid, "o-", color="C3")
    axes[2].set_ylabel(f"FID-{tag}")
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        ax.set_xlabel("t0")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_sdedit_sweep(model: LoadedModel, t0s: list[float], guides: torch.Tensor, labels: torch.Tensor,
                     guidance: Guidance, settings: SamplerSettings, load_eval: Callable[[], tuple], out: Path,
                     seed: int = 0, repeats: int = 1, device="cpu", progress: bool = True, spec: dict | None = None,
                     class_names: list[str] | None = None, cond: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """For each t0: SDEdit the guides (same seeds), measure faithfulness (L2) and realism (FID/KID); resumable.
    cond: further conditions, one row per guide (a text model's class prompts, class_prompt_cond)."""
    for t0 in t0s:
        check_t0(t0)
    n = len(guides)
    check_spec(out, {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(), "kind": "sdedit",
                     "repeats": repeats, **guidance.describe(), **(spec or {})})
    seeds = list(range(seed, seed + n))

    def file_of(t0: float) -> str:
        return f"t0_{t0:g}"

    def sample_at(t0: float) -> torch.Tensor:
        return edit_guided(model, guides, labels, seeds, t0, guidance, settings, repeats, device=device, cond=cond)

    def score(t0: float, images: torch.Tensor, evaluator, ref) -> dict:
        return {**faithfulness(images, guides), **evaluate(images, labels, evaluator, ref, seed=seed)}

    rows = sweep_rows(out, "t0", t0s, sample_at, file_of, lambda t0, images: None, load_eval, score, FIELDS, progress,
                      "sdedit")
    rows = [r for r in sorted(rows, key=lambda r: r["t0"]) if r["t0"] in set(t0s)]
    tag = (spec or {}).get("feature_network", "FMNIST")
    (out / "results.md").write_text(format_table(rows, key="t0", tag=tag, extra=("rmse", "l2")) + f"\n\n{UNITS}\n")
    realism_faithfulness(rows, out / "realism_faithfulness.png", tag)
    K = int(labels.max()) + 1
    pick = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(K) if bool((labels == c).any())])
    outputs = [cached_samples(out / "samples" / f"{file_of(t0)}.safetensors", lambda: sample_at(t0))[0]
               for t0 in sorted(t0s)]  # kept from the rows' sampling (made again only if deleted)
    cols = [guides[pick]] + [images[pick] for images in outputs]
    cells = torch.stack(cols, 1).flatten(0, 1)
    size = (model.image_size + 2) * 2
    names = [class_names[int(labels[i])] for i in pick] if class_names else []
    title = "stroke guide | t0 = " + ", ".join(f"{t:g}" for t in sorted(t0s))
    save_png(labelled(grid(cells, len(cols), scale=2), title, names, size), out / "grid.png")
    return rows
