"""`guidekit demo`: every guidance method of the tutorial on the shipped zoo models, written as one HTML page."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import platform
import shlex
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from guidekit.data import ImageDataset, idx, load_dataset
from guidekit.errors import GuidekitError, check
from guidekit.pipelines import SamplerSettings
from guidekit.experiments.report import Section, render
from guidekit.io import atomic_folder, check_output

BASE, CLASSIFIER = "fmnist-cfg", "fmnist-classifier"
REPRO = "runs/demo-repro"  # where the reproduction commands write


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and steps of every panel: FULL takes about 100 s on 2 idle CPU cores, QUICK seconds (tests)."""

    sampler: str = "dpmpp-2m"
    steps: int = 10
    batch_size: int = 50
    cfg_ws: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0)
    cfg_n: int = 50  # images per w for the metrics (class-balanced)
    grid_seeds: int = 2
    classifier_w: float = 5.0
    control_classes: tuple[int, ...] = (1, 7, 8)  # sources sampled at ∅; the first again with its class
    control_seeds: int = 4
    t0s: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    sdedit_rows: int = 10
    repaint_sampler: str = "ddim"
    repaint_steps: int = 20
    jump_length: int = 1
    jump_n_sample: int = 3
    repaint_classes: tuple[int, ...] = (9, 0, 2, 3, 8, 7)  # one source image per mask type
    repaint_seeds: int = 2
    combined_class: int = 8  # the third Bag: in the embedded samples a tall tote whose centre alone RePaint + CFG
    combined_nth: int = 2  # completes as wide duffel bags (chosen by edge F1 with vs without the ControlNet)
    combined_mask: str = "expand"
    combined_w: float = 2.0
    combined_seeds: int = 3


FULL = DemoSettings()
QUICK = dataclasses.replace(FULL, steps=2, batch_size=32, cfg_ws=(0.0, 3.0), cfg_n=20, grid_seeds=1,
                            control_classes=(1,), control_seeds=1, sdedit_rows=2, t0s=(0.3, 0.9), repaint_steps=3,
                            jump_n_sample=2, repaint_seeds=1, combined_seeds=1)


class DemoContext:
    """What the panels share: settings, device, the test images, the zoo models (loaded once) and command text."""

    def __init__(self, settings: DemoSettings, device: torch.device, data_dir: str | None, quick: bool):
        self.settings, self.device, self.data_dir, self.quick = settings, device, data_dir, quick
        self.data, self.dataset = find_test_images(data_dir)

    @cached_property
    def model(self):
        from guidekit.checkpoints import load_model

        return load_model(BASE, self.device)

    @cached_property
    def class_names(self) -> list[str]:
        """The base model's class names (Fashion-MNIST's)."""
        return self.model.class_names

    def controlnet(self, name: str):
        """A zoo ControlNet, tied to the base model."""
        from guidekit.checkpoints import load_controlnet

        return load_controlnet(name, self.model.net)

    @cached_property
    def classifier(self):
        """The zoo's noise-aware classifier (schedule checked against the base)."""
        from guidekit.pipelines import load_guiding_classifier

        return load_guiding_classifier(CLASSIFIER, self.model, self.device)

    @cached_property
    def evaluation(self) -> tuple:
        """(shipped evaluator, reference features of the test images), as `--reference` in the commands."""
        from guidekit.metrics.network import load_network, network_id
        from guidekit.metrics.reference import reference

        net = load_network(None, None, self.device)
        return net, reference(net, self.data, network_id(net))

    def sampling(self, repaint: bool = False) -> SamplerSettings:
        """Sampler settings of the plain panels, or of RePaint."""
        s = self.settings
        return SamplerSettings(s.repaint_sampler if repaint else s.sampler,
                               s.repaint_steps if repaint else s.steps, batch_size=s.batch_size)

    def sampler_args(self, repaint: bool = False) -> list[str]:
        """The same settings as command-line options."""
        st = self.sampling(repaint)
        return ["--sampler", st.sampler, "--steps", str(st.steps), "--spacing", st.spacing, "--batch-size",
                str(st.batch_size), "--device", self.device.type]

    def data_args(self, flag: str) -> list[str]:
        """`flag DATASET` (+ `--data DIR` when given) naming the images this demo used."""
        return [flag, self.dataset] + (["--data", str(self.data_dir)] if self.data_dir else [])

    def first_index(self, cls: int, nth: int = 0) -> int:
        """Index of the first (or the nth after it) test image of class cls."""
        hits = torch.nonzero(self.data.labels == cls)[:, 0]
        check(len(hits) > nth, f"{self.data.name} has {len(hits)} image(s) of class {cls}, fewer than {nth + 1}")
        return int(hits[nth])

    def demo_command(self, panels: Sequence[str], out: str) -> str:
        """`guidekit demo` computing only these panels with this run's settings."""
        extra = (["--quick"] if self.quick else []) + (["--data", str(self.data_dir)] if self.data_dir else [])
        return command("demo", "--panels", ",".join(panels), *extra, "--device", self.device.type, "--out", out)


