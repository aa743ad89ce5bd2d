"""`guidekit sweep guidance`: every guidance method over its strength, on the same seeds and labels, each row measured
(FID/KID/IS, accuracy, precision/recall, NFE per image, the share of x̂0 pixels outside [−1, 1]) and the methods
compared at matched accuracy and recall, so a method that only rescales CFG's strength cannot win by calibration.

Methods and what their strength is:

- cfg: Ho & Salimans' w (the reference of every comparison: always run).
- interval: CFG guiding only where σ = √((1−ᾱ)/ᾱ) lies in (lo, hi] (Kynkäänniemi et al. 2024), one pass elsewhere.
- apg: adaptive projected guidance (Sadat et al. 2024) at weight w.
- rescale: CFG with the guided x̂0 rescaled to the conditional std by φ (Lin et al. 2023).
- cfgpp: CFG++ (Chung et al. 2024); its strength is λ ∈ [0, 1] and it runs with DDIM at the same steps.
- cfg-zero-star: CFG-Zero* (Fan et al. 2025) with its zeroed first steps.
- cads: CFG with the condition annealed (Sadat et al. 2023).
- dynamic-threshold: CFG with Imagen's dynamic thresholding of x̂0 in place of static clipping.
- autoguidance: a weaker model in place of ∅ (Karras et al. 2024).
- distilled: a guidance-distilled student (Meng et al. 2023, guidekit distill) sampled at w, one pass per step.

w = 0 is sampled once where it is the same images: cfg, interval, apg and rescale at w = 0 all run the plain
conditional model (no guidance is applied), and so does autoguidance (ε_good + 0·(ε_good − ε_bad) = ε_good: the
pipeline runs the good model alone), and cfg-zero-star with no zeroed steps. Those rows reuse cfg's w = 0 samples
(column `shared` = cfg). Methods whose w = 0 differs are sampled: cfg-zero-star with zeroed steps (the first steps
still predict zero velocity), cads (the condition is still annealed), dynamic-threshold (thresholding replaces
clipping), distilled (another network). cfgpp has no w; its λ = 0 is the unconditional model on CFG++'s path.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from guidekit.checkpoints import LoadedModel
from guidekit.diffusion.denoiser import NULL
from guidekit.errors import GuidekitError, check
from guidekit.experiments.sweep import balanced_labels, cached_samples, write_rows
from guidekit.images import grid, labelled, save_png
from guidekit.metrics.evaluate import evaluate
from guidekit.pipelines import Guidance, SamplerSettings, class_names, sample_guided

METHODS = ("cfg", "interval", "apg", "rescale", "cfgpp", "cfg-zero-star", "cads", "dynamic-threshold",
           "autoguidance", "distilled")
#: The methods that guide with ∅ (CFG's unconditional half): they need a class-conditional model.
CFG_FAMILY = METHODS[:8]
#: One panel of fronts.png each; cfg is drawn in every panel as the reference.
FAMILIES = {"CFG combination rules": ("cfg", "apg", "rescale", "cfg-zero-star", "cfgpp"),
            "where CFG applies, what it clips": ("interval", "cads", "dynamic-threshold"),
            "other guiding models": ("autoguidance", "distilled")}
FIELDS = ["method", "strength", "sampler", "shared", "n", "nfe", "clipped", "fid", "kid", "kid_std", "is", "is_std",
          "accuracy", "precision", "recall", "img_per_s", "seconds"]
TEXT_FIELDS = ("method", "sampler", "shared")
#: Kynkäänniemi et al. 2024's interval for EDM2-S on ImageNet-512 (their Table 1): no guidance at the highest noise
#: levels, where it pulls every trajectory to the class mean, nor at the lowest, where it has little left to do.
DEFAULT_INTERVAL = (0.28, 5.42)


def strength_name(method: str) -> str:
    """What a method's strength is: λ for CFG++, w for every other."""
    return "λ" if method == "cfgpp" else "w"


