"""Prompt sweeps over the CFG weight (Ho & Salimans 2021) of a text-conditioned model: class accuracy and attribute adherence, seen vs held-out phrasings."""

from __future__ import annotations

from pathlib import Path

import torch

from guidekit.checkpoints import LoadedModel
from guidekit.diffusion import NULL
from guidekit.errors import check
from guidekit.pipelines import Guidance, SamplerSettings, prompt_cond, sample_guided
from guidekit.experiments.sweep import check_spec, sweep_rows
from guidekit.images import grid, labelled, save_png
from guidekit.metrics.evaluate import evaluate_features
from guidekit.metrics.reference import extract
from guidekit.text.attributes import ATTRIBUTES, Thresholds, adherence_of, measure
from guidekit.text.captions import GROUPS, eval_prompts

GROUP_KEYS = {g: g.replace("heldout-", "held_") for g in GROUPS}  # column suffixes: seen, held_phrase, held_combo
FIELDS = (["w", "n", "fid", "is", "accuracy"] + [f"acc_{GROUP_KEYS[g]}" for g in GROUPS]
          + [f"attr_{GROUP_KEYS[g]}" for g in GROUPS] + [f"attr_{a}" for a in ATTRIBUTES] + ["img_per_s", "seconds"])
GRID_CLASSES = (1, 3, 7, 9)  # grid rows: the three groups' first prompt for these classes


def prompt_plan(n: int, seed: int) -> tuple[list[dict], list[str], list[int]]:
    """The evaluation prompts, and per image (prompt-major) its prompt and seed: n // len(prompts) seeds each."""
    prompts = eval_prompts()
    per = n // len(prompts)
    check(per >= 1, f"--n {n} is too small: the prompt sweep has {len(prompts)} prompts; use at least {len(prompts)}")
    return prompts, [p["prompt"] for p in prompts for _ in range(per)], [seed + s for _ in prompts for s in range(per)]


def score_prompts(images: torch.Tensor, prompts: list[dict], per: int, thresholds: Thresholds, evaluator, ref,
                  seed: int = 0) -> dict:
    """FID/IS/accuracy of the whole set, and per group class accuracy and attribute adherence."""
    classes = torch.tensor([p["class"] for p in prompts for _ in range(per)])
    groups = [p["group"] for p in prompts for _ in range(per)]
    wanted = [p["attrs"] for p in prompts for _ in range(per)]
    feats, probs = extract(evaluator, images)  # once, for the metrics and the class accuracies below
    row = evaluate_features(feats, probs, classes, evaluator, ref, seed=seed) if len(images) >= 10 else \
        {"n": len(images)}
    hit = probs.argmax(1) == classes
    values = measure(images)  # once: the groups and prompts below are slices of it
    part = lambda idx: {k: v[idx] for k, v in values.items()}  # noqa: E731
    for g in GROUPS:
        sel = [i for i, gg in enumerate(groups) if gg == g]
        row[f"acc_{GROUP_KEYS[g]}"] = float(hit[sel].float().mean())
        row[f"attr_{GROUP_KEYS[g]}"] = adherence_of(part(sel), [wanted[i] for i in sel],
                                                    [int(classes[i]) for i in sel], thresholds)["all"]
    every = adherence_of(values, wanted, classes.tolist(), thresholds)
    row.update({f"attr_{a}": every[a] for a in ATTRIBUTES})
    row["per_prompt"] = [{"accuracy": float(hit[i * per:(i + 1) * per].float().mean()),
                          "adherence": adherence_of(part(slice(i * per, (i + 1) * per)), [p["attrs"]] * per,
                                                    [p["class"]] * per, thresholds)["all"]}
                         for i, p in enumerate(prompts)]
    return row


def nearest_seen_class(prompts: list[dict], encoder=None) -> list[int]:
    """Per prompt, the class of the nearest (cosine, frozen encoder) caption made from a training paraphrase with the
    prompt's own adjectives and template: where that is another class, a model conditioned on the embedding alone
    has no way to tell the two apart."""
    from guidekit.text.captions import CLASS_PHRASES, WORDS, render, train_phrases
    from guidekit.text.encoder import shared_encoder

    encoder = encoder or shared_encoder()
    out = []
    for q in prompts:
        adjs = [WORDS[k][q["attrs"][k]][0] for k in ATTRIBUTES if k in q["attrs"]]
        seen = [(c, render(p, adjs, q["template"])) for c in range(len(CLASS_PHRASES)) for p in train_phrases(c)]
        sims = encoder.encode([t for _, t in seen]) @ encoder.encode([q["prompt"]])[0]
        out.append(seen[int(sims.argmax())][0])
    return out


