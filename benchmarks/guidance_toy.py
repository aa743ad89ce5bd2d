"""Every guidance method of guidekit on a 2-D toy with an exact density (after Karras et al. 2024, Fig. 1).

Data: three classes, each a "tree" of thin, elongated Gaussian branches with full covariances (a trunk, two branches,
four twigs; 7 components a class, 21 in all, weights 0.3 / 0.2 / 0.075), inside [-1, 1]². The denoiser is exact:
for x0 ~ Σ_k π_k N(μ_k, Σ_k) the noisy marginal is p_t = Σ_k π_k N(√ᾱ μ_k, ᾱ Σ_k + (1 − ᾱ) I), and
ε(x_t, t, c) = −√(1 − ᾱ) ∇ log p_t(x_t | c), in float64. cond["y"] picks a class, ∅ (NULL = −1) is the mixture over
all classes (uniform class prior). The "bad" model of autoguidance is the same mixture with every covariance
inflated (Σ → 2Σ + 0.02² I by default): a weaker model of the same conditioning. The three trunks start behind
the origin, so the classes overlap at a shared root (true samples: 96 % classified as their own class).

Methods (each over --w, CFG++ over --lambdas): CFG; CFG + guidance interval σ ∈ (0.28, 5.42]; APG (η 0, momentum
−0.5, no norm cap); CFG rescale (φ 0.7); CFG-Zero* (CFGZeroStar rule + ZeroInit, 1 zeroed step); CFG++ (with
CFGPPStep); CADS above CFG (τ 0.6, 0.9, s 0.25, ψ 1); CFG + dynamic thresholding (p 0.995); autoguidance.

CADS anneals a class embedding: labels are embedded one-hot (∅ → 0) and the toy denoiser reads
cond["class_embedding"] in the rows whose label is not ∅ as a soft class prior, w_c = max(e_c, 0) / Σ max(e, 0)
(uniform where every entry is <= 0). A clean one-hot embedding is therefore exactly the class-conditional model.

Every method samples the same x_T with DDIM (η = 0) on a linear schedule (T = 1000) at --steps levels uniform in
log-SNR (--spacing logsnr; with trailing spacing 32 unguided DDIM steps leave ~10 % of the samples off the thin
twigs, a discretisation error the guidance methods would then be credited with fixing) and is scored under the true
class-conditional density:
  log p     mean log p(x | c) of the samples (higher = closer to the data manifold), and its median (CFG
            rescale's per-image std over two coordinates can vanish and fling a few samples far out: see the median)
  outside   fraction of samples with log p(x | c) below the 1st percentile of true samples' (true samples: 1 %)
  acc       fraction whose most probable class under the exact p(c | x) is the requested one
  modes     fraction of the 21 components that get at least 1/4 of their expected share of the class's samples
            (counting only samples inside the 1 % region)
  recall    Kynkäänniemi et al. 2019's recall (k = 3): the share of true samples inside the samples' k-NN balls
  nn ratio  mean distance from true samples to the nearest sample, over the same for an independent true set
            (1 = covers the class like the truth; > 1 = regions left empty: lost diversity)
  NFE       network evaluations per sample (CountedDenoiser; autoguidance counts both models)

    python benchmarks/guidance_toy.py [--n 2000] [--steps 32] [--w 0.5,1,2,3,4] [--lambdas 0.2,0.4,0.6,0.8,1]
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from guidekit.diffusion import NULL, NoiseSchedule
from guidekit.diffusion.denoiser import CLASS_EMBEDDING, CountedDenoiser
from guidekit.diffusion.schedule import SPACINGS
from guidekit.guidance import (APG, CADS, Autoguidance, CFGPlusPlus, CFGPPStep, CFGZeroStar, ClassifierFreeGuidance,
                               DynamicThreshold, GuidanceInterval, Rescale, ZeroInit)
from guidekit.sampling import DDIM
from guidekit.sampling.loop import sample

NUM_CLASSES = 3
LOG_2PI = math.log(2 * math.pi)


def tree(c: int, r0: float = -0.05, trunk: float = 0.3, spread: float = 0.75, branch: float = 0.45,
         twig: float = 0.25, twig_spread: float = 0.5) -> list[tuple[float, tuple, tuple, float]]:
    """Class c's branches as (weight, start, end, cross-section std): a trunk, two branches and four twigs. The
    three trunks start behind the origin (r0 < 0), so the classes overlap at a shared root."""
    theta = math.pi / 2 + 2 * math.pi * c / NUM_CLASSES

    def seg(start, angle, length):
        return start, (start[0] + length * math.cos(angle), start[1] + length * math.sin(angle))

    base = seg((r0 * math.cos(theta), r0 * math.sin(theta)), theta, trunk)
    out = [(0.3, *base, 0.04)]
    for side in (-1, 1):
        a_branch = theta + side * spread
        limb = seg(base[1], a_branch, branch)
        out.append((0.2, *limb, 0.02))
        for twig_side in (-1, 1):
            out.append((0.075, *seg(limb[1], a_branch + twig_side * twig_spread, twig), 0.012))
    return out


class ToyMixture:
    """A class-conditional 2-D Gaussian mixture (full covariances) and its exact ε(x_t, t, cond), on (B, 2, 1, 1)."""

    def __init__(self, schedule: NoiseSchedule, means, covs, klass, weights):
        self.schedule = schedule
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, 2)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)  # (K, 2, 2)
        self.klass = torch.as_tensor(klass, dtype=torch.long)  # (K,) the class of each component
        self.weights = torch.as_tensor(weights, dtype=torch.float64)  # (K,) summing to 1 within each class

    @classmethod
    def trees(cls, schedule: NoiseSchedule) -> ToyMixture:
        means, covs, klass, weights = [], [], [], []
        for c in range(NUM_CLASSES):
            for w, (x0, y0), (x1, y1), width in tree(c):
                phi, length = math.atan2(y1 - y0, x1 - x0), math.hypot(x1 - x0, y1 - y0)
                rot = torch.tensor([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]],
                                   dtype=torch.float64)
                covs.append(rot @ torch.diag(torch.tensor([(length / 4) ** 2, width ** 2],
                                                          dtype=torch.float64)) @ rot.T)
                means.append([(x0 + x1) / 2, (y0 + y1) / 2])
                klass.append(c)
                weights.append(w)
        return cls(schedule, means, torch.stack(covs), klass, weights)

    def inflated(self, scale: float, add_std: float) -> ToyMixture:
        """The same mixture with every covariance Σ → scale·Σ + add_std²·I (autoguidance's weaker model)."""
        covs = scale * self.covs + add_std ** 2 * torch.eye(2, dtype=torch.float64)
        return ToyMixture(self.schedule, self.means, covs, self.klass, self.weights)

    def class_prior(self, cond, b: int) -> torch.Tensor:
        """(B, C) class weights: one-hot for a label, uniform for ∅, the clipped normalised class embedding where
        cond["class_embedding"] is given and the label is not ∅."""
        uniform = torch.full((b, NUM_CLASSES), 1.0 / NUM_CLASSES, dtype=torch.float64)
        y = cond.get("y") if cond else None
        if y is None:
            return uniform
        y = y.cpu()
        prior = torch.nn.functional.one_hot(y.clamp(min=0), NUM_CLASSES).double()
        if CLASS_EMBEDDING in cond:
            e = cond[CLASS_EMBEDDING].detach().cpu().double().clamp(min=0)
            total = e.sum(1, keepdim=True)
            prior = torch.where(total > 0, e / total.clamp(min=1e-300), uniform)
        return torch.where((y == NULL)[:, None], uniform, prior)

    def log_weights(self, prior: torch.Tensor) -> torch.Tensor:
        """(B, K) log π_k of the mixture under a (B, C) class prior (−inf for components of excluded classes)."""
        return (prior[:, self.klass] * self.weights).log()

    def terms(self, x: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log N(x; √ᾱ μ_k, ᾱ Σ_k + (1 − ᾱ) I) (B, K) and C_k⁻¹ (x − √ᾱ μ_k) (B, K, 2) for x (B, 2), ᾱ (B,)."""
        ab = ab[:, None]
        a = ab * self.covs[:, 0, 0] + 1 - ab
        b = ab * self.covs[:, 0, 1]
        d = ab * self.covs[:, 1, 1] + 1 - ab
        det = a * d - b * b
        diff = x[:, None, :] - ab.sqrt()[..., None] * self.means  # (B, K, 2)
        u, v = diff[..., 0], diff[..., 1]
        s0, s1 = (d * u - b * v) / det, (a * v - b * u) / det
        logn = -0.5 * (u * s0 + v * s1) - 0.5 * det.log() - LOG_2PI
        return logn, torch.stack([s0, s1], -1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        b = x.shape[0]
        ab = self.schedule.alpha_bar(t.detach().cpu()).double()
        logn, solve = self.terms(x.detach().cpu().double().reshape(b, 2), ab)
        r = torch.softmax(logn + self.log_weights(self.class_prior(cond, b)), dim=1)
        eps = (1 - ab)[:, None].sqrt() * (r[..., None] * solve).sum(1)  # −√(1−ᾱ)·∇ log p_t
        return eps.view(b, 2, 1, 1).to(device=x.device, dtype=x.dtype)

    def log_prob_t(self, x: torch.Tensor, ab: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p_t(x | y) (N,) for x (N, 2) at levels ᾱ (N,); y = NULL is the mixture over classes."""
        logn, _ = self.terms(x.double(), ab.double())
        return torch.logsumexp(logn + self.log_weights(self.class_prior({"y": y}, len(x))), dim=1)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The exact data log-density log p(x0 | y) (N,)."""
        return self.log_prob_t(x, torch.ones(len(x), dtype=torch.float64), y)

    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x0 | c) for every class, (N, C)."""
        return torch.stack([self.log_prob(x, torch.full((len(x),), c)) for c in range(NUM_CLASSES)], 1)

    def component(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The most responsible component of class y for each clean x (N,)."""
        logn, _ = self.terms(x.double(), torch.ones(len(x), dtype=torch.float64))
        return (logn + self.log_weights(self.class_prior({"y": y}, len(x)))).argmax(1)

    def sample(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """True samples x0 ~ p(x0 | y) (N, 2)."""
        probs = self.log_weights(self.class_prior({"y": y}, len(y))).exp()
        k = torch.multinomial(probs, 1, generator=generator)[:, 0]
        z = torch.randn(len(y), 2, generator=generator, dtype=torch.float64)
        return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z[..., None])[..., 0]


class BatchNoise:
    """One generator for the whole batch (the loop needs len() and randn_like(); DDIM η = 0 never draws)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.g = n, torch.Generator().manual_seed(seed)

    def __len__(self):
        return self.n

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.g, dtype=x.dtype)


def one_hot_embed(y: torch.Tensor) -> torch.Tensor:
    """CADS's class embedding for the toy: one-hot, ∅ → zeros."""
    return torch.where((y == NULL)[:, None], torch.zeros(len(y), NUM_CLASSES, dtype=torch.float64),
                       torch.nn.functional.one_hot(y.clamp(min=0), NUM_CLASSES).double())


# name, label, strength kind ("w" or "λ")
METHODS = [("unguided", "unguided (conditional)", "w"), ("cfg", "CFG", "w"), ("interval", "CFG + interval", "w"),
           ("apg", "APG", "w"), ("rescale", "CFG rescale", "w"), ("cfg-zero", "CFG-Zero*", "w"),
           ("cfgpp", "CFG++", "λ"), ("cads", "CADS + CFG", "w"), ("dynthresh", "CFG + dyn. threshold", "w"),
           ("autoguidance", "autoguidance", "w")]


def build(method: str, w: float, good: ToyMixture, bad: ToyMixture, schedule: NoiseSchedule, a):
    """(denoiser, step, counters) of one method at strength w (λ for CFG++)."""
    g = CountedDenoiser(good)
    counters, step = [g], DDIM(schedule)
    if method == "unguided":
        den = ClassifierFreeGuidance(g, 0.0)
    elif method == "cfg":
        den = ClassifierFreeGuidance(g, w)
    elif method == "interval":
        den = ClassifierFreeGuidance(g, w, interval=GuidanceInterval(schedule, *a.interval))
    elif method == "apg":
        den = ClassifierFreeGuidance(g, w, rule=APG(schedule, eta=0.0, momentum=a.apg_momentum,
                                                    threshold=a.apg_threshold))
    elif method == "rescale":
        den = ClassifierFreeGuidance(g, w, rule=Rescale(schedule, a.rescale_phi))
    elif method == "cfg-zero":
        den = ZeroInit(ClassifierFreeGuidance(g, w, rule=CFGZeroStar(schedule)), schedule, steps=a.zero_steps)
    elif method == "cfgpp":
        rule = CFGPlusPlus()
        den, step = ClassifierFreeGuidance(g, w, rule=rule), CFGPPStep(schedule, rule)
    elif method == "cads":
        den = CADS(ClassifierFreeGuidance(g, w), schedule, *a.cads_tau, noise_scale=a.cads_noise, psi=1.0,
                   embed=one_hot_embed)
    elif method == "dynthresh":
        den = DynamicThreshold(ClassifierFreeGuidance(g, w), schedule, p=0.995)
    elif method == "autoguidance":
        b = CountedDenoiser(bad)
        counters.append(b)
        den = Autoguidance(g, b, w)
    else:
        raise ValueError(method)
    return den, step, counters


class Reference:
    """What the scores compare against: per-class log p thresholds (1st percentile of 20,000 true samples), two
    independent true sets of n per class, and the true-to-true nearest-neighbour distance."""

    def __init__(self, mix: ToyMixture, n: int, seed: int):
        g = torch.Generator().manual_seed(seed + 1)
        big_y = torch.arange(NUM_CLASSES).repeat_interleave(20000)
        big = mix.sample(big_y, g)
        lp = mix.log_prob(big, big_y)
        self.threshold = torch.stack([lp[big_y == c].quantile(0.01) for c in range(NUM_CLASSES)])
        self.y = torch.arange(NUM_CLASSES).repeat_interleave(n)
        self.true1, self.true2 = mix.sample(self.y, g), mix.sample(self.y, g)
        self.base = [self.nn(self.true1[self.y == c], self.true2[self.y == c]) for c in range(NUM_CLASSES)]

    @staticmethod
    def nn(ref: torch.Tensor, x: torch.Tensor) -> float:
        """Mean over ref of the distance to the nearest x."""
        return float(torch.cdist(ref, x).min(1).values.mean())


def recall(true: torch.Tensor, x: torch.Tensor, k: int = 3) -> float:
    """Kynkäänniemi et al. 2019's recall: the fraction of true points inside the union of balls around the samples,
    each of radius its distance to its k-th nearest other sample."""
    radius = torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # the 0th is the sample itself
    return float((torch.cdist(true, x) <= radius[None]).any(1).double().mean())


def measure(mix: ToyMixture, ref: Reference, x: torch.Tensor, y: torch.Tensor) -> dict:
    lp = mix.log_prob(x, y)
    inside = lp >= ref.threshold[y]
    comp = mix.component(x, y)
    covered = 0
    for k in range(len(mix.weights)):  # only samples inside the class's 1 % region count for a component
        n_c = int((y == mix.klass[k]).sum())
        covered += int(((comp == k) & inside).sum()) >= 0.25 * float(mix.weights[k]) * n_c
    per_class = [(ref.true1[ref.y == c], x[y == c]) for c in range(NUM_CLASSES)]
    ratio = sum(ref.nn(t, g) / ref.base[c] for c, (t, g) in enumerate(per_class)) / NUM_CLASSES
    return {"logp": float(lp.mean()), "logp_median": float(lp.median()), "outside": float((~inside).double().mean()),
            "acc": float((mix.class_log_probs(x).argmax(1) == y).double().mean()),
            "modes": covered / len(mix.weights), "recall": sum(recall(t, g) for t, g in per_class) / NUM_CLASSES,
            "nn_ratio": ratio}


def floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="samples per class")
    p.add_argument("--steps", type=int, default=32, help="DDIM steps")
    p.add_argument("--spacing", default="logsnr", choices=SPACINGS, help="timestep spacing (trailing leaves ~10 %% of unguided samples "
                                                       "off the thin twigs at 32 steps: discretisation error)")
    p.add_argument("--out", default="runs/guidance-toy", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--w", type=floats, default=[0.5, 1.0, 2.0, 3.0, 4.0], help="guidance weights (w = s − 1)")
    p.add_argument("--lambdas", type=floats, default=[0.2, 0.4, 0.6, 0.8, 1.0], help="CFG++ λ values in [0, 1]")
    p.add_argument("--methods", default=",".join(m for m, _, _ in METHODS), help="comma-separated subset")
    p.add_argument("--show-w", type=float, default=3.0, help="the w drawn in samples.png (the nearest in --w)")
    p.add_argument("--show-lambda", type=float, default=0.8, help="the λ drawn in samples.png")
    p.add_argument("--bad-scale", type=float, default=2.0, help="autoguidance's bad model: Σ → scale·Σ + std²·I")
    p.add_argument("--bad-std", type=float, default=0.02)
    p.add_argument("--interval", type=floats, default=[0.28, 5.42], help="guidance interval σ_lo,σ_hi (EDM2's)")
    p.add_argument("--apg-momentum", type=float, default=-0.5)
    p.add_argument("--apg-threshold", type=float, default=math.inf)
    p.add_argument("--rescale-phi", type=float, default=0.7)
    p.add_argument("--zero-steps", type=int, default=1, help="CFG-Zero*'s zeroed first steps")
    p.add_argument("--cads-tau", type=floats, default=[0.6, 0.9])
    p.add_argument("--cads-noise", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=1, help="torch threads while sampling (the toy's tensors are "
                                                         "small: one thread is fastest, and unharmed by other load)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    unknown = set(a.methods.split(",")) - {m for m, _, _ in METHODS}
    if unknown:
        p.error(f"unknown --methods {sorted(unknown)}; choose from {','.join(m for m, _, _ in METHODS)}")
    if len(a.interval) != 2 or len(a.cads_tau) != 2:
        p.error("--interval and --cads-tau take two numbers: LO,HI")
    return a


def run(a) -> tuple[list[dict], dict, ToyMixture, Reference]:
    """Every (method, strength) row, and the samples of each."""
    schedule = NoiseSchedule.linear(1000)
    good = ToyMixture.trees(schedule)
    bad = good.inflated(a.bad_scale, a.bad_std)
    ref = Reference(good, a.n, a.seed)
    y = ref.y
    total = len(y)
    x_T = torch.randn(total, 2, 1, 1, generator=torch.Generator().manual_seed(a.seed), dtype=torch.float64)
    levels = schedule.timesteps(a.steps, a.spacing)
    chosen = [m for m in METHODS if m[0] in a.methods.split(",")]
    jobs = []
    for m in chosen:
        strengths = [0.0] if m[0] == "unguided" else (a.lambdas if m[2] == "λ" else a.w)
        jobs += [(m, s) for s in strengths]
    rows = [{"method": "truth", "label": "true samples", "kind": "", "strength": math.nan, "nfe": 0.0,
             **measure(good, ref, ref.true2, y)}]
    samples = {("truth", math.nan): ref.true2}
    for (name, label, kind), s in tqdm(jobs, desc="guidance toy", disable=a.no_progress):
        den, step, counters = build(name, s, good, bad, schedule, a)
        x = sample(den, x_T, levels, {"y": y}, step, BatchNoise(total, a.seed)).reshape(total, 2)
        check_finite = bool(torch.isfinite(x).all())
        row = {"method": name, "label": label, "kind": kind, "strength": s,
               "nfe": sum(c.images for c in counters) / total}
        row.update(measure(good, ref, x, y) if check_finite else dict.fromkeys(METRICS, math.nan))
        rows.append(row)
        samples[(name, s)] = x
    return rows, samples, good, ref


METRICS = ["logp", "logp_median", "outside", "acc", "modes", "recall", "nn_ratio"]
COLUMNS = ["method", "strength", *METRICS, "nfe"]


def table(rows: list[dict]) -> str:
    head = ("| method | strength | mean log p(x\\|c) | median | outside 1 % region | class acc | modes | recall | "
            "NN ratio | NFE |")
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        strength = "" if math.isnan(r["strength"]) else f"{r['kind']} = {r['strength']:g}"
        lines.append(f"| {r['label']} | {strength} | {r['logp']:.3f} | {r['logp_median']:.3f} | "
                     f"{100 * r['outside']:.1f} % | {100 * r['acc']:.1f} % | {r['modes']:.2f} | {r['recall']:.3f} | "
                     f"{r['nn_ratio']:.2f} | {r['nfe']:g} |")
    return "\n".join(lines)


def nearest(values: list[float], target: float) -> float:
    return min(values, key=lambda v: abs(v - target))


CLASS_COLOURS = ["tab:red", "tab:blue", "tab:green"]


def plot(rows, samples, mix: ToyMixture, ref: Reference, a, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim = 1.05
    grid = torch.linspace(-lim, lim, 240, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    mix_lp = mix.log_prob(pts, torch.full((len(pts),), NULL)).view(240, 240)
    class_lp = mix.class_log_probs(pts).view(240, 240, NUM_CLASSES)
    panels = [("truth", math.nan)]
    for name, _, kind in METHODS:
        if not any(r["method"] == name for r in rows):
            continue
        strengths = sorted({r["strength"] for r in rows if r["method"] == name})
        panels.append((name, strengths[0] if name == "unguided" else
                       nearest(strengths, a.show_lambda if kind == "λ" else a.show_w)))
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(4 * cols, 4 * math.ceil(len(panels) / cols)),
                             squeeze=False)
    by_key = {(r["method"], r["strength"]): r for r in rows}
    for ax, key in zip(axes.flat, panels):
        r = by_key[key] if key[0] != "truth" else rows[0]
        ax.imshow(mix_lp.clamp(min=-8).numpy(), extent=(-lim, lim, -lim, lim), origin="lower", cmap="Greys",
                  alpha=0.6)
        x = samples[key]
        for c in range(NUM_CLASSES):
            ax.contour(gx.numpy(), gy.numpy(), class_lp[..., c].numpy(), levels=[float(ref.threshold[c])],
                       colors=CLASS_COLOURS[c], linewidths=0.6)
            pts_c = x[ref.y == c].numpy()
            ax.scatter(pts_c[:, 0], pts_c[:, 1], s=1.5, c=CLASS_COLOURS[c], alpha=0.5, linewidths=0)
        strength = "" if math.isnan(r["strength"]) else f", {r['kind']} = {r['strength']:g}"
        ax.set_title(f"{r['label']}{strength}\nlog p {r['logp']:.2f}, outside {100 * r['outside']:.1f} %, "
                     f"recall {r['recall']:.2f}", fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Guidance on an exact 2-D mixture: samples (dots) and each class's 1 %-region (lines)")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), gridspec_kw={"width_ratios": [3, 1]})
    for col, kind in enumerate(["w", "λ"]):
        for row_i, (metric, ylabel) in enumerate([("logp", "mean log p(x | c)"), ("recall", "recall (k = 3)")]):
            ax = axes[row_i, col]
            drawn, floor = [], rows[0]["logp"] - 2.5
            ax.axhline(rows[0][metric], color="k", linestyle=":", linewidth=1, label="true samples")
            base = [r for r in rows if r["method"] == "unguided"]
            if base:
                ax.axhline(base[0][metric], color="grey", linestyle="--", linewidth=1, label="unguided")
            for name, label, k in METHODS:
                pts_m = sorted((r["strength"], r[metric]) for r in rows if r["method"] == name and r["kind"] == k
                               and name != "unguided")
                if k != kind or not pts_m:
                    continue
                line, = ax.plot(*zip(*pts_m), marker="o", markersize=3, label=label)
                drawn += pts_m
                if metric == "logp":  # a few far-flung samples (CFG rescale in 2-D) must not flatten the rest
                    off = [(x, v) for x, v in pts_m if v < floor]
                    for x, v in off:
                        ax.annotate(f"{v:.1f}", (x, floor), xytext=(0, 8), textcoords="offset points", fontsize=7,
                                    ha="center", color=line.get_color(),
                                    arrowprops={"arrowstyle": "->", "color": line.get_color()})
            if metric == "logp" and drawn and min(v for _, v in drawn) < floor:
                top = max([v for _, v in drawn] + [rows[0]["logp"]])
                ax.set_ylim(floor, top + 0.1 * (top - floor))
            ax.set_xlabel(kind)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row_i == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Exact-density toy: likelihood (top; arrows: off the scale) and coverage (bottom) vs strength")
    fig.tight_layout()
    fig.savefig(out / "likelihood.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    a = parse(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        rows, samples, mix, ref = run(a)
    finally:
        torch.set_num_threads(threads)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["label", "kind", *COLUMNS])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r[k] for k in ["label", "kind", *COLUMNS]})
    text = table(rows)
    (out / "results.md").write_text(
        f"Exact 2-D toy, n = {a.n} per class, DDIM {a.steps} steps ({a.spacing}), seed {a.seed}, bad model "
        f"Σ → {a.bad_scale:g}·Σ + {a.bad_std:g}²·I\n\n{text}\n")
    print(text)
    if not a.no_plots:
        plot(rows, samples, mix, ref, a, out)
    print(f"wrote {out}/results.csv, results.md" + ("" if a.no_plots else ", samples.png, likelihood.png"))
    return rows


if __name__ == "__main__":
    main()
