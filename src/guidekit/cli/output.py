"""The start and end every image-writing command shares: check --out and load the model before any work, time the
sampling under the memory guard, then write PNGs, grid.png and manifest.json in one atomic folder."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

import torch


def start(args, command: str, **load):
    """(device, model) of a command writing --out: the output checked (an earlier output of `command` may be
    replaced with --overwrite), then the model loaded with the command's fast path (--precision/--compile)."""
    from guidekit.cli.common import load_fast_model, pick_device
    from guidekit.io import check_output

    check_output(args.out, args.overwrite, command)
    device = pick_device(args.device)
    return device, load_fast_model(args.model, args, device, **load)


def seeds_of(args) -> list[int]:
    """--seed .. --seed + --n − 1."""
    return list(range(args.seed, args.seed + args.n))


def timed(sample: Callable[[], object], option: str = "--batch-size") -> tuple[object, float]:
    """(sample(), its seconds), an out-of-memory error turned into one that names `option`."""
    from guidekit.cli.common import memory_guard

    begin = time.time()
    with memory_guard(option):
        out = sample()
    return out, time.time() - begin


def write_outputs(args, command: str, model, device, seconds: float, pictures: dict[str, torch.Tensor], grid,
                  manifest: dict, entries: list[dict]) -> None:
    """--out as one atomic folder: pictures ({file: (C, H, W) image in [−1, 1]}, inputs first), grid.png and
    manifest.json ({"command", "model", **manifest, device, seconds, images per second, "images": entries})."""
    from guidekit.images import save_png, to_pil
    from guidekit.io import atomic_folder

    with atomic_folder(args.out, overwrite=args.overwrite) as tmp:
        for name, image in pictures.items():
            save_png(to_pil(image), tmp / name)
        save_png(grid, tmp / "grid.png")
        fast = getattr(model, "fast", None)
        record = {"command": command, "model": str(model.path), **manifest, "device": str(device),
                  **({"fast": dataclasses.asdict(fast)} if fast is not None else {}), "seconds": round(seconds, 3),
                  "images_per_second": round(len(entries) / seconds, 3) if seconds else None, "images": entries}
        (tmp / "manifest.json").write_text(json.dumps(record, indent=2) + "\n")
