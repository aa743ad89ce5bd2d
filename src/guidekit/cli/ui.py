"""`guidekit ui`: the Gradio web UI on this machine (loopback by default, no share tunnel, no analytics)."""

from __future__ import annotations

import argparse
import importlib
import sys

from guidekit.cli.common import add_device, command, pick_device, positive_int
from guidekit.errors import GuidekitError


def port_number(text: str) -> int:
    """argparse type for --port: 1..65535."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port must be an integer, got {text!r}")
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"--port must be from 1 to 65535, got {v}")
    return v


def concurrency(text: str) -> int:
    """argparse type for --concurrency: 1..4 requests at once."""
    v = positive_int("--concurrency")(text)
    if v > 4:
        raise argparse.ArgumentTypeError(f"--concurrency must be from 1 to 4, got {v}")
    return v


UI_HELP = """Serve a Gradio app: pick a model (zoo name or local folder) and a method (CFG sampling, classifier
guidance, ControlNet, SDEdit, RePaint), draw a sketch or mask or upload an image (<= 2 MB, <= 1024x1024), and
download the result as a full-resolution PNG. Needs gradio: pip install 'guidekit[ui]'. Bound to 127.0.0.1 by
default; there is no login, and never a share link."""


def register(sub) -> None:
    p = command(sub, "ui", "web UI (Gradio): every guidance method on a canvas", UI_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback exposes the app (no login) to the network")
    p.add_argument("--port", type=port_number, default=7860, help="port to serve on")
    p.add_argument("--max-queue", type=positive_int("--max-queue"), default=16,
                   help="requests that may wait in the queue; more are refused until it drains")
    p.add_argument("--concurrency", type=concurrency, default=1, help="requests run at once (1-4)")
    add_device(p)
    p.set_defaults(run=run)


def run(args) -> None:
    try:
        importlib.import_module("gradio")  # only to fail early, with the fix
    except ImportError as e:
        raise GuidekitError(f"the web UI needs gradio, which is not installed ({e}): pip install 'guidekit[ui]'") \
            from None
    from guidekit.ui.app import build_app, is_loopback, launch

    device = pick_device(args.device)
    if not is_loopback(args.host):
        print(f"guidekit ui: warning: serving on {args.host}, not loopback: anyone who can reach port {args.port} "
              f"can run the models and load any model folder on this machine by path, without logging in",
              file=sys.stderr)
    demo = build_app(device, args.max_queue, args.concurrency)
    print(f"guidekit ui: serving http://{args.host}:{args.port} on {device} (Ctrl-C to stop)", flush=True)
    try:
        launch(demo, args.host, args.port, quiet=True)
    except OSError as e:
        raise GuidekitError(f"cannot serve on {args.host}:{args.port} ({e}); pick another --port") from None
