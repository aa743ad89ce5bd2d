"""Argument types and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import Iterator

import torch

from guidekit.diffusion.schedule import SPACINGS
from guidekit.errors import GuidekitError, check, shown
from guidekit.sampling.steps import SAMPLERS


def _number(kind, name: str, lo=None, lo_open=False, hi=None):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a{'n integer' if kind is int else ' number'}, got "
                                             f"{shown(repr(text), 60)}")
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text!r}; e.g. {lo or 1}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise argparse.ArgumentTypeError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {shown(text, 60)}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{name} must be <= {hi}, got {shown(text, 60)}")
        return v
    parse.__name__ = name
    return parse


def positive_int(name: str):
    """argparse type: integer >= 1."""
    return _number(int, name, 1)


def nonneg_int(name: str):
    """argparse type: integer >= 0."""
    return _number(int, name, 0)


#: Seeds are 32-bit: every derived seed (seed + image index, seed·1000003 + step in training) fits torch's 64 bits.
MAX_SEED = 2 ** 32 - 1


def seed_int(name: str = "--seed"):
    """argparse type: a seed, integer in 0..MAX_SEED."""
    return _number(int, name, 0, hi=MAX_SEED)


def nonneg_float(name: str):
    """argparse type: number >= 0."""
    return _number(float, name, 0.0)


def positive_float(name: str):
    """argparse type: number > 0."""
    return _number(float, name, 0.0, lo_open=True)


GIB = 2 ** 30


def memory_available(device: torch.device | str) -> int:
    """Bytes free for new tensors: CUDA's free memory on a GPU, else the host's MemAvailable (or total RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def sampling_bytes(net, n_images: int, batch_size: int, halves: int = 2) -> tuple[int, int]:
    """Rough fp32 bytes of sampling: (all n_images results kept, one batch's activations for `halves` passes)."""
    c = net.config
    image = 4 * c.in_channels * c.image_size ** 2
    skips = getattr(net, "skip_shapes", lambda: [(c.channels, c.image_size)] * 4)()
    per_image = 4 * sum(ch * r * r for ch, r in skips) * 4 + 8 * image  # skips, ~4x live working tensors
    return 3 * image * n_images, min(batch_size, n_images) * per_image * halves


def check_memory(net, n_images: int, batch_size: int, device: torch.device | str, halves: int = 2,
                 request: str = "") -> None:
    """Refuse up front a --n / --batch-size whose rough memory estimate exceeds what the device has free."""
    keep, batch = sampling_bytes(net, n_images, batch_size, halves)
    have = memory_available(device)
    check(keep <= have, f"--n {request or n_images} asks for {n_images} images: about {keep / GIB:.3g} GiB of "
                        f"results, but only "
                        f"{have / GIB:.3g} GiB of memory are free; lower --n (or split the job)")
    check(keep + batch <= have, f"--batch-size {batch_size} needs about {(keep + batch) / GIB:.3g} GiB of "
                                f"{torch.device(device).type} memory, but only {have / GIB:.3g} GiB are free; "
                                f"lower --batch-size (e.g. {max(1, int(batch_size * have / (keep + batch) / 2))})")


def guidance_passes(guidance) -> int:
    """Network passes per image that sampling keeps in memory: 2 with CFG, twice that with a classifier's backward."""
    pair = guidance.w > 0 or guidance.rule == "cfgpp" or guidance.guide_model is not None
    return (2 if pair else 1) * (2 if guidance.classifier is not None else 1)


@contextlib.contextmanager
def memory_guard(option: str = "--batch-size") -> Iterator[None]:
    """Turn an out-of-memory error (GPU or CPU allocator) into a GuidekitError that names the option to lower."""
    try:
        yield
    except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e)
        oom = isinstance(e, torch.OutOfMemoryError) or any(
            s in text for s in ("out of memory", "not enough memory", "can't allocate memory"))
        if not oom:
            raise
        raise GuidekitError(f"ran out of memory ({text.splitlines()[0][:120]}); lower {option}") from e


def defaults_of(config_class, names: tuple[str, ...]) -> dict:
    """A config dataclass's defaults for the options a command exposes (the dataclass stays the one source)."""
    import dataclasses

    return {f.name: f.default for f in dataclasses.fields(config_class) if f.name in names}


