"""`guidekit demo`: a minute of training on the embedded samples, then a CFG grid over w (the quickstart job)."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from guidekit.cli.common import HelpFormatter, add_device, pick_device, positive_float

W_VALUES = (0.0, 1.0, 3.0)


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a tiny model on the embedded samples and write a CFG report",
                       description="Train a tiny class-conditional UNet on the 500 embedded Fashion-MNIST images for "
                                   "--minutes, then sample every class at several guidance weights w and write "
                                   "OUT/index.html with the grid and the commands that reproduce it.",
                       formatter_class=HelpFormatter)
    p.add_argument("--out", default="runs/demo", help="report folder")
    p.add_argument("--minutes", type=positive_float("--minutes"), default=1.0, help="training wall time")
    add_device(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.cli import main as cli_main

    out = Path(args.out)
    device = pick_device(args.device)
    run_dir = out / "run"
    t0 = time.time()
    train_cmd = ["train", "--dataset", "samples", "--preset", "tiny", "--out", str(run_dir), "--steps", "100000",
                 "--batch-size", "32", "--lr", "1e-3", "--warmup", "50", "--prediction", "v", "--save-every", "500", "--log-every",
                 "10", "--max-minutes", f"{args.minutes:g}"]
    print(f"[1/2] training a tiny class-conditional model for {args.minutes:g} min on the embedded samples")
    code = cli_main(train_cmd + (["--resume"] if (run_dir / "checkpoints").exists() else []))
    if code:
        raise SystemExit(code)
    panels = []
    print(f"[2/2] sampling every class at w = {', '.join(f'{w:g}' for w in W_VALUES)}")
    for w in W_VALUES:
        cmd = ["sample", str(run_dir), "--w", f"{w:g}", "--n", "6", "--steps", "25", "--sampler", "ddim",
               "--out", str(out / f"cfg_w{w:g}"), "--overwrite", "--device", str(device.type)]
        code = cli_main(cmd)
        if code:
            raise SystemExit(code)
        panels.append((w, f"cfg_w{w:g}/grid.png", "guidekit " + " ".join(cmd)))
    log = (run_dir / "log.csv").read_text().strip().splitlines()
    last = dict(zip(log[0].split(","), log[-1].split(",")))
    page = _page(panels, "guidekit " + " ".join(train_cmd), last, time.time() - t0)
    (out / "index.html").write_text(page)
    (out / "summary.json").write_text(json.dumps({"train_last_log": last, "w": list(W_VALUES),
                                                  "seconds": round(time.time() - t0, 1)}, indent=2) + "\n")
    print(f"report: {(out / 'index.html').resolve()}")


def _page(panels, train_cmd: str, last: dict, seconds: float) -> str:
    items = "\n".join(
        f"<figure><img src='{src}' alt='CFG samples at w={w:g}'><figcaption>w = {w:g}<br>"
        f"<code>{html.escape(cmd)}</code></figcaption></figure>" for w, src, cmd in panels)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>guidekit demo</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}figure{{display:inline-block;margin:1em;
vertical-align:top}}img{{image-rendering:pixelated}}code{{font-size:80%;white-space:pre-wrap}}</style></head><body>
<h1>guidekit demo: classifier-free guidance</h1>
<p>A tiny class-conditional UNet (v-prediction) trained for {last.get('step')} steps (final loss {last.get('loss')}) on the 500 embedded
Fashion-MNIST images with condition dropout to the null class, then sampled with
ε̂ = (1+w)·ε(x, y) − w·ε(x, ∅) (Ho &amp; Salimans 2021). Rows are classes, columns seeds; the same seed
starts from the same noise in every panel. Total time {seconds:.0f} s.</p>
<p>Training: <code>{html.escape(train_cmd)}</code></p>
{items}
</body></html>
"""