@dataclass
class MethodParams:
    """The fixed settings of each method (everything but its strength)."""

    interval: tuple[float, float] = DEFAULT_INTERVAL
    apg_eta: float = 0.0
    apg_momentum: float = -0.5
    apg_threshold: float = math.inf
    rescale: float = 0.7
    zero_steps: int = 1
    cads: tuple[float, float] = (0.6, 0.9)
    cads_noise: float = 0.25
    cads_psi: float = 1.0
    dynamic_threshold: float = 0.995
    guide_model: LoadedModel | None = None  # autoguidance's weaker model
    student: LoadedModel | None = None  # a guidance-distilled student (guidekit distill)

    def of(self, method: str) -> dict:
        """The settings of one method as JSON (what OUT/sweep.json records of it; inf as "inf")."""
        def num(v):
            return v if math.isfinite(v) else "inf"
        return {"interval": {"interval": [num(v) for v in self.interval]},
                "apg": {"apg_eta": self.apg_eta, "apg_momentum": self.apg_momentum,
                        "apg_threshold": num(self.apg_threshold)},
                "rescale": {"rescale": self.rescale},
                "cfg-zero-star": {"zero_steps": self.zero_steps},
                "cads": {"cads": list(self.cads), "cads_noise": self.cads_noise, "cads_psi": self.cads_psi},
                "dynamic-threshold": {"dynamic_threshold": self.dynamic_threshold},
                "autoguidance": {"guide_model": str(getattr(self.guide_model, "path", None))},
                "distilled": {"student": str(getattr(self.student, "path", None))}}.get(method, {})


def guidance_of(method: str, strength: float, p: MethodParams) -> Guidance:
    """The Guidance of one row."""
    w = float(strength)
    if method == "interval":
        return Guidance(w, interval=tuple(p.interval))
    if method == "apg":
        return Guidance(w, rule="apg", apg_eta=p.apg_eta, apg_momentum=p.apg_momentum, apg_threshold=p.apg_threshold)
    if method == "rescale":
        return Guidance(w, rescale=p.rescale)
    if method == "cfgpp":
        return Guidance(w, rule="cfgpp")
    if method == "cfg-zero-star":
        return Guidance(w, rule="cfg-zero-star", zero_steps=p.zero_steps)
    if method == "cads":
        return Guidance(w, cads=tuple(p.cads), cads_noise=p.cads_noise, cads_psi=p.cads_psi)
    if method == "dynamic-threshold":
        return Guidance(w, dynamic_threshold=p.dynamic_threshold)
    if method == "autoguidance":
        return Guidance(w, guide_model=p.guide_model)
    return Guidance(w)  # cfg, and distilled (the student's pipeline hands w to its network)


def network_of(method: str, model: LoadedModel, p: MethodParams) -> LoadedModel:
    """The model a row samples: the student for distilled, the model for every other method."""
    return p.student if method == "distilled" else model


def settings_of(method: str, settings: SamplerSettings) -> SamplerSettings:
    """A row's sampler settings: CFG++ renoises DDIM's direction term, so its rows run DDIM at the same steps (with
    the sweep's η where the sweep's sampler is DDIM, else η = 0); every other method the sweep's settings."""
    if method != "cfgpp" or settings.sampler == "ddim":
        return settings
    return dataclasses.replace(settings, sampler="ddim", eta=0.0)


def shares_plain(method: str, strength: float, p: MethodParams) -> bool:
    """Whether this row's images are cfg's w = 0 images (the plain conditional model; see the module)."""
    if strength != 0 or method in ("cfg", "cfgpp"):
        return False
    return method in ("interval", "apg", "rescale", "autoguidance") or (method == "cfg-zero-star" and p.zero_steps == 0)


