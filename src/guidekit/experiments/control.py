"""ControlNet sampling and evaluation (Zhang et al. 2023): hints of test images, adherence, FID, sweeps."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from guidekit.checkpoints import LoadedControlNet, LoadedModel
from guidekit.conditions import Condition
from guidekit.data.dataset import ImageDataset
from guidekit.diffusion.denoiser import NULL
from guidekit.errors import check
from guidekit.metrics.evaluate import METRICS, evaluate
from guidekit.pipelines import (Guidance, SamplerSettings, condition_of, control_samples, extract_hints, hint_image,
                                sample_guided)


def balanced_indices(labels: torch.Tensor, n: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """n dataset indices whose labels run 0, 1, …, K−1, 0, 1, … (each class a seeded random choice)."""
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    want = torch.arange(n) % num_classes
    out = torch.empty(n, dtype=torch.long)
    for c in range(num_classes):
        slots = torch.nonzero(want == c)[:, 0]
        pool = perm[labels[perm] == c]
        check(len(pool) >= len(slots), f"class {c} has {len(pool)} images but --n {n} needs {len(slots)} of "
                                       f"each; use a smaller --n or a larger dataset")
        out[slots] = pool[:len(slots)]
    return out


@dataclass
class ControlSet:
    """Source images, their labels and one hint per condition: what a control evaluation samples from."""

    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    labels: torch.Tensor  # (N,) the source images' classes
    hints: list[torch.Tensor]  # one (N, C_k, H, W) hint in [0, 1] per condition
    conditions: list[Condition]
    index: torch.Tensor  # the images' dataset indices
    prompts: list[str] | None = None  # on a text base, one prompt per image (with_prompts); None: class labels
    wanted: list[dict] | None = None  # the attribute levels each prompt asks for
    thresholds: object = None  # the text base's attribute Thresholds, which decide whether an output adheres


def control_set(dataset: ImageDataset, conditions: Sequence[Condition], n: int, seed: int = 0) -> ControlSet:
    """n class-balanced images of dataset (seeded choice) and their hints under each condition."""
    check(isinstance(n, int) and 1 <= n <= len(dataset),
          f"--n {n} must be between 1 and the {len(dataset)} images of {dataset.name}")
    if dataset.labels is not None and dataset.num_classes > 0:
        index = balanced_indices(dataset.labels, n, dataset.num_classes, seed)
        labels = dataset.labels[index]
    else:
        index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
        labels = torch.full((n,), NULL)
    images = dataset.images(index)
    hints = [extract_hints(c, images, seed) for c in conditions]
    return ControlSet(images, labels, hints, list(conditions), index)


def with_prompts(cset: ControlSet, model: LoadedModel) -> ControlSet:
    """cset with a prompt per image for a text base: its class's first training paraphrase, "dark" and "light" in
    turn per round of classes (brightness, which an edge or sketch hint leaves open), so one sweep measures the
    hint's, the class's and the attribute's adherence together."""
    from guidekit.text.attributes import Thresholds
    from guidekit.text.captions import CLASS_PHRASES, WORDS, class_prompts

    K = len(CLASS_PHRASES)
    labels = cset.labels.tolist()
    levels = [("low", "high")[(i // K) % 2] for i in range(len(labels))]
    prompts = class_prompts(labels, [[WORDS["brightness"][lvl][0]] for lvl in levels])
    thresholds = Thresholds.from_dict((model.text or {}).get("thresholds"))
    return dataclasses.replace(cset, prompts=prompts, wanted=[{"brightness": lvl} for lvl in levels],
                               thresholds=thresholds)


def set_cond(model: LoadedModel, cset: ControlSet) -> dict:
    """The prompts' cond ({"text": ...}) of a set made by with_prompts, else {} (class labels)."""
    if cset.prompts is None:
        return {}
    from guidekit.pipelines import prompt_cond

    return prompt_cond(model, cset.prompts)


def adherence_prefixes(conditions: Sequence[Condition]) -> list[str]:
    """Column prefix of each condition's scores: none for one, its name for several (plus an index if repeated)."""
    if len(conditions) == 1:
        return [""]
    names = [c.name for c in conditions]
    return [f"{n}_" if names.count(n) == 1 else f"{n}{i}_" for i, n in enumerate(names)]


def adherence_keys(conditions: Sequence[Condition]) -> list[str]:
    """The adherence columns, headline first (edge_f1 for canny/sketch, iou for mask, l2 for lowres)."""
    return [p + k for p, c in zip(adherence_prefixes(conditions), conditions) for k in c.higher_is_better]


def headline(conditions: Sequence[Condition]) -> tuple[str, bool]:
    """The first condition's main adherence score and whether higher is better."""
    key = next(iter(conditions[0].higher_is_better))
    return adherence_prefixes(conditions)[0] + key, conditions[0].higher_is_better[key]


def adherence(conditions: Sequence[Condition], hints: Sequence[torch.Tensor], samples: torch.Tensor) -> dict:
    """Mean of each condition's per-image adherence scores of samples against its hint."""
    out = {}
    for prefix, cond, hint in zip(adherence_prefixes(conditions), conditions, hints):
        for k, v in cond.adherence(hint, samples).items():
            out[prefix + k] = float(v.double().mean())
    return out


def score_control(samples: torch.Tensor, cset: ControlSet, evaluator, ref, seed: int = 0) -> dict:
    """Adherence to the hints plus FID/KID/IS and accuracy of the source labels (metrics.evaluate); with prompts,
    also attr_brightness: the share of outputs on the prompt's side of their class's median brightness."""
    out = {**adherence(cset.conditions, cset.hints, samples),
           **evaluate(samples, cset.labels, evaluator, ref, seed=seed)}
    if cset.wanted is not None:
        from guidekit.text.attributes import adherence_of, measure

        out["attr_brightness"] = adherence_of(measure(samples), cset.wanted, cset.labels.tolist(),
                                              cset.thresholds)["brightness"]
    return out


def evaluate_control(model: LoadedModel, controlnets: Sequence[LoadedControlNet], dataset: ImageDataset, n: int,
                     scale, settings: SamplerSettings, evaluator, ref, device: torch.device | str = "cpu",
                     seed: int = 0, guidance: Guidance | None = None, hint_uncond: bool = True,
                     progress: bool = False) -> dict:
    """Sample n class-balanced test images' hints at their labels with the ControlNets and score the samples."""
    cset = control_set(dataset, [condition_of(c) for c in controlnets], n, seed)
    seeds = list(range(seed, seed + n))
    start = time.time()
    samples = control_samples(model, controlnets, cset.hints, cset.labels, seeds, scale, settings, device, guidance,
                              hint_uncond=hint_uncond, progress=progress)
    seconds = time.time() - start
    return {**score_control(samples, cset, evaluator, ref, seed), "img_per_s": n / seconds, "seconds": seconds}


def score_keys(cset: ControlSet) -> list[str]:
    """The columns beside the metrics: adherence to the hints (headline first), attr_brightness with prompts."""
    return [*adherence_keys(cset.conditions), *(["attr_brightness"] if cset.wanted is not None else [])]


def fields(key: str, cset: ControlSet) -> list[str]:
    """CSV columns of a control sweep keyed by `key`."""
    return [key, "n", *score_keys(cset), *METRICS, "img_per_s", "seconds"]


def condition_grid(cset: ControlSet, samples: torch.Tensor, rows: int = 10) -> torch.Tensor:
    """(rows·(2+k), C, H, W) images for a grid with columns source | hint(s) | output, one source per row."""
    cells, c = [], cset.images.shape[1]
    for i in range(min(rows, len(samples))):
        cells += [cset.images[i], *(hint_image(h[i], c) for h in cset.hints), samples[i].clamp(-1, 1)]
    return torch.stack(cells)


def save_condition_grid(cset: ControlSet, samples: torch.Tensor, names: list[str] | None, title: str,
                        path: Path, rows: int = 10) -> None:
    """PNG of source | hint(s) | output for the first `rows` images, rows labelled by class."""
    from guidekit.images import grid, labelled, save_png

    cols = 2 + len(cset.hints)
    labels = [names[y] if names and y != NULL else "" for y in cset.labels[:rows].tolist()]
    size = cset.images.shape[-1]
    save_png(labelled(grid(condition_grid(cset, samples, rows), cols, scale=2), title, labels, (size + 2) * 2),
             path)


def _prepare(out: Path, kind: dict, model: LoadedModel, cset: ControlSet, seed: int, settings: SamplerSettings,
             spec: dict | None, guidance: Guidance | None, base_null: bool) -> tuple:
    """Record a control sweep's settings in OUT/sweep.json, make OUT/grids/, and return its seeds, labels, guidance
    (base_null: the model sees ∅ and the hint decides the class) and the prompts' cond."""
    from guidekit.experiments.sweep import check_spec

    n = len(cset.labels)
    check_spec(out, {**kind, "model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(),
                     **(spec or {})})
    (out / "grids").mkdir(exist_ok=True)
    guidance = guidance or Guidance()
    guidance = dataclasses.replace(guidance, base_null=base_null or guidance.base_null)
    return list(range(seed, seed + n)), cset.labels, guidance, set_cond(model, cset)


def run_control_sweep(model: LoadedModel, controlnets: Sequence[LoadedControlNet], scales: list[float],
                      cset: ControlSet, settings: SamplerSettings, load_eval: Callable[[], tuple], out: Path,
                      seed: int = 0, device="cpu", progress: bool = True, guidance: Guidance | None = None,
                      hint_uncond: bool = True, spec: dict | None = None, base_null: bool = False) -> list[dict]:
    """One row per control scale (0 = the base model): adherence, FID/KID/IS, accuracy; resumable by row."""
    from guidekit.experiments.sweep import sweep_rows

    check(all(s >= 0 for s in scales), f"every control scale must be >= 0, got {scales}")
    seeds, labels, guidance, cond = _prepare(out, {"kind": "controlnet scale"}, model, cset, seed, settings, spec,
                                             guidance, base_null)

    def sample_at(s: float) -> torch.Tensor:
        return control_samples(model, controlnets, cset.hints, labels, seeds, s, settings, device, guidance,
                               hint_uncond=hint_uncond, cond=cond)

    def draw(s: float, images: torch.Tensor) -> None:
        save_condition_grid(cset, images, model.class_names, f"control scale {s:g}", out / "grids" / f"scale{s:g}.png")

    rows = sweep_rows(out, "scale", scales, sample_at, lambda s: f"scale{s:g}", draw, load_eval,
                      lambda v, images, ev, ref: score_control(images, cset, ev, ref, seed),
                      fields("scale", cset), progress, "control scale")
    finish(rows, out, "scale", cset, spec, "adherence_vs_scale.png", "ControlNet control scale")
    return rows


def run_control_curve(model: LoadedModel, checkpoints: dict[int, Path], load: Callable[[Path], LoadedControlNet],
                      cset: ControlSet, scale: float, settings: SamplerSettings, load_eval: Callable[[], tuple],
                      out: Path, seed: int = 0, device="cpu", progress: bool = True, guidance: Guidance | None = None,
                      hint_uncond: bool = True, spec: dict | None = None, base_null: bool = False) -> list[dict]:
    """One row per training step (0 = the zero-initialized ControlNet, exactly the base model); resumable by row."""
    from guidekit.experiments.sweep import sweep_rows

    seeds, labels, guidance, cond = _prepare(out, {"kind": "controlnet training curve", "scale": scale}, model, cset,
                                             seed, settings, spec, guidance, base_null)

    def sample_at(step: float) -> torch.Tensor:
        if step == 0:
            return sample_guided(model, labels, seeds, guidance, settings, device, cond=cond)
        net = load(checkpoints[int(step)])
        check(net.condition == cset.conditions[0].name, f"{net.path} was trained on condition {net.condition!r}, "
              f"the run's newest checkpoint on {cset.conditions[0].name!r}; sweep one run at a time")
        return control_samples(model, [net], cset.hints, labels, seeds, scale, settings, device, guidance,
                               hint_uncond=hint_uncond, cond=cond)

    def draw(step: float, images: torch.Tensor) -> None:
        save_condition_grid(cset, images, model.class_names, f"step {int(step)}",
                            out / "grids" / f"step-{int(step):08d}.png")

    steps = [0, *sorted(checkpoints)]
    rows = sweep_rows(out, "step", steps, sample_at, lambda s: f"step-{int(s):08d}", draw, load_eval,
                      lambda v, images, ev, ref: score_control(images, cset, ev, ref, seed),
                      fields("step", cset), progress, "checkpoints")
    finish(rows, out, "step", cset, spec, "adherence_vs_step.png",
           "ControlNet training (step 0 = zero convolutions = the base model)")
    return rows


def finish(rows: list[dict], out: Path, key: str, cset: ControlSet, spec: dict | None, plot: str,
           title: str) -> None:
    """results.md and the adherence/FID plot of a control sweep."""
    from guidekit.experiments.plots import adherence_and_fid
    from guidekit.metrics.evaluate import format_table

    tag = (spec or {}).get("feature_network", "FMNIST")
    metric, higher = headline(cset.conditions)
    (out / "results.md").write_text(format_table(rows, key=key, tag=tag, extra=tuple(score_keys(cset))) + "\n")
    adherence_and_fid(rows, out / plot, key, metric, higher, tag, title)