def write_per_prompt(path: Path, prompts: list[dict], scores: list[dict], nearest: list[int]) -> None:
    """One CSV row per evaluation prompt: group, class, prompt, accuracy, attribute adherence, encoder's nearest
    seen class."""
    from guidekit.io import write_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, [["group", "class", "prompt", "accuracy", "adherence", "nearest_seen_class"]] +
              [[p["group"], p["class"], p["prompt"], f"{s['accuracy']:.4f}", f"{s['adherence']:.4f}", k]
               for p, s, k in zip(prompts, scores, nearest)])


def run_prompt_sweep(model: LoadedModel, ws: list[float], n: int, settings: SamplerSettings, load_eval, out: Path,
                     seed: int = 0, device="cpu", progress: bool = True, spec: dict | None = None) -> list[dict]:
    """For each w: the evaluation prompts × n // len(prompts) seeds (cached), scored; CSV, Markdown, plot, grids."""
    check(model.takes_text and model.text,
          f"{model.path} is not text-conditioned: the prompt sweep needs a model from 'guidekit train --captions'")
    check(all(w >= 0 for w in ws), f"every w must be >= 0, got {ws}")
    thresholds = Thresholds.from_dict(model.text["thresholds"])
    prompts, per_image, seeds = prompt_plan(n, seed)
    per = len(per_image) // len(prompts)
    check_spec(out, {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(),
                     "kind": "prompts", **(spec or {})})
    cond = prompt_cond(model, per_image)
    labels = torch.full((len(per_image),), NULL)
    (out / "grids").mkdir(parents=True, exist_ok=True)
    rows_at = [i for c in GRID_CLASSES for g in GROUPS
               for i, p in enumerate(prompts) if p["class"] == c and p["group"] == g][::2]
    cols = min(8, per)
    pick = torch.tensor([i * per + s for i in rows_at for s in range(cols)])
    names = [f"[{prompts[i]['group']}] {prompts[i]['prompt']}" for i in rows_at]

    nearest = nearest_seen_class(prompts)

    def draw(w: float, images: torch.Tensor) -> None:
        size = model.image_size
        title = f"prompts (rows) x seeds (columns), w = {w:g}"
        save_png(labelled(grid(images[pick], cols, scale=2), title, names, (size + 2) * 2, margin=330, max_chars=60),
                 out / "grids" / f"w{w:g}.png")

    def score(w: float, images: torch.Tensor, evaluator, ref) -> dict:
        row = score_prompts(images, prompts, per, thresholds, evaluator, ref, seed)
        write_per_prompt(out / "per_prompt" / f"w{w:g}.csv", prompts, row.pop("per_prompt"), nearest)
        return row

    rows = sweep_rows(out, "w", ws,
                      lambda w: sample_guided(model, labels, seeds, Guidance(w=w), settings, device, progress, cond),
                      lambda w: f"w{w:g}", draw, load_eval, score, FIELDS, progress, "prompts")
    (out / "results.md").write_text(format_rows(rows) + "\n")
    plot_rows(rows, out / "adherence_vs_w.png")
    return rows


def format_rows(rows: list[dict]) -> str:
    """Markdown table: FID, accuracy and adherence per group, per w."""
    cols = [c for c in FIELDS if c not in ("seconds",)]
    fmt = lambda v: "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows])


def plot_rows(rows: list[dict], path: Path) -> None:
    """Class accuracy and attribute adherence per group against w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [r["w"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120, sharex=True)
    for g in GROUPS:
        axes[0].plot(ws, [r.get(f"acc_{GROUP_KEYS[g]}") for r in rows], "o-", label=g)
        axes[1].plot(ws, [r.get(f"attr_{GROUP_KEYS[g]}") for r in rows], "o-", label=g)
    axes[0].set_ylabel("class accuracy (evaluator)")
    axes[1].set_ylabel("attribute adherence (re-measured)")
    for ax in axes:
        ax.set_xlabel("w")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