def plan_rows(model: LoadedModel, methods: list[str], ws: list[float], lambdas: list[float],
              p: MethodParams) -> tuple[list[tuple[str, float]], list[str]]:
    """(method, strength) of every row in METHODS order, and notes on the strengths left out. An unconditional
    model has no CFG: its cfg reference is w = 0 alone (the model itself)."""
    conditional = model.net.config.num_classes > 0
    rows, notes = [], []
    for m in sorted(set(methods) | {"cfg"}, key=METHODS.index):
        values = sorted(set(lambdas if m == "cfgpp" else ws))
        if m == "cfg" and not conditional:
            values = [0.0]
        if m == "distilled":
            lo, hi = p.student.w_range
            out = [w for w in values if not lo <= w <= hi]
            if out:
                notes.append(f"distilled: w = {', '.join(f'{w:g}' for w in out)} left out: the student was trained "
                             f"for w in [{lo:g}, {hi:g}] (guidekit distill --w-range)")
            values = [w for w in values if lo <= w <= hi]
        rows += [(m, float(v)) for v in values]
    return rows, notes


def applicable(model: LoadedModel, guide_model: bool = False, student: bool = False) -> list[str]:
    """The default method list: every method this model can run (the CFG family on a class-conditional model, cads
    where guidekit reaches its class embedding, dynamic-threshold on pixel models), autoguidance with a guiding model,
    distilled with a student."""
    from guidekit.pipelines.denoiser import class_embedder

    conditional = model.net.config.num_classes > 0
    out = [m for m in CFG_FAMILY if conditional]
    if class_embedder(model) is None and "cads" in out:
        out.remove("cads")
    if model.latent is not None and "dynamic-threshold" in out:
        out.remove("dynamic-threshold")
    return out + ["autoguidance"] * bool(guide_model) + ["distilled"] * bool(student)


def check_rows(model: LoadedModel, plan: list[tuple[str, float]], p: MethodParams,
               settings: SamplerSettings) -> tuple[list[tuple[str, float]], list[str]]:
    """Build every row's guidance stack before any sampling, so a refused setting fails now, naming its row. Returns
    (the plan, notes): cfg-zero-star's w = 0 row is left out, with a note, where guidekit.pipelines refuses that rule
    at w = 0."""
    from guidekit.pipelines.denoiser import guided

    kept, notes = [], []
    for m, s in plan:
        if not shares_plain(m, s, p):
            try:
                guided(network_of(m, model, p), guidance_of(m, s, p), settings_of(m, settings))
            except GuidekitError as e:
                if m == "cfg-zero-star" and s == 0:
                    notes.append(f"cfg-zero-star: w = 0 not sampled (the pipeline refuses it: {e})")
                    continue
                raise GuidekitError(f"{m} at {strength_name(m)} = {s:g}: {e}") from e
        kept.append((m, s))
    return kept, notes


def missing_samples() -> torch.Tensor:
    raise GuidekitError("cfg's w = 0 samples (OUT/samples/cfg_0.safetensors) are missing while its row is finished; "
                        "delete the cfg w = 0 row from OUT/results.csv (or the folder) to sample it again")


def read_guidance_rows(path: Path) -> list[dict]:
    """Finished rows of OUT/results.csv (method, sampler and shared as text, n an int, other cells numbers or None)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        r = {k: (v if k in TEXT_FIELDS else float(v) if v not in ("", None) else None) for k, v in row.items()}
        r["n"] = int(r["n"])
        out.append(r)
    return out


def row_order(r: dict) -> tuple:
    return METHODS.index(r["method"]), r["strength"]


def sample_name(method: str, strength: float) -> str:
    """The file stem of a row's samples and grid: <method>_<strength>."""
    return f"{method}_{strength:g}"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


