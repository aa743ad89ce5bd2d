"""The files of every model folder: config.json + safetensors, written atomically, format-checked; pickles refused."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from guidekit.errors import GuidekitError, check
from guidekit.io import atomic_folder, slow_point

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
LEGACY_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")  # a model folder's legacy weights file, read weights-only

#: The newest version of each folder kind's config.json "format" ("guidekit-<kind>/<version>") this guidekit reads.
VERSIONS = {"unet": 1, "controlnet": 1, "classifier": 1, "evaluator": 1, "vae": 1, "latent": 1}
#: What each kind is called in messages, and what to pass instead.
NAMES = {"unet": "UNet", "controlnet": "ControlNet", "classifier": "classifier", "evaluator": "evaluator",
         "vae": "VAE", "latent": "latent text-to-image pipeline"}
MADE_BY = {"unet": "a diffusion model (guidekit train)", "controlnet": "a ControlNet (guidekit train-controlnet)",
           "classifier": "a noise-aware classifier (guidekit train-classifier)",
           "evaluator": "an evaluator (guidekit eval train-evaluator)",
           "vae": "an autoencoder (guidekit train --latent)", "latent": "a latent model (guidekit train --latent)"}
_FORMAT = re.compile(r"guidekit-([a-z]+)/([0-9]+)")


def format_of(kind: str) -> str:
    """The format string this guidekit writes for a folder kind, e.g. "guidekit-unet/1"."""
    return f"guidekit-{kind}/{VERSIONS[kind]}"


def check_format(config: dict, kind: str, file: Path) -> int:
    """Refuse a config.json of another kind, of a newer version or without a format; return its version."""
    fmt = config.get("format")
    m = _FORMAT.fullmatch(fmt) if isinstance(fmt, str) else None
    want = format_of(kind)
    if m and m[1] == kind and int(m[2]) > VERSIONS[kind]:
        raise GuidekitError(f"{file} was written by a newer guidekit (format {fmt!r}; this one reads {kind} folders "
                            f"up to {want!r}); upgrade guidekit")
    if m and m[1] == kind and int(m[2]) >= 1:
        return int(m[2])
    other = f"; that is {MADE_BY[m[1]]}: pass {MADE_BY[kind]}" if m and m[1] in MADE_BY else ""
    raise GuidekitError(f"{file} has format {fmt!r}, expected {want!r}: not a guidekit {NAMES[kind]} folder{other}")


def check_not_pickle(path: Path) -> None:
    """Refuse a path whose suffix says it is a pickled checkpoint (unless it is a folder)."""
    check(path.suffix.lower() not in PICKLE_SUFFIXES or path.is_dir(),
          f"{path} looks like a pickled checkpoint ({path.suffix}); guidekit loads only safetensors + config.json "
          f"folders because unpickling can run arbitrary code")


def write_folder(dest: Path, files: dict[str, dict | dict[str, torch.Tensor]], public: bool = False) -> Path:
    """Write {name: json-dict | tensor-dict | bytes} into dest atomically (temp folder, fsync, rename); a name may
    hold subfolders ("unet/config.json": a pipeline folder); public: mode 755/644 whatever the umask (an installed
    file)."""
    with atomic_folder(dest) as tmp:
        for name, content in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            elif name.endswith(".json"):
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
            else:
                save_file({k: v.detach().contiguous().cpu() for k, v in content.items()}, str(tmp / name))
            slow_point()
        if public:
            for f in (tmp, *tmp.rglob("*")):
                os.chmod(f, 0o755 if f.is_dir() else 0o644)
    return Path(dest)


def read_json(path: Path) -> dict:
    """Parse a JSON file, with an error that names the file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GuidekitError(f"cannot read {path}: {e}; the checkpoint is corrupt, re-export or re-train it") from e
    check(isinstance(data, dict), f"{path} must hold a JSON object")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, with an error that names the file."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as e:
        raise GuidekitError(f"cannot read {path}: {e}; {pickle_hint(path) or 'the file is corrupt or not safetensors'}"
                            ) from e


def read_legacy(path: Path) -> dict[str, torch.Tensor]:
    """A legacy torch.save state dict, through torch.load(weights_only=True) only: a pickle that would run code
    (anything beyond tensors and plain containers) is refused before any of it runs."""
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GuidekitError(f"refused {path}: torch.load(weights_only=True) accepts only tensors and plain "
                            f"containers, and this file is not that ({first[:200]}); guidekit never unpickles "
                            f"code — re-save the weights as model.safetensors where you trust their source") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    check(isinstance(obj, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()),
          f"{path} does not hold a state dict (name → tensor); save one with torch.save(net.state_dict(), PATH)")
    return obj


def pickle_hint(path: Path) -> str | None:
    """If path starts like a pickle or a torch.save zip: why guidekit will not load it, and the fix."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if not (head[:1] == b"\x80" or head == b"PK\x03\x04"):
        return None
    return ("it is a pickle (torch.save) file, not safetensors, and guidekit never unpickles weights because that "
            "can run arbitrary code; where you trust the file, convert it: safetensors.torch.save_file(torch.load("
            "PATH, weights_only=True), 'model.safetensors')")


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict strictly, naming every missing, unexpected or mis-shaped key."""
    expected = net.state_dict()
    problems = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    problems += [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    check(not problems, f"{source} does not match its config.json ({len(problems)} problem(s)): "
                        + "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10
                                                      else "")
                        + "; keep each model.safetensors with the config.json it was saved with")
    check_float(weights, expected, source)
    check_finite(weights, source)
    net.load_state_dict({k: v.to(expected[k].dtype).contiguous() for k, v in weights.items()})


def check_float(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights stored as integers (or bool) where the network holds floats, naming tensor and dtype."""
    bad = [f"{k} ({v.dtype})" for k, v in weights.items()
           if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    check(not bad, f"{source} stores {len(bad)} weight tensor(s) as integers, not floats: {', '.join(bad[:5])}"
                   f"{' ...' if len(bad) > 5 else ''}; a conversion truncated them: re-export the weights as float32 "
                   f"or float16 safetensors")


def check_finite(weights: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse weights holding NaN or inf, naming the tensors: a model with them only ever samples NaN."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    check(not bad, f"{source} holds NaN/inf values in {len(bad)} tensor(s): {', '.join(bad[:5])}"
                   f"{' ...' if len(bad) > 5 else ''}; the checkpoint is broken (diverged training or a bad "
                   f"conversion): use an earlier checkpoint or re-train")
