"""The six panels of `guidekit demo`: CFG, classifier guidance, ControlNet, SDEdit, RePaint, and all composed."""

from __future__ import annotations

import html

import torch

from guidekit.diffusion import NULL
from guidekit.experiments.demo import BASE, CLASSIFIER, REPRO, DemoContext, command, quantize
from guidekit.experiments.report import Section, Tile, image_table, metrics_table
from guidekit.pipelines import Guidance, sample_guided

CANNY, SKETCH = "fmnist-canny", "fmnist-sketch"
METRIC_COLUMNS = [("w", "w", "g"), ("n", "n", ""), ("fid", "FID-FMNIST", ".1f"), ("is", "IS-FMNIST", ".2f"),
                  ("accuracy", "accuracy", ".2f"), ("precision", "precision", ".2f"), ("recall", "recall", ".2f")]


def _numbers(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _f1(cond, hint: torch.Tensor, images: torch.Tensor) -> list[float]:
    """Per-image adherence (edge F1) of images to the hint (1 or N rows): the condition re-extracted from each."""
    return cond.adherence(hint.expand(len(images), -1, -1, -1), images)["edge_f1"].tolist()


def _masked(images: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-image (L2, PSNR) of images against the true image over the generated pixels (mask 0)."""
    from guidekit.pipelines import masked_errors

    l2, psnr = masked_errors(images, truth.expand_as(images), mask.expand(len(images), -1, -1, -1))
    return l2.tolist(), psnr.tolist()


def _rmse(images: torch.Tensor, guides: torch.Tensor) -> list[float]:
    """Per-image RMSE to the guide in [0, 1] units (SDEdit's faithfulness, experiments.sdedit.faithfulness)."""
    return ((images.double() - guides.double()) / 2).flatten(1).square().mean(1).sqrt().tolist()


def _mean(values) -> float:
    return sum(values) / len(values)


def _tiles(images, *captions: list[str]) -> list[Tile]:
    """Image tiles, each captioned by the matching entry of every caption list."""
    return [Tile(x, [c[i] for c in captions]) for i, x in enumerate(images)]


def _f1_text(v: float) -> str:
    return f"F1 {v:.2f}"


def _l2_text(v: float) -> str:
    return f"L2 {v:.3f}"


def _psnr_text(v: float) -> str:
    return f"{v:.1f} dB"


def _reference_note(ctx: DemoContext) -> str:
    if ctx.dataset == "fashion-mnist":
        return f"the Fashion-MNIST test split ({len(ctx.data):,} images)"
    return (f"the {len(ctx.data)} embedded sample images, because the full data set is not installed "
            f"(<code>make data</code>)")


def cfg(ctx: DemoContext) -> Section:
    """Classifier-free guidance: a class × (w, seed) grid and small-n metrics per w."""
    from guidekit.experiments.sweep import balanced_labels
    from guidekit.metrics.evaluate import evaluate

    s, names = ctx.settings, ctx.class_names
    K, n = len(names), s.cfg_n
    labels, seeds = balanced_labels(n, K), list(range(n))
    evaluator, ref = ctx.evaluation
    sets, rows = {}, []
    for w in s.cfg_ws:
        sets[w] = quantize(sample_guided(ctx.model, labels, seeds, Guidance(w=w), ctx.sampling(), ctx.device))
        rows.append({"w": w, **evaluate(sets[w], labels, evaluator, ref, seed=0)})
    cols = [(w, j) for w in s.cfg_ws for j in range(s.grid_seeds)]
    grid = [(name, [sets[w][c + j * K] for w, j in cols]) for c, name in enumerate(names)]
    heads = [f"w = {w:g}" for w, _ in cols]
    cmd = command("sweep", "cfg", BASE, "--w", _numbers(s.cfg_ws), "--n", n, *ctx.data_args("--reference"),
                  *ctx.sampler_args(), "--out", f"{REPRO}/cfg")
    intro = (f"<p>Classifier-free guidance (Ho &amp; Salimans 2021): ε̂ = (1+w)·ε(x, y) − w·ε(x, ∅), both halves in "
             f"one batched forward. Rows are classes, columns guidance weights, {s.grid_seeds} seed(s) each (class c "
             f"uses seeds c, c+{K}, …; the same seed starts from the same noise at every w). Larger w: more typical, "
             f"more accurate, less varied.</p>")
    table = (f"<p><b>Small-n metrics</b> (n = {n} class-balanced images per w, the shipped Fashion-MNIST "
             f"evaluator against {_reference_note(ctx)}). At this n, FID is biased far upward and only comparable "
             f"within this table; see docs/results.md for n = 10,000.</p>" + metrics_table(rows, METRIC_COLUMNS))
    return Section("cfg", "1. Classifier-free guidance", intro, [cmd],
                   [image_table(grid, heads), table,
                    "<p class='note'>The sweep's grids/w*.png hold these images (first columns) and its "
                    "results.md this table.</p>"])


def _accuracy(ctx: DemoContext, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images the shipped evaluator assigns to the requested class."""
    evaluator, _ = ctx.evaluation
    _, probs = evaluator.features_and_probs(images.to(ctx.device))
    return float((probs.argmax(1).cpu() == labels).float().mean())


def classifier(ctx: DemoContext) -> Section:
    """Classifier guidance of the unconditional model (the null class) by the noise-aware classifier."""
    s, names = ctx.settings, ctx.class_names
    K, seeds = len(names), list(range(s.grid_seeds))
    st = ctx.sampling()
    plain = quantize(sample_guided(ctx.model, torch.full((len(seeds),), NULL), seeds, Guidance(), st, ctx.device))
    labels = torch.tensor([c for c in range(K) for _ in seeds])
    guided = quantize(sample_guided(ctx.model, labels, seeds * K,
                                    Guidance(classifier=ctx.classifier, classifier_w=s.classifier_w, base_null=True),
                                    st, ctx.device))
    grid = [(name, [*plain, *guided[c * len(seeds):(c + 1) * len(seeds)]]) for c, name in enumerate(names)]
    heads = ["w = 0"] * len(seeds) + [f"w = {s.classifier_w:g}"] * len(seeds)
    acc0, acc = _accuracy(ctx, plain.repeat(K, 1, 1, 1), labels), _accuracy(ctx, guided, labels)
    cmds = [command("sample", BASE, "--classifier", CLASSIFIER, "--classifier-w", f"{w:g}", "--base-null", "--n",
                    len(seeds), *ctx.sampler_args(), "--out", f"{REPRO}/classifier-w{w:g}")
            for w in (0.0, s.classifier_w)]
    intro = (f"<p>Classifier guidance (Dhariwal &amp; Nichol 2021): ε̄ = ε(x, ∅) − w·√(1−ᾱ_t)·∇ log p_φ(y | x_t, t). "
             f"The base is unconditional — <code>{BASE}</code> given its null class ∅ (<code>--base-null</code>) — "
             f"and the class comes only from the gradient of <code>{CLASSIFIER}</code>, which was trained on noisy "
             f"images. At w = 0 every row is the same unconditional sample; at w = {s.classifier_w:g} each row "
             f"turns into its class.</p>")
    note = (f"<p>The evaluator assigns {acc0:.0%} of the w = 0 images and {acc:.0%} of the w = {s.classifier_w:g} "
            f"images to their row's class (n = {len(labels)}).</p>")
    return Section("classifier", "2. Classifier guidance", intro, cmds, [image_table(grid, heads), note])


def controlnet(ctx: DemoContext) -> Section:
    """ControlNets (canny, sketch): hints from test images, sampled at ∅ and once with the class."""
    from guidekit.pipelines import condition_of, control_samples, extract_hints, hint_image

    s, names, st = ctx.settings, ctx.class_names, ctx.sampling()
    seeds = list(range(s.control_seeds))
    k = len(seeds)
    rows, cmds = [], []
    means = []
    for name in (CANNY, SKETCH):
        cn = ctx.controlnet(name)
        cond = condition_of(cn)
        index = [ctx.first_index(c) for c in s.control_classes]
        sources = [ctx.data.images([i]) for i in index]
        hints = [extract_hints(cond, x, seed=0) for x in sources]  # as `guidekit control --seed 0` extracts them
        hint_rows = torch.cat([h.expand(k, -1, -1, -1) for h in hints])
        free = quantize(control_samples(ctx.model, [cn], [hint_rows], torch.full((len(hint_rows),), NULL),
                                        seeds * len(hints), 1.0, st, ctx.device, Guidance(w=0.0)))
        y = int(ctx.data.labels[index[0]])
        given = quantize(control_samples(ctx.model, [cn], [hints[0].expand(k, -1, -1, -1)], torch.full((k,), y),
                                         seeds, 1.0, st, ctx.device, Guidance(w=1.0)))
        outs = [free[r * k:(r + 1) * k] for r in range(len(hints))] + [given]
        labels = [f"{cond.name} of a {names[int(ctx.data.labels[i])]}, ∅" for i in index]
        labels.append(f"{cond.name} of a {names[y]}, class {names[y]}, w = 1")
        for label, x, h, out in zip(labels, [*sources, sources[0]], [*hints, hints[0]], outs):
            f1, own = _f1(cond, h, out), _f1(cond, h, x)[0]
            rows.append((label, [Tile(x[0], [_f1_text(own)]), hint_image(h[0], 1),
                                 *_tiles(out, [_f1_text(v) for v in f1])]))
            means.append({"row": label, "source": own, "outputs": _mean(f1)})
        for i in index:
            cmds.append(command("control", BASE, "--controlnet", name, "--condition-from", i, "--class", "null",
                                *ctx.data_args("--dataset"), "--n", k, *ctx.sampler_args(),
                                "--out", f"{REPRO}/{cond.name}-{i}-null"))
        cmds.append(command("control", BASE, "--controlnet", name, "--condition-from", index[0], "--w", 1,
                            *ctx.data_args("--dataset"), "--n", k, *ctx.sampler_args(),
                            "--out", f"{REPRO}/{cond.name}-{index[0]}"))
    intro = ("<p>ControlNet (Zhang et al. 2023): a trainable copy of the UNet's encoder reads a hint and adds zero-"
             "initialized residuals to the frozen UNet. The hints are extracted from test images (Canny edges; "
             "sketch = thinned, jittered strokes). The ∅ rows give the model no class at all, so the garment's "
             "shape and kind come from the hint alone; the last row of each ControlNet adds the class with CFG "
             "w = 1.</p>")
    heads = ["source", "hint"] + [f"seed {i}" for i in seeds]
    table = ("<p><b>Adherence</b>: edge F1 (1 pixel tolerance) between the hint and the condition re-extracted from "
             "each image shown (under each tile); the source's own score is the ceiling.</p>"
             + metrics_table(means, [("row", "row", ""), ("source", "source F1", ".2f"),
                                     ("outputs", f"outputs' mean F1 (n = {k})", ".2f")]))
    return Section("controlnet", "3. ControlNet", intro, cmds, [image_table(rows, heads), table])


def sdedit(ctx: DemoContext) -> Section:
    """SDEdit of stroke paintings over t0."""
    from guidekit.experiments.sdedit import stroke_guides
    from guidekit.pipelines import edit_guided

    s, names = ctx.settings, ctx.class_names
    n = max(2 * len(names), 10)  # what `guidekit sweep sdedit` accepts at least; its grid shows the first per class
    guides, labels, _ = stroke_guides(ctx.data, n)
    rows = min(s.sdedit_rows, len(names))
    g, y, seeds = guides[:rows], labels[:rows], list(range(rows))
    outs = [quantize(edit_guided(ctx.model, g, y, seeds, t0, Guidance(w=0.0), ctx.sampling(), device=ctx.device))
            for t0 in s.t0s]
    shown = quantize(g)  # the guides as their tiles hold them
    rmse = [_rmse(o, shown) for o in outs]
    grid = [(names[int(y[i])], [g[i], *(Tile(o[i], [f"RMSE {e[i]:.3f}"]) for o, e in zip(outs, rmse))])
            for i in range(rows)]
    heads = ["stroke guide"] + [f"t0 = {t:g}" for t in s.t0s]
    faithful = [{"t0": t0, "rmse": _mean(e)} for t0, e in zip(s.t0s, rmse)]
    table = (f"<p><b>Faithfulness</b> to the stroke guide: per-pixel RMSE between each edit shown and its guide, in "
             f"[0, 1] units (under each tile; lower = more faithful), and its mean over the {rows} rows per t0."
             f"</p>" + metrics_table(faithful, [("t0", "t0", "g"), ("rmse", "mean RMSE to the guide", ".3f")]))
    cmd = command("sweep", "sdedit", BASE, "--t0", _numbers(s.t0s), "--n", n, *ctx.data_args("--guides"),
                  "--reference", ctx.dataset, *ctx.sampler_args(), "--out", f"{REPRO}/sdedit")
    intro = ("<p>SDEdit (Meng et al. 2022): a crude stroke painting of a test image (blurred, coarsened, 5 grey "
             "levels) is noised to level t0 and denoised by the class-conditional model (its class, w = 0). Small "
             "t0 stays faithful to the strokes; large t0 is realistic but forgets them.</p>")
    return Section("sdedit", "4. SDEdit", intro, [cmd],
                   [image_table(grid, heads), table, "<p class='note'>The sweep's grid.png shows these rows (and "
                                                     "results.md realism vs faithfulness per t0, over all its "
                                                     "images).</p>"])


def repaint(ctx: DemoContext) -> Section:
    """RePaint with each of the six mask types."""
    from guidekit.pipelines import inpaint_guided
    from guidekit.masks import MASK_KINDS, make_mask

    s, k = ctx.settings, ctx.settings.repaint_seeds
    index = [ctx.first_index(c) for c in s.repaint_classes[:len(MASK_KINDS)]]
    x0 = ctx.data.images(index)
    masks = torch.cat([make_mask(kind, x0.shape[-1], 1, torch.Generator().manual_seed(0)) for kind in MASK_KINDS])
    labels = ctx.data.labels[index]
    rep = lambda t: t.repeat_interleave(k, 0)  # noqa: E731
    out, nfe = inpaint_guided(ctx.model, rep(x0), rep(masks), rep(labels), list(range(k)) * len(index),
                              Guidance(w=0.0), ctx.sampling(repaint=True), s.jump_length, s.jump_n_sample,
                              ctx.device)
    out = quantize(out)
    rows, errors = [], []
    for r, kind in enumerate(MASK_KINDS):
        l2, psnr = _masked(out[r * k:(r + 1) * k], x0[r:r + 1], masks[r:r + 1])
        rows.append((kind, [x0[r], Tile(masks[r] * 2 - 1, framed=True), x0[r] * masks[r],
                            *_tiles(out[r * k:(r + 1) * k], [_l2_text(v) for v in l2],
                                    [_psnr_text(v) for v in psnr])]))
        errors.append({"mask": kind, "known": float(masks[r].mean()), "l2": _mean(l2), "psnr": _mean(psnr)})
    cmds = [command("inpaint", BASE, "--from-dataset", i, *ctx.data_args("--dataset"), "--mask", kind,
                    "--mask-seed", 0, "--w", 0, "--n", k, "--jump-length", s.jump_length, "--jump-n-sample",
                    s.jump_n_sample, *ctx.sampler_args(repaint=True), "--out", f"{REPRO}/repaint-{kind}")
            for i, kind in zip(index, MASK_KINDS)]
    intro = (f"<p>RePaint (Lugmayr et al. 2022): after every step the known pixels (mask white) are replaced by the "
             f"image noised to the current level, and the trajectory jumps back up {s.jump_length} step(s) "
             f"{s.jump_n_sample - 1} time(s) at each level so the generated region harmonizes ({nfe} model "
             f"evaluations per image). The model is given the image's class (w = 0). The six mask types of the "
             f"paper: wide and narrow brush strokes, every second line, half, expand (only the centre known) and "
             f"sr2 (every second pixel, ×2 super-resolution).</p>")
    heads = ["image", "mask", "masked input"] + [f"seed {i}" for i in range(k)]
    table = (f"<p><b>Faithfulness</b> to the true image over the generated pixels (mask black): RMSE L2 in [0, 1] "
             f"units and PSNR = −20·log10 L2 of each completion shown (under each tile), and their means over the "
             f"{k} seed(s); the known pixels are kept exactly.</p>"
             + metrics_table(errors, [("mask", "mask", ""), ("known", "known fraction", ".2f"),
                                      ("l2", "mean masked L2", ".3f"), ("psnr", "mean masked PSNR (dB)", ".1f")]))
    return Section("repaint", "5. RePaint", intro, cmds, [image_table(rows, heads), table])


def _than(a: float, b: float, close: float) -> str:
    """'above', 'below' or 'about the same as': how a compares with b (within close counts as the same)."""
    return "about the same as" if abs(a - b) <= close else "above" if a > b else "below"


def combined(ctx: DemoContext) -> Section:
    """RePaint + CFG + ControlNet in one sampling run, next to the same run without the ControlNet, with numbers."""
    from guidekit.pipelines import condition_of, controlled, extract_hints, hint_image, inpaint_guided
    from guidekit.masks import make_mask

    s, k = ctx.settings, ctx.settings.combined_seeds
    i = ctx.first_index(s.combined_class, s.combined_nth)
    x0 = ctx.data.images([i])
    mask = make_mask(s.combined_mask, x0.shape[-1], 1, torch.Generator().manual_seed(0))
    cn = ctx.controlnet(CANNY)
    cond = condition_of(cn)
    hint = extract_hints(cond, x0, seed=0)
    labels, seeds, guidance = torch.full((k,), s.combined_class), list(range(k)), Guidance(w=s.combined_w)
    args = (guidance, ctx.sampling(repaint=True), s.jump_length, s.jump_n_sample, ctx.device)
    both, nfe = inpaint_guided(controlled(ctx.model, [cn], 1.0), x0, mask, labels, seeds, *args,
                               cond={"hint": hint.expand(k, -1, -1, -1)})
    alone, _ = inpaint_guided(ctx.model, x0, mask, labels, seeds, *args)
    lead = [x0[0], Tile(mask[0] * 2 - 1, framed=True), x0[0] * mask[0]]
    rows, scores = [], []
    for label, out, shown in (("RePaint + CFG + ControlNet", quantize(both), hint_image(hint[0], 1)),
                              ("RePaint + CFG only", quantize(alone), None)):
        f1, (l2, psnr) = _f1(cond, hint, out), _masked(out, x0, mask)
        rows.append((label, [*lead, shown, *_tiles(out, [_f1_text(v) for v in f1], [_psnr_text(v) for v in psnr])]))
        scores.append({"row": label, "f1": _mean(f1), "l2": _mean(l2), "psnr": _mean(psnr)})
    cmds = [ctx.demo_command(["combined"], f"{REPRO}/combined"),
            command("inpaint", BASE, "--from-dataset", i, *ctx.data_args("--dataset"), "--mask", s.combined_mask,
                    "--mask-seed", 0, "--w", f"{s.combined_w:g}", "--n", k, "--jump-length", s.jump_length,
                    "--jump-n-sample", s.jump_n_sample, *ctx.sampler_args(repaint=True),
                    "--out", f"{REPRO}/combined-without-controlnet")]
    intro = _combined_intro(ctx, i, nfe)
    heads = ["image", "mask", "masked input", "canny hint"] + [f"seed {j}" for j in seeds]
    return Section("combined", "6. All at once: RePaint + CFG + ControlNet", intro, cmds,
                   [image_table(rows, heads), _combined_table(scores, k)])


def _combined_intro(ctx: DemoContext, index: int, nfe: int) -> str:
    """What the combined panel runs, and the library calls behind it."""
    s = ctx.settings
    return (f"<p>The three families compose in one trajectory: RePaint's jump schedule and known-region constraint, "
            f"classifier-free guidance toward <i>{ctx.class_names[s.combined_class]}</i> (w = {s.combined_w:g}) and "
            f"the canny ControlNet reading the edges of the whole image — every one of the {nfe} model evaluations "
            f"per image runs the UNet with the ControlNet's residuals on both CFG halves. Only the centre of the "
            f"image (number {index} of {html.escape(ctx.data.name)}) is known, so its outline is hidden from "
            f"RePaint; the canny hint, extracted from the whole image, holds it. The second row runs the same seeds "
            f"without the ControlNet. The first command reruns this panel; the second the lower row. In Python:</p>"
            f"<pre>" + html.escape(_snippet(ctx, index)) + "</pre>")


def _combined_table(scores: list[dict], k: int) -> str:
    """The combined panel's numbers: adherence and faithfulness with and without the ControlNet, and what they say."""
    (a, b), (fa, fb) = scores, (scores[0]["f1"], scores[1]["f1"])
    text = (f"<p><b>Adherence</b> (edge F1 between the canny hint and the edges of each completion shown) and "
            f"<b>faithfulness</b> (L2 and PSNR against the true image over the generated pixels; higher PSNR = "
            f"closer to the hidden truth), under each tile "
            f"and as means over the {k} seed(s). With the ControlNet the completions' edge F1 is {fa:.2f}, "
            f"{_than(fa, fb, 0.01)} the {fb:.2f} without it, and their PSNR {a['psnr']:.1f} dB is "
            f"{_than(a['psnr'], b['psnr'], 0.1)} the {b['psnr']:.1f} dB without it.</p>")
    return text + metrics_table(scores, [("row", "row", ""), ("f1", "mean edge F1", ".2f"),
                                         ("l2", "mean masked L2", ".3f"), ("psnr", "mean masked PSNR (dB)", ".1f")])


def _snippet(ctx: DemoContext, index: int) -> str:
    """The library calls behind the combined panel."""
    s = ctx.settings
    data = (f"load_dataset('{ctx.dataset}', split='test'" + (f", data_dir={str(ctx.data_dir)!r})" if ctx.data_dir
                                                             else ")"))
    return (f"from guidekit.checkpoints import load_controlnet, load_model\n"
            f"from guidekit.data import load_dataset\n"
            f"from guidekit.pipelines import (Guidance, SamplerSettings, condition_of, controlled, extract_hints,\n"
            f"                                inpaint_guided)\n"
            f"from guidekit.masks import make_mask\n"
            f"import torch\n\n"
            f"model = load_model('{BASE}')\n"
            f"cn = load_controlnet('{CANNY}', model.net)\n"
            f"x0 = {data}.images([{index}])\n"
            f"mask = make_mask('{s.combined_mask}', 32, 1, torch.Generator().manual_seed(0))  # 1 = known\n"
            f"hint = extract_hints(condition_of(cn), x0, seed=0)\n"
            f"images, nfe = inpaint_guided(controlled(model, [cn], 1.0), x0, mask, torch.full(({s.combined_seeds},), "
            f"{s.combined_class}),\n"
            f"    list(range({s.combined_seeds})), Guidance(w={s.combined_w:g}), "
            f"SamplerSettings('{s.repaint_sampler}', {s.repaint_steps}),\n"
            f"    {s.jump_length}, {s.jump_n_sample}, cond={{'hint': hint.expand({s.combined_seeds}, -1, -1, -1)}})")