def check_guidance_spec(out: Path, spec: dict) -> None:
    """OUT/sweep.json: the common settings must match an earlier sweep in the folder; each method's settings must
    match where that method was recorded, and a method new to the folder is added (so --methods can grow)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.json"
    if not path.exists():
        path.write_text(json.dumps(spec, indent=2) + "\n")
        return
    old = json.loads(path.read_text())
    common = {k: v for k, v in spec.items() if k != "methods"}
    old_common = {k: v for k, v in old.items() if k != "methods"}
    check(old_common == common, f"{out} holds a sweep with other settings ({old_common}); use another --out to "
                                f"compare, or delete it to start over")
    methods = dict(old.get("methods", {}))
    for m, settings in spec["methods"].items():
        check(methods.get(m, settings) == settings,
              f"{out} holds {m} rows sampled with {methods.get(m)}, not {settings}; use another --out for the new "
              f"settings, or delete {out} to start over")
        methods[m] = settings
    if methods != old.get("methods"):
        write_json(path, {**old, "methods": methods})


def run_guidance_sweep(model: LoadedModel, methods: list[str], ws: list[float], lambdas: list[float],
                       params: MethodParams, n: int, settings: SamplerSettings, load_eval: Callable[[], tuple],
                       out: Path, seed: int = 0, device="cpu", progress: bool = True,
                       spec: dict | None = None) -> tuple[list[dict], list[str]]:
    """Sample n images per (method, strength) on the same seeds and class-balanced labels (cached under
    OUT/samples/), score each set, and write OUT/results.csv (per row), results.md, fronts.png and grids/.
    cfg is always run (the reference); `applicable` gives the default methods. Every check runs before any sampling.
    Returns (rows, notes); the rows are every finished row of the folder. Resumable: finished rows are kept and
    sampled sets reused."""
    check(not model.takes_text, "sweep guidance compares methods on class labels; for a text model use 'guidekit "
                                "sweep text' (or sweep cfg, which runs it)")
    unknown = [m for m in methods if m not in METHODS]
    check(not unknown, f"unknown method(s) {', '.join(unknown)}: use any of {', '.join(METHODS)}")
    check(params.guide_model is not None or "autoguidance" not in methods,
          "method autoguidance needs the weaker guiding model: give --guide-model DIR (a smaller or earlier "
          "checkpoint of the same conditioning), or drop autoguidance from --methods")
    check(params.student is not None or "distilled" not in methods,
          "method distilled needs a guidance-distilled student: give --student DIR (written by 'guidekit distill "
          "MODEL'), or drop distilled from --methods")
    check(params.student is None or getattr(params.student, "w_range", None) is not None,
          f"--student {getattr(params.student, 'path', '')} is not a guidance-distilled student (its config.json has "
          f"no distilled w range): give the model folder written by 'guidekit distill'")
    conditional = model.net.config.num_classes > 0
    cfg_like = [m for m in methods if m in CFG_FAMILY]
    check(conditional or not cfg_like,
          f"{model.path} is unconditional, and {', '.join(cfg_like)} guide{'s' if len(cfg_like) == 1 else ''} with a "
          f"class's conditional and unconditional predictions: use a class-conditional model, or --methods "
          f"autoguidance (with --guide-model), which guides unconditional models")
    check(conditional or bool(methods),
          f"{model.path} is unconditional: the only method that guides it is autoguidance; give --guide-model DIR")
    check(all(w >= 0 for w in ws), f"every --w must be >= 0, got {ws}")
    if "cfgpp" in methods:
        bad = [v for v in lambdas if not 0 <= v <= 1]
        check(not bad, f"--lambdas {', '.join(f'{v:g}' for v in bad)}: CFG++'s λ must lie in [0, 1] (Chung et al. "
                       f"2024: λ = 1 is the conditional x̂0); e.g. --lambdas 0.2,0.4,0.6,0.8,1")
    if params.student is not None:
        s = params.student
        check(tuple(s.sample_shape) == tuple(model.sample_shape)
              and s.net.config.num_classes == model.net.config.num_classes,
              f"the student {s.path} samples {'×'.join(map(str, s.sample_shape))} with "
              f"{s.net.config.num_classes} classes, the model {'×'.join(map(str, model.sample_shape))} with "
              f"{model.net.config.num_classes}: distil this model ('guidekit distill MODEL') to compare them")
    names = class_names(model, Guidance()) if conditional else None
    K = len(names or [])
    check(n >= max(2 * K, 10), f"--n {n} is too small: use at least {max(2 * K, 10)} (two images per class)")
    plan, notes = plan_rows(model, methods, ws, lambdas, params)
    plan, refused = check_rows(model, plan, params, settings)
    notes += refused
    present = sorted({m for m, _ in plan}, key=METHODS.index)
    spec = {"model": str(model.path), "n": n, "seed": seed, "settings": settings.to_dict(), "kind": "guidance",
            **(spec or {}), "methods": {m: params.of(m) for m in present}}
    loaded = load_eval()  # the reference is read before any sampling (a missing dataset fails first)
    check_guidance_spec(out, spec)

    labels = balanced_labels(n, K) if K else torch.full((n,), NULL, dtype=torch.int64)
    seeds = list(range(seed, seed + n))
    (out / "grids").mkdir(exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    if K:
        cols = min(8, n // K)
        pick = torch.cat([torch.nonzero(labels == c)[:cols, 0] for c in range(K)])
    else:
        cols, pick = 8, torch.arange(min(n, 16))

    def draw(m: str, s: float, images: torch.Tensor, same: str = "") -> None:
        title = f"{m} {strength_name(m)} = {s:g}" + (f" (= {same} {strength_name(same)} = {s:g})" if same else "")
        img = grid(images[pick], cols, scale=2)
        save_png(labelled(img, title, names or (), (model.image_size + 2) * 2), out / "grids" /
                 f"{sample_name(m, s)}.png")

    def sample(m: str, s: float) -> tuple[torch.Tensor, float | None, dict]:
        file = out / "samples" / f"{sample_name(m, s)}.safetensors"
        stats_file = file.with_suffix(".json")
        guidance, at = guidance_of(m, s, params), settings_of(m, settings)

        def make() -> torch.Tensor:
            stats: dict = {}
            images = sample_guided(network_of(m, model, params), labels, seeds, guidance, at, device, progress,
                                   stats=stats)
            write_json(stats_file, {"nfe": stats.get("nfe"), "clipped": stats.get("clipped"), "sampler": at.sampler})
            return images

        images, seconds = cached_samples(file, make)
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {"sampler": at.sampler}
        return images, seconds, stats

    rows = [r for r in read_guidance_rows(out / "results.csv")]
    done = {(r["method"], r["strength"]) for r in rows}
    pending = [(m, s) for m, s in plan if (m, s) not in done]
    for m, s in tqdm(pending, desc="sweep guidance (sample, score)", disable=not progress):
        if shares_plain(m, s, params):
            base = next(r for r in rows if r["method"] == "cfg" and r["strength"] == 0)
            images, _ = cached_samples(out / "samples" / f"{sample_name('cfg', 0.0)}.safetensors", missing_samples)
            draw(m, s, images, "cfg")
            row = {**base, "method": m, "shared": "cfg"}
        else:
            images, seconds, stats = sample(m, s)
            draw(m, s, images)
            metrics = evaluate(images, labels, *loaded, seed=seed)
            row = {"method": m, "strength": s, "sampler": stats.get("sampler"), "shared": "",
                   "nfe": stats.get("nfe"), "clipped": stats.get("clipped"),
                   **{k: metrics.get(k) for k in FIELDS if k in metrics},
                   "img_per_s": len(images) / seconds if seconds else None, "seconds": seconds}
        rows.append(row)  # scored as soon as sampled: a sweep cut short keeps every finished row
        write_rows(out / "results.csv", sorted(rows, key=row_order), FIELDS)
        if not progress:
            print(row_line(row), flush=True)
    rows = sorted(rows, key=row_order)
    tag = (spec or {}).get("feature_network", "FMNIST")
    (out / "results.md").write_text(guidance_report(rows, tag, notes) + "\n")
    plot_fronts(rows, out / "fronts.png", tag)
    return rows, notes


def row_line(row: dict) -> str:
    """One finished row as a log line."""
    m = row["method"]
    parts = [f"sweep guidance {m} {strength_name(m)} = {row['strength']:g}:"]
    for key, label in (("fid", "FID"), ("accuracy", "accuracy"), ("recall", "recall"), ("nfe", "NFE")):
        if isinstance(row.get(key), (int, float)):
            parts.append(f"{label} {row[key]:.4g}")
    if row.get("shared"):
        parts.append(f"(= {row['shared']} w = 0)")
    elif row.get("seconds"):
        parts.append(f"({row['seconds']:.0f} s sampling)")
    return " ".join(parts)


def by_method(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped per method (METHODS order), each sorted by strength."""
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=row_order):
        out.setdefault(r["method"], []).append(r)
    return out


