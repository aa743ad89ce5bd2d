"""`guidekit demo`: every guidance method on the shipped zoo models, one HTML page (the quickstart job)."""

from __future__ import annotations

import argparse
import shlex
import time

from guidekit.cli.common import add_data_arg, add_device, command, pick_device


def panel_list(text: str) -> list[str]:
    """argparse type for --panels: comma-separated panel names."""
    from guidekit.experiments.demo import panels

    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in panels()]
    if not keys or bad:
        raise argparse.ArgumentTypeError(f"unknown panel(s) {', '.join(bad) or repr(text)}: choose from "
                                         f"{', '.join(panels())}")
    return list(dict.fromkeys(keys))


DEMO_HELP = """Sample the models shipped in guidekit's zoo (no training) with classifier-free guidance, classifier
guidance, ControlNet, SDEdit, RePaint, and RePaint + CFG + ControlNet in one run, and write OUT/index.html (images
embedded) with the command that reproduces each panel. Hints, guides and known images come from the Fashion-MNIST
test split when installed (--data, $GUIDEKIT_DATA or /usr/share/datasets/fashion-mnist), else from the embedded
samples. About 2 minutes on 2 idle CPU cores; OUT is replaced atomically at the end."""


def register(sub) -> None:
    p = command(sub, "demo", "every guidance method on the zoo models, written as one HTML report", DEMO_HELP)
    p.add_argument("--out", default="runs/demo", help="report folder (replaced)")
    add_data_arg(p)
    p.add_argument("--panels", type=panel_list, default=None, metavar="P[,P...]",
                   help="only these panels: cfg, classifier, controlnet, sdedit, repaint, combined (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps (seconds; for tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device(p)
    p.set_defaults(run=run)


def run(args) -> None:
    from guidekit.experiments.demo import FULL, QUICK, run_demo
    from guidekit.io import check_output

    start = time.time()
    check_output(args.out, overwrite=True, command="demo")  # fails now, not after the sampling
    device = pick_device(args.device)
    argv = ["demo"] + (["--panels", ",".join(args.panels)] if args.panels else []) + \
        (["--quick"] if args.quick else []) + (["--data", args.data] if args.data else []) + ["--out", args.out]
    page = run_demo(args.out, QUICK if args.quick else FULL, device, args.data, args.panels, args.quick,
                    not args.no_progress, "guidekit " + shlex.join(argv), start)
    print(f"report: {page.resolve()} ({time.time() - start:.0f} s)")