def pick_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check(name == "cpu" or torch.cuda.is_available(), f"--device {name}: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def add_device(p: argparse.ArgumentParser) -> None:
    """--device and the fast-path options of the network call (guidekit.fast)."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to run (default: auto = cuda if available)")
    f = p.add_argument_group("speed (guidekit.fast)")
    f.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="network precision: auto = bf16 autocast on a GPU (+ channels_last with --compile), fp32 "
                        "on the CPU")
    f.add_argument("--compile", action="store_true", help="torch.compile the network (pays off for long runs)")
    f.add_argument("--cuda-graphs", action="store_true",
                   help="replay the network call as a CUDA graph (GPU; removes launch overhead at small batches)")


def load_fast_model(path, args: argparse.Namespace, device: torch.device, **kwargs):
    """load_model(path, device, **kwargs) running through the command's --precision/--compile/--cuda-graphs."""
    from guidekit.checkpoints import load_model

    model = load_model(path, device, **kwargs)
    model.fast = fast_of(args, device)
    return model


def fast_of(args: argparse.Namespace, device: torch.device):
    """The guidekit.fast.Fast options of a command's arguments, validated for device."""
    from guidekit.fast import Fast

    return Fast.auto(device, getattr(args, "precision", "auto"), getattr(args, "compile", False),
                     getattr(args, "cuda_graphs", False))


def number_list(name: str, cast=float, example: str = "0,0.5,1", minimum: float | None = None):
    """argparse type: one number or comma-separated numbers (ints with cast=int), finite, each >= minimum."""
    kind = "integers" if cast is int else "numbers"

    def parse(text: str) -> list:
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated {kind} like {example}, got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError(f"{name}: give at least one value, like {example}")
        if not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"{name} must hold finite numbers like {example}, got {text!r}")
        if minimum is not None and min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{name} must hold {kind} >= {minimum}, got {text!r}")
        return values
    parse.__name__ = name
    return parse