def best_row(rows: list[dict]) -> dict | None:
    """The lowest-FID row (the lower strength on ties)."""
    scored = [r for r in rows if r.get("fid") is not None]
    return min(scored, key=lambda r: (r["fid"], r["strength"])) if scored else None


def at_matched(rows: list[dict], key: str, target: float | None) -> tuple[float, float] | None:
    """(FID, strength) of a method where its `key` curve (its rows in strength order, joined by straight lines)
    reaches target: FID and strength linearly interpolated between the two rows around it. Where the curve reaches
    target more than once, the lowest FID of those; None where it never does (target outside what the method's
    strengths cover) or target is None."""
    pts = [r for r in sorted(rows, key=lambda r: r["strength"]) if r.get(key) is not None and r.get("fid") is not None]
    if target is None or not pts:
        return None
    found = [(r["fid"], r["strength"]) for r in pts if r[key] == target]
    for a, b in zip(pts, pts[1:]):
        if (a[key] - target) * (b[key] - target) < 0:
            f = (target - a[key]) / (b[key] - a[key])
            found.append((a["fid"] + f * (b["fid"] - a["fid"]), a["strength"] + f * (b["strength"] - a["strength"])))
    return min(found) if found else None


def _num(v, fmt: str = ".4g") -> str:
    return "–" if v is None else format(v, fmt)