def command(*args) -> str:
    """A guidekit command line, shell-quoted."""
    return "guidekit " + shlex.join(str(a) for a in args)


def find_test_images(data_dir: str | None) -> tuple[ImageDataset, str]:
    """(images, dataset name for the commands): the Fashion-MNIST test split, or the embedded samples without it."""
    try:
        return load_dataset("fashion-mnist", split="test", data_dir=data_dir), "fashion-mnist"
    except GuidekitError:
        if data_dir is not None or os.environ.get(idx.ENV_VAR):
            raise  # an explicit --data or $GUIDEKIT_DATA without the files is a mistake, not a fallback
        return load_dataset("samples"), "samples"


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Images rounded to 8 bits, as a PNG (and a sweep's sample cache) holds them."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def panels() -> dict[str, Callable[[DemoContext], Section]]:
    """Panel key → function, in page order."""
    from guidekit.experiments import demo_panels as p

    return {"cfg": p.cfg, "classifier": p.classifier, "controlnet": p.controlnet, "sdedit": p.sdedit,
            "repaint": p.repaint, "combined": p.combined}


def lead(ctx: DemoContext, argv: str) -> str:
    """The page's opening paragraph: models, data, machine, settings."""
    data = (f"the Fashion-MNIST test split ({len(ctx.data):,} images)" if ctx.dataset == "fashion-mnist"
            else f"the {len(ctx.data)} Fashion-MNIST images embedded in guidekit (the full data set is not "
                 f"installed; <code>make data</code> installs it)")
    s = ctx.settings
    return (f"<p>Every guidance method of the Eurographics 2024 guidance tutorial, run on the CPU-sized models "
            f"shipped in guidekit's zoo (<code>guidekit zoo list</code>; nothing is trained here): the class-"
            f"conditional UNet <code>{BASE}</code> (its null class ∅ is the unconditional model), the noise-aware "
            f"classifier <code>{CLASSIFIER}</code> and the ControlNets <code>fmnist-canny</code> and "
            f"<code>fmnist-sketch</code>. Hints, guides and known images come from {data}. Sampler: "
            f"{s.sampler} {s.steps} steps (RePaint: {s.repaint_sampler} {s.repaint_steps} steps with jump length "
            f"{s.jump_length}, {s.jump_n_sample} passes). Image (class, seed) depends only on its seed, so each "
            f"command below reproduces its panel exactly; the commands write to <code>{REPRO}/</code>.</p>"
            f"<p>Made by <code>{html.escape(argv)}</code>"
            f"{' (quick mode: tiny sizes and steps, for tests)' if ctx.quick else ''}.</p>")


def run_demo(out: str | Path, settings: DemoSettings = FULL, device: torch.device | str = "cpu",
             data_dir: str | None = None, keys: Sequence[str] | None = None, quick: bool = False,
             progress: bool = True, argv: str = "guidekit demo", start: float | None = None) -> Path:
    """Compute the chosen panels, then write OUT/index.html and OUT/summary.json atomically; returns the page."""
    start = time.time() if start is None else start
    out = check_output(out, overwrite=True, command="demo")  # replaces only an earlier demo page
    table = panels()
    keys = list(keys or table)
    bad = [k for k in keys if k not in table]
    check(not bad, f"unknown panel(s) {', '.join(bad)}: choose from {', '.join(table)}")
    ctx = DemoContext(settings, torch.device(device), data_dir, quick)
    sections = []
    bar = tqdm(keys, desc="demo", unit="panel", disable=not progress)
    for key in bar:
        bar.set_postfix_str(key)
        t, cpu = time.time(), time.process_time()
        with torch.no_grad():
            section = table[key](ctx)
        section.seconds, section.cpu_seconds = time.time() - t, time.process_time() - cpu
        sections.append(section)
        if progress:
            tqdm.write(f"  {key}: {section.seconds:.1f} s")
    total = time.time() - start
    footer = (f"<p class='note'>Total wall time {total:.1f} s on {ctx.device.type} ({platform.machine()}, "
              f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}."
              f"</p>")
    page = render("guidekit demo: guidance methods composed in one sampling loop", lead(ctx, argv), sections, footer)
    summary = {"command": "demo", "seconds": round(total, 1), "device": ctx.device.type, "dataset": ctx.dataset,
               "quick": quick,
               "settings": dataclasses.asdict(settings),
               "panels": [{"key": s.key, "title": s.title, "seconds": round(s.seconds, 1),
                           "cpu_seconds": round(s.cpu_seconds, 1), "commands": s.commands}
                          for s in sections]}
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out / "index.html"