def name_list(flag: str, allowed: tuple[str, ...]):
    """argparse type: comma-separated names out of `allowed`, in the order given, each once."""

    def parse(text: str) -> list[str]:
        names = [k.strip() for k in text.split(",") if k.strip()]
        bad = [k for k in names if k not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"{flag}: unknown {bad or text!r}; use a comma-separated list of "
                                             f"{', '.join(allowed)}")
        return list(dict.fromkeys(names))

    return parse


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The "run" group of the training commands: --out, --resume, --max-minutes, --mixed-precision, --no-progress."""
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    r.add_argument("--max-minutes", type=positive_float("--max-minutes"),
                   help="stop (and save) after this wall time, even before --steps")
    r.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="auto = bf16 on a GPU, fp32 on the CPU")
    add_train_compile_args(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_compile_args(p) -> None:
    """--compile and --compile-mode of the training commands."""
    from guidekit.fast import COMPILE_MODES

    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (GPU; pays off after a few hundred steps)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile mode (implies --compile): reduce-overhead adds CUDA graphs, the fastest "
                        "training step measured on an H100 (docs/results.md); max-autotune tunes kernels for minutes")


def train_compile_mode(args) -> str | None:
    """The torch.compile mode the training command asked for, or None for eager."""
    return args.compile_mode or ("default" if args.compile else None)


def fit(trainer, args):
    """Run a training command's trainer: compiled if asked (--compile/--compile-mode), stopped after --max-minutes,
    with its progress bar unless --no-progress; returns the export folder."""
    if train_compile_mode(args):
        trainer.compile(train_compile_mode(args))
    return trainer.fit(max_seconds=args.max_minutes * 60 if args.max_minutes else None, progress=not args.no_progress)


def add_sweep_args(p: argparse.ArgumentParser, steps: int = 50) -> None:
    """--out, the sampler, the evaluation, --no-progress and --device options every sweep kind takes."""
    p.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    add_sampler_args(p, steps=steps, batch=250)
    add_eval_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device(p)


def add_output_args(p: argparse.ArgumentParser) -> None:
    """--out/--overwrite/--no-progress/--device of the commands that write one folder of images."""
    p.add_argument("--out", required=True, help="output folder (created; see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is an earlier output of this command (its manifest.json names the "
                        "command); any other folder is refused, and no output may overlap an input")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device(p)


#: The default of the plain sampling commands (sample, control, eval): SDE-DPM-Solver++(2M), 15 steps uniform in
#: log-SNR — FID 0.96× DDPM-1000's at w = 0, and DPM-Solver++(2M)-20's at w = 2, in fewer evaluations than either
#: (docs/results.md, "Few-step sampling" and "The default sampler").
FEW_STEP = {"sampler": "dpmpp-2m-sde", "steps": 15, "spacing": "logsnr"}


#: Why a command's sampler default is what it is (each command's --sampler help says it).
DEFAULT_WHY = {
    "few-step": "the measured best few-step setting (docs/results.md, 'The default sampler'); edit, inpaint and "
                "the sweeps default to ddim 50 trailing instead",
    "ddim": "the setting this command's numbers in docs/results.md were measured with; sample, control and eval "
            "default to dpmpp-2m-sde 15 logsnr, the measured best few-step setting",
}


def add_sampler_args(p: argparse.ArgumentParser, steps: int = 50, batch: int = 64, sampler: str = "ddim",
                     spacing: str = "trailing") -> None:
    """--sampler/--steps/--eta/--spacing/--no-clip/--batch-size with a command's defaults (the --sampler help says
    why they differ between commands)."""
    why = DEFAULT_WHY["few-step" if sampler == FEW_STEP["sampler"] else "ddim"]
    p.add_argument("--sampler", default=sampler, choices=list(SAMPLERS),
                   help=f"sampler; the default ({sampler} {steps} steps, {spacing} spacing) is {why}")
    p.add_argument("--steps", type=positive_int("--steps"), default=steps, help="model evaluations per image (per half)")
    p.add_argument("--eta", type=nonneg_float("--eta"), default=0.0, help="DDIM η (0 deterministic, 1 DDPM-like)")
    p.add_argument("--spacing", default=spacing, choices=list(SPACINGS),
                   help="how the steps are spread over the T training timesteps")
    p.add_argument("--no-clip", action="store_true", help="do not clamp the predicted x0 to [-1, 1]")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=batch, help="images per forward")


def sampler_settings(args):
    from guidekit.pipelines import SamplerSettings

    check(args.eta == 0 or args.sampler == "ddim",
          f"--eta {args.eta:g} is DDIM's η, and --sampler {args.sampler} takes none (ddpm and dpmpp-2m-sde add their "
          f"own noise, dpmpp-2m none): use --sampler ddim, or drop --eta")
    return SamplerSettings(args.sampler, args.steps, args.eta, args.spacing, not args.no_clip, args.batch_size)


def inception_weights_file(text: str) -> str:
    """argparse type for --inception-weights: the file must hold valid FID Inception weights (checked up front)."""
    from guidekit.errors import GuidekitError
    from guidekit.metrics.inception import read_weights

    try:
        read_weights(text)  # fail before any sampling or output, with the key-by-key report
    except GuidekitError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


DATA_HELP = ("folder with the Fashion-MNIST IDX files (else $GUIDEKIT_DATA, else Debian's "
             "/usr/share/datasets/fashion-mnist), or 'samples': the 500 Fashion-MNIST images embedded in guidekit "
             "(a folder named samples: ./samples)")


def add_data_arg(p) -> None:
    """--data DIR|samples: where Fashion-MNIST is read from (one flag for every command)."""
    p.add_argument("--data", metavar="DIR|samples", default=None, help=DATA_HELP)


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """--evaluator or --inception-weights, --reference, --split, --data: what the samples are measured against."""
    net = p.add_mutually_exclusive_group()
    net.add_argument("--evaluator", default=None, metavar="DIR",
                     help="evaluator folder (default: the Fashion-MNIST evaluator shipped with guidekit): "
                          "FID/KID/IS-FMNIST")
    net.add_argument("--inception-weights", default=None, metavar="PATH", type=inception_weights_file,
                     help="your FID InceptionV3 weights (.safetensors, or .pth/.pt read with torch.load("
                          "weights_only=True), e.g. pytorch-fid's pt_inception-2015-12-05-6726825d.pth) as feature "
                          "network: FID/KID/IS-Inception, no class accuracy; slow on a CPU")
    p.add_argument("--reference", default="fashion-mnist",
                   help="real data the samples are compared with: fashion-mnist (its --split), samples, or a folder")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split of the reference data")
    add_data_arg(p)


def load_eval(args, device, progress: bool = True):
    """(feature network, Reference) from --evaluator/--inception-weights/--reference; reference features cached."""
    from guidekit.data import load_dataset
    from guidekit.metrics.network import load_network, network_id
    from guidekit.metrics.reference import reference

    net = load_network(args.evaluator, getattr(args, "inception_weights", None), device)
    dataset = load_dataset(args.reference, split=args.split, data_dir=args.data)
    if args.reference not in ("fashion-mnist", "samples"):
        dataset.name = f"folder-{dataset.name}"
    return net, reference(net, dataset, network_id(net), progress=progress)


def preload_eval(args, device):
    """load_eval now, before any sampling (a missing dataset or bad weights fail first), as the zero-argument
    callable the sweeps take."""
    loaded = load_eval(args, device, not args.no_progress)
    return lambda: loaded


def add_guidance_args(p: argparse.ArgumentParser, cfg_weight: bool = True) -> None:
    """--w/--guidance-scale (CFG) and --classifier/--clean-classifier/--classifier-w/--base-null."""
    if cfg_weight:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--w", type=nonneg_float("--w"), default=None, help="classifier-free guidance weight w >= 0: "
                       "eps = (1+w)·eps(x,y) − w·eps(x,∅) (default 1 for class-conditional models without a "
                       "classifier, else 0)")
        g.add_argument("--guidance-scale", type=float, default=None, metavar="S",
                       help="alias in the diffusers/Imagen convention: S = 1 + w (S >= 1)")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--classifier", metavar="DIR", default=None,
                   help="noise-aware classifier (guidekit train-classifier) for classifier guidance: "
                        "eps − w_c·√(1−ᾱ_t)·∇ log p(y|x_t, t)")
    c.add_argument("--clean-classifier", metavar="DIR", default=None,
                   help="NOT the paper's method: an ordinary classifier on clean images ('evaluator' = guidekit's "
                        "shipped Fashion-MNIST evaluator) applied to the predicted x0")
    p.add_argument("--classifier-w", type=nonneg_float("--classifier-w"), default=1.0,
                   help="classifier guidance weight w_c")
    p.add_argument("--base-null", action="store_true",
                   help="give a class-conditional model ∅ so its null class is the unconditional base that the "
                        "classifier guides")
    if cfg_weight:
        from guidekit.cli.guidance_args import add_frontier_args

        add_frontier_args(p)


def guidance_from_args(args, model, device, unconditional: bool = False):
    """A Guidance from the options; without --w/--guidance-scale, w is the policy's default (pipelines.policy:
    1 for a class or prompt on a conditional model without a classifier, 0 for a request of ∅)."""
    from guidekit.guidance import guidance_scale_to_w
    from guidekit.pipelines import Guidance, default_w, load_guiding_classifier

    path = args.classifier or args.clean_classifier
    classifier = load_guiding_classifier(path, model, device, clean=bool(args.clean_classifier)) if path else None
    w = getattr(args, "w", None)
    if getattr(args, "guidance_scale", None) is not None:
        w = guidance_scale_to_w(args.guidance_scale)
    from guidekit.cli.guidance_args import frontier_from_args

    frontier = frontier_from_args(args, model, device)
    if w is None:  # autoguidance guides any model, unconditional ones too
        w = 1.0 if frontier.get("guide_model") is not None else default_w(model, unconditional,
                                                                           classifier is not None, args.base_null)
    return Guidance(w, classifier, args.classifier_w, bool(args.clean_classifier), args.base_null, **frontier)


#: The options that name what a command writes; every other option naming an existing path is one of its inputs.
OUTPUT_OPTIONS = ("out", "json")
_POSITIONAL = {"model": "MODEL", "target": "TARGET", "base": "BASE", "run_dir": "RUN_DIR", "sweeps": "DIR"}


def check_paths(args: argparse.Namespace) -> None:
    """Before any work: no output (--out, --json) is, holds or lies inside an input path, the package or the working
    folder (guidekit.io.check_no_overlap); the inputs are every other option's value that exists on disk."""
    from pathlib import Path

    from guidekit.io import check_no_overlap, check_writable

    outputs, inputs = {}, {}
    for dest, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            flag = _POSITIONAL.get(dest, f"--{dest.rstrip('_').replace('_', '-')}")
            if dest in OUTPUT_OPTIONS and isinstance(v, str):
                check(v.strip() != "", f"{flag} is empty; name what to write, e.g. {flag} out/")
                outputs[flag] = v
                continue
            if not isinstance(v, str) or not v.strip():
                continue
            path = Path(v.partition("=")[0] if dest == "sweeps" else v).expanduser()
            try:
                exists = path.exists()
            except (OSError, ValueError):
                exists = False
            if exists:
                inputs[f"the input {flag}"] = path
    check_no_overlap(outputs, inputs)
    for flag, v in outputs.items():
        path = Path(v).expanduser()
        file_out = flag == "--json" or getattr(args, "kind", None) == "compare"
        check(not file_out or not path.is_dir(), f"{flag} {shown(v)} is a folder; give a file path")
        check(file_out or not path.exists() or path.is_dir(),
              f"{flag} {shown(v)} exists and is a file, not a folder; choose another {flag}")
        check_writable(path, flag)


def command(sub, name: str, summary: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand's parser: its one-line summary in `guidekit --help`, its description and defaults in its own."""
    return sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter, **kwargs)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' only where there is a real default (not None/False)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