def guidance_report(rows: list[dict], tag: str = "FMNIST", notes: list[str] = ()) -> str:
    """results.md: every row; the best (lowest-FID) setting per method; each method's FID at CFG's best-FID
    accuracy and recall."""
    fid = f"FID-{tag}"
    lines = ["| method | strength | sampler | n | NFE/image | clipped | " + fid + f" | KID-{tag} | IS-{tag} | "
             "accuracy | precision | recall | img/s | seconds |", "|" + " --- |" * 14]
    for r in rows:
        kid = "–" if r.get("kid") is None else f"{r['kid']:.4f} ± {r.get('kid_std') or 0:.4f}"
        is_ = "–" if r.get("is") is None else f"{r['is']:.2f} ± {r.get('is_std') or 0:.2f}"
        shared = f" (= {r['shared']})" if r.get("shared") else ""
        lines.append(f"| {r['method']} | {strength_name(r['method'])} = {r['strength']:g}{shared} | {r.get('sampler')} "
                     f"| {r['n']} | {_num(r.get('nfe'), 'g')} | {_num(r.get('clipped'), '.3%')} | "
                     f"{_num(r.get('fid'), '.2f')} | {kid} | {is_} | {_num(r.get('accuracy'), '.3f')} | "
                     f"{_num(r.get('precision'), '.3f')} | {_num(r.get('recall'), '.3f')} | "
                     f"{_num(r.get('img_per_s'), '.1f')} | {_num(r.get('seconds'), '.1f')} |")
    groups = by_method(rows)
    lines += ["", "## Best setting per method (lowest " + fid + ")", "",
              f"| method | strength | {fid} | accuracy | recall | NFE/image | clipped |", "|" + " --- |" * 7]
    for m, rs in groups.items():
        b = best_row(rs)
        if b is not None:
            lines.append(f"| {m} | {strength_name(m)} = {b['strength']:g} | {b['fid']:.2f} | "
                         f"{_num(b.get('accuracy'), '.3f')} | {_num(b.get('recall'), '.3f')} | "
                         f"{_num(b.get('nfe'), 'g')} | {_num(b.get('clipped'), '.3%')} |")
    ref = best_row(groups.get("cfg", []))
    for key, title in (("accuracy", "accuracy"), ("recall", "recall")):
        target = None if ref is None else ref.get(key)
        lines += ["", f"## At matched {title}", ""]
        if target is None:
            lines.append(f"(no {title} measured for CFG's best-FID row: nothing to match)")
            continue
        lines += [f"Each method's {fid} where its own {title} curve (its rows in strength order, joined by straight "
                  f"lines) reaches CFG's best-FID {title}, {target:.3f} (cfg w = {ref['strength']:g}); blank where its "
                  f"strengths do not reach it.", "",
                  f"| method | {fid} at {title} {target:.3f} | strength there | best {fid} |", "| --- | --- | --- | --- |"]
        for m, rs in groups.items():
            hit = at_matched(rs, key, target)
            b = best_row(rs)
            lines.append(f"| {m} | {'' if hit is None else f'{hit[0]:.2f}'} | "
                         f"{'' if hit is None else f'{strength_name(m)} ≈ {hit[1]:.3g}'} | "
                         f"{'' if b is None else format(b['fid'], '.2f')} |")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def plot_fronts(rows: list[dict], path: Path, tag: str = "FMNIST") -> None:
    """fronts.png: a column per method family present (cfg alone when nothing else ran), FID vs recall above and FID
    vs accuracy below; every method a line through its strengths (labelled), cfg in every panel as the reference,
    with dotted lines at its best-FID recall and accuracy (where the matched columns of results.md are read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_method(rows)
    families = [(name, ms) for name, ms in FAMILIES.items() if any(m in groups and m != "cfg" for m in ms)]
    families = families or [next(iter(FAMILIES.items()))]
    ref = best_row(groups.get("cfg", []))
    fig, axes = plt.subplots(2, len(families), figsize=(4.6 * len(families), 7.6), dpi=110, squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(m for m in METHODS if m != "cfg")}
    for col, (name, members) in enumerate(families):
        for row, key in enumerate(("recall", "accuracy")):
            ax = axes[row][col]
            for m in ["cfg"] + [m for m in members if m != "cfg" and m in groups]:
                pts = [r for r in groups.get(m, []) if r.get(key) is not None and r.get("fid") is not None]
                if not pts:
                    continue
                style = dict(color="k", linestyle="--", marker="s", alpha=0.7) if m == "cfg" else \
                    dict(color=colours[m], linestyle="-", marker="o")
                ax.plot([r[key] for r in pts], [r["fid"] for r in pts], label=m if m != "cfg" else "cfg (reference)",
                        **style)
                for r in pts:
                    ax.annotate(f"{r['strength']:g}", (r[key], r["fid"]), textcoords="offset points", xytext=(3, 3),
                                fontsize=6, color=style["color"])
            if ref is not None and ref.get(key) is not None:
                ax.axvline(ref[key], color="k", linestyle=":", linewidth=0.8)
            if not ax.lines:
                ax.text(0.5, 0.5, f"{key} not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(key + (" (diversity)" if key == "recall" else " of the requested class"))
            ax.set_ylabel(f"FID-{tag} (lower = closer to data)")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(name, fontsize=10)
            if ax.lines:
                ax.legend(fontsize=7)
    fig.suptitle("Guidance methods over their strength (labels: w, or λ for cfgpp)", fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
