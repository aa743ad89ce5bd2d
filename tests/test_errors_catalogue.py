"""The catalogue of bad inputs in docs/errors.md, one test per row: each gets a GuidekitError (Python API) or exit
code 2 (CLI) with a message naming the value and the fix, and leaves no partial output behind."""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from guidekit.cli import main
from guidekit.errors import GuidekitError
from guidekit.zoo import WEIGHTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
IMAGE = (1, 32, 32)


class Payload:
    """A pickle whose unpickling runs a shell command (touches a marker file): it must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _png(path: Path, value, size=32, mode="L") -> Path:
    """Write a flat (or random for value None) PNG."""
    if value is None:
        a = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(a, mode).save(path)
    else:
        Image.new(mode, (size, size), value).save(path)
    return path


def _model_copy(root: Path, name: str) -> Path:
    """A copy of the zoo's fmnist-cfg folder to break."""
    return Path(shutil.copytree(WEIGHTS / "fmnist-cfg", root / name))


def _idx_dir(root: Path, name: str) -> Path:
    """A complete little gzipped IDX data folder."""
    from guidekit.data import idx

    folder = root / name
    folder.mkdir()
    for split in ("train", "t10k"):
        idx.write_idx(folder / f"{split}-images-idx3-ubyte.gz", np.random.default_rng(0).integers(
            0, 256, (20, 28, 28), dtype=np.uint8))
        idx.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8))
    return folder


def _bad_models(root: Path, f: SimpleNamespace) -> None:
    """Checkpoint folders with NaN weights, mismatched config, corrupt or pickled weights, no config."""
    f.nan = _model_copy(root, "nan-weights")
    w = load_file(str(f.nan / "model.safetensors"))
    w["conv_in.weight"] = w["conv_in.weight"].clone()
    w["conv_in.weight"].view(-1)[3] = float("nan")
    save_file(w, str(f.nan / "model.safetensors"))
    f.shape = _model_copy(root, "shape-mismatch")
    cfg = json.loads((f.shape / "config.json").read_text())
    cfg["unet"]["channels"] = 16
    (f.shape / "config.json").write_text(json.dumps(cfg))
    f.corrupt = _model_copy(root, "corrupt")
    (f.corrupt / "model.safetensors").write_bytes(b"not a tensor file")
    f.intw = _model_copy(root, "int-weights")
    w = load_file(str(f.intw / "model.safetensors"))
    w["conv_in.weight"] = w["conv_in.weight"].to(torch.int64)
    save_file(w, str(f.intw / "model.safetensors"))
    f.badjson = _model_copy(root, "bad-json")
    (f.badjson / "config.json").write_text('{"format": "guidekit-unet/1", ')
    f.newer = _model_copy(root, "newer-format")
    cfg = json.loads((f.newer / "config.json").read_text())
    (f.newer / "config.json").write_text(json.dumps({**cfg, "format": "guidekit-unet/2"}))
    f.nocfg = _model_copy(root, "no-config")
    (f.nocfg / "config.json").unlink()
    f.marker = root / "PWNED"
    f.evil_pt = root / "evil.pt"
    torch.save({"conv_in.weight": Payload(f.marker)}, f.evil_pt)
    f.evil_raw = root / "evil.pkl"
    f.evil_raw.write_bytes(pickle.dumps(Payload(f.marker)))
    f.evil_dir = _model_copy(root, "pickle-inside")
    shutil.copy(f.evil_pt, f.evil_dir / "model.safetensors")
    f.legacy_pt = root / "legacy.pt"
    torch.save({"fc.weight": torch.zeros(3, 2)}, f.legacy_pt)


def _bad_files(root: Path, f: SimpleNamespace) -> None:
    """Images, masks, IDX files and folders that are broken in one way each."""
    f.text = root / "notes.png"
    f.text.write_text("this is not an image\n")
    f.gray = _png(root / "gray.png", 100)
    full = _png(root / "noise.png", None).read_bytes()
    f.trunc = root / "truncated.png"
    f.trunc.write_bytes(full[: len(full) // 2])
    f.white, f.black = _png(root / "white.png", 255), _png(root / "black.png", 0)
    f.idx_trunc = _idx_dir(root, "idx-truncated")
    gz = f.idx_trunc / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    f.idx_corrupt = _idx_dir(root, "idx-corrupt")
    gz = f.idx_corrupt / "train-images-idx3-ubyte.gz"
    data = bytearray(gz.read_bytes())
    data[20:60] = b"\xff" * 40
    gz.write_bytes(bytes(data))
    f.idx_header = root / "header-idx3-ubyte.gz"
    f.idx_header.write_bytes(gz.read_bytes()[:12])  # the gzip stream stops before the IDX header is complete
    f.idx_magic = root / "magic-idx3-ubyte"
    f.idx_magic.write_bytes(b"PK\x03\x04" + bytes(100))
    f.empty = root / "empty-folder"
    f.empty.mkdir()
    f.junk = root / "junk-folder"
    f.junk.mkdir()
    shutil.copy(f.text, f.junk / "a.png")
    f.samples = root / "sample-folder"
    f.samples.mkdir()
    (f.samples / "manifest.json").write_text('{"images": [{"file": "0.png"}]}')
    f.file_out = root / "existing-file"
    f.file_out.write_text("mine")
    for name, array in (("float-negative.tif", np.full((32, 32), -0.5, np.float32)),
                        ("float-nan.tif", np.full((32, 32), np.nan, np.float32)),
                        ("int-negative.tif", np.full((32, 32), -5, np.int32)),
                        ("int-deep.tif", np.full((32, 32), 40000, np.int32))):
        Image.fromarray(array).save(root / name)
    f.float_neg, f.float_nan, f.int_neg, f.int_deep = (root / n for n in (
        "float-negative.tif", "float-nan.tif", "int-negative.tif", "int-deep.tif"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> SimpleNamespace:
    """Every broken input of the catalogue, made once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    f = SimpleNamespace(root=root)
    _bad_models(root, f)
    _bad_files(root, f)
    return f


@pytest.fixture(scope="module")
def model():
    """The zoo's class-conditional Fashion-MNIST UNet."""
    from guidekit.checkpoints import load_model

    return load_model("fmnist-cfg")


# ---------------------------------------------------------------------------------------------------------------
# CLI rows: (id, argv(files, out), substrings the message must hold, monkeypatch setup or None)

def _oom(monkeypatch):
    """sample_guided runs out of GPU memory."""
    import guidekit.pipelines as pipelines

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(pipelines, "sample_guided", boom)


def _cpu_alloc(monkeypatch):
    """sample_guided hits the CPU allocator's limit."""
    import guidekit.pipelines as pipelines

    def boom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried "
                           "to allocate 81920000000 bytes.")

    monkeypatch.setattr(pipelines, "sample_guided", boom)


S = ["sample", "fmnist-cfg", "--no-progress"]
INP = ["inpaint", "fmnist-cfg", "--no-progress"]
ED = ["edit", "fmnist-cfg", "--no-progress"]
CTL = ["control", "fmnist-cfg", "--controlnet", "fmnist-canny", "--no-progress"]
TR = ["train", "--steps", "1", "--no-progress"]

CLI = [
    ("sample-w-negative", lambda f, o: S + ["--w", "-1", "--out", o], ["--w must be >= 0"], None),
    ("sample-w-nan", lambda f, o: S + ["--w", "nan", "--out", o], ["--w must be a finite number", "'nan'"], None),
    ("sample-w-inf", lambda f, o: S + ["--w", "inf", "--out", o], ["--w must be a finite number", "'inf'"], None),
    ("sample-guidance-scale-below-1", lambda f, o: S + ["--guidance-scale", "0.5", "--out", o],
     ["--guidance-scale must be >= 1 (it is 1 + w) and finite", "0.5"], None),
    ("sample-guidance-scale-inf", lambda f, o: S + ["--guidance-scale", "inf", "--out", o],
     ["--guidance-scale must be >= 1 (it is 1 + w) and finite", "inf"], None),
    ("sample-steps-zero", lambda f, o: S + ["--steps", "0", "--out", o], ["--steps must be >= 1, got 0"], None),
    ("sample-steps-not-int", lambda f, o: S + ["--steps", "2.5", "--out", o], ["--steps must be an integer", "2.5"],
     None),
    ("sample-steps-above-T", lambda f, o: S + ["--steps", "5000", "--class", "0", "--n", "1", "--out", o],
     ["steps (5000) must not exceed the training timesteps (1000)"], None),
    ("sample-eta-above-1", lambda f, o: S + ["--sampler", "ddim", "--eta", "2", "--steps", "2", "--class", "0", "--n",
                                            "1", "--out", o], ["eta must lie in [0, 1]", "got 2"], None),
    ("sample-eta-without-ddim", lambda f, o: S + ["--eta", "1", "--steps", "2", "--class", "0", "--n", "1", "--out", o],
     ["--eta 1 is DDIM's η", "--sampler dpmpp-2m-sde takes none", "use --sampler ddim"], None),
    ("sample-sampler-unknown", lambda f, o: S + ["--sampler", "euler", "--out", o], ["invalid choice: 'euler'"],
     None),
    ("sample-batch-size-zero", lambda f, o: S + ["--batch-size", "0", "--out", o], ["--batch-size must be >= 1"],
     None),
    ("sample-n-absurd", lambda f, o: S + ["--n", "1000000000", "--out", o],
     ["--n 1000000000 × 10 class(es) asks for 10000000000 images", "lower --n"], None),
    ("sample-batch-size-absurd", lambda f, o: S + ["--class", "0", "--n", "200000", "--batch-size", "200000",
                                                   "--out", o],
     ["--batch-size 200000 needs about", "lower --batch-size"], None),
    ("sample-out-of-gpu-memory", lambda f, o: S + ["--class", "0", "--n", "1", "--out", o],
     ["ran out of memory", "CUDA out of memory", "lower --batch-size"], _oom),
    ("sample-out-of-cpu-memory", lambda f, o: S + ["--class", "0", "--n", "1", "--out", o],
     ["ran out of memory", "not enough memory", "lower --batch-size"], _cpu_alloc),
    ("sample-class-unknown", lambda f, o: S + ["--class", "spaceship", "--out", o], ["spaceship"], None),
    ("sample-zoo-name-unknown", lambda f, o: ["sample", "fmnist-cfgg", "--out", o],
     ["model not found: fmnist-cfgg", "did you mean fmnist-cfg", "guidekit zoo list"], None),
    ("sample-model-missing", lambda f, o: ["sample", str(f.root / "no-such-run"), "--out", o],
     ["model not found", "no-such-run", "config.json + model.safetensors"], None),
    ("sample-out-is-a-file", lambda f, o: S + ["--out", str(f.file_out)], ["exists and is a file",
                                                                           "choose another --out"], None),
    ("sample-nan-weights", lambda f, o: ["sample", str(f.nan), "--out", o],
     ["holds NaN/inf values in 1 tensor(s): conv_in.weight", "re-train"], None),
    ("sample-config-shape-mismatch", lambda f, o: ["sample", str(f.shape), "--out", o],
     ["does not match its config.json", "conv_in.weight: file (32, 1, 3, 3) vs model (16, 1, 3, 3)",
      "conv_in.bias: file (32,) vs model (16,)"], None),
    ("sample-corrupt-safetensors", lambda f, o: ["sample", str(f.corrupt), "--out", o],
     ["model.safetensors", "corrupt or not safetensors"], None),
    ("sample-config-not-json", lambda f, o: ["sample", str(f.badjson), "--out", o],
     ["config.json", "the checkpoint is corrupt"], None),
    ("sample-missing-config", lambda f, o: ["sample", str(f.nocfg), "--out", o],
     ["has no config.json", "not a guidekit model or run"], None),
    ("sample-pickle-checkpoint", lambda f, o: ["sample", str(f.evil_pt), "--out", o],
     ["evil.pt looks like a pickled checkpoint", "arbitrary code"], None),
    ("sample-pickle-inside-folder", lambda f, o: ["sample", str(f.evil_dir), "--out", o],
     ["model.safetensors", "it is a pickle (torch.save) file", "never unpickles", "weights_only=True"], None),
    ("eval-inception-weights-pickle-with-code", lambda f, o: ["eval", "fmnist-cfg", "--inception-weights",
                                                              str(f.evil_pt), "--json", o],
     ["refused to load", "weights_only=True"], None),
    ("inpaint-image-not-an-image", lambda f, o: INP + ["--image", str(f.text), "--mask", "half", "--out", o],
     ["cannot read --image", "notes.png", "give a PNG or JPEG"], None),
    ("inpaint-image-truncated-png", lambda f, o: INP + ["--image", str(f.trunc), "--mask", "half", "--out", o],
     ["truncated.png", "truncated"], None),
    ("inpaint-mask-all-ones", lambda f, o: INP + ["--image", str(f.gray), "--mask", str(f.white), "--out", o],
     ["all ones", "mark the pixels to generate with 0"], None),
    ("inpaint-mask-all-zeros", lambda f, o: INP + ["--image", str(f.gray), "--mask", str(f.black), "--out", o],
     ["all zeros", "drop the mask"], None),
    ("inpaint-mask-not-an-image", lambda f, o: INP + ["--image", str(f.gray), "--mask", str(f.text), "--out", o],
     ["cannot read mask", "notes.png", "white = known"], None),
    ("inpaint-mask-kind-unknown", lambda f, o: INP + ["--image", str(f.gray), "--mask", "circle", "--out", o],
     ["mask file circle does not exist", "wide, narrow"], None),
    ("inpaint-jump-length-zero", lambda f, o: INP + ["--image", str(f.gray), "--mask", "half", "--jump-length",
                                                     "0", "--out", o], ["--jump-length must be >= 1"], None),
    ("inpaint-jump-n-sample-zero", lambda f, o: INP + ["--image", str(f.gray), "--mask", "half", "--jump-n-sample",
                                                       "0", "--out", o], ["--jump-n-sample must be >= 1"], None),
    ("inpaint-jump-longer-than-steps", lambda f, o: INP + ["--image", str(f.gray), "--mask", "half", "--steps", "5",
                                                           "--jump-length", "10", "--out", o],
     ["--jump-length 10 leaves no room", "use a --jump-length below 5"], None),
    ("inpaint-from-dataset-out-of-range", lambda f, o: INP + ["--from-dataset", "99999", "--dataset", "samples",
                                                              "--mask", "half", "--out", o],
     ["--from-dataset 99999 is out of range", "500 images"], None),
    ("inpaint-control-scale-negative", lambda f, o: INP + ["--image", str(f.gray), "--mask", "half",
                                                           "--control-scale", "-1", "--out", o],
     ["--control-scale must be >= 0"], None),
    ("edit-t0-zero", lambda f, o: ED + ["--guide", str(f.gray), "--t0", "0", "--out", o],
     ["--t0 must lie in (0, 1]", "try 0.5"], None),
    ("edit-t0-above-1", lambda f, o: ED + ["--guide", str(f.gray), "--t0", "1.5", "--out", o],
     ["--t0 must lie in (0, 1]", "1.5"], None),
    ("edit-repeats-zero", lambda f, o: ED + ["--guide", str(f.gray), "--repeats", "0", "--out", o],
     ["--repeats must be >= 1"], None),
    ("edit-guide-not-an-image", lambda f, o: ED + ["--guide", str(f.text), "--out", o],
     ["cannot read guide image", "notes.png", "pass a PNG, JPEG"], None),
    ("edit-guide-truncated-png", lambda f, o: ED + ["--guide", str(f.trunc), "--out", o],
     ["truncated.png", "truncated"], None),
    ("control-scale-negative", lambda f, o: CTL + ["--condition-image", str(f.gray), "--control-scale", "-1",
                                                   "--out", o], ["--control-scale must be >= 0"], None),
    ("control-scale-inf", lambda f, o: CTL + ["--condition-image", str(f.gray), "--control-scale", "inf",
                                              "--out", o], ["--control-scale must hold finite numbers"], None),
    ("control-condition-image-not-an-image", lambda f, o: CTL + ["--condition-image", str(f.text), "--out", o],
     ["cannot read condition image", "notes.png"], None),
    ("control-controlnet-name-unknown", lambda f, o: ["control", "fmnist-cfg", "--controlnet", "fmnist-cany",
                                                      "--condition-image", str(f.gray), "--out", o],
     ["fmnist-cany", "did you mean fmnist-canny"], None),
    ("train-empty-image-folder", lambda f, o: TR + ["--dataset", str(f.empty), "--out", o],
     ["has no images", "one subfolder per class"], None),
    ("train-folder-of-non-images", lambda f, o: TR + ["--dataset", str(f.junk), "--out", o],
     ["cannot read image", "a.png"], None),
    ("train-truncated-gzip-idx", lambda f, o: TR + ["--dataset", "fashion-mnist", "--data", str(f.idx_trunc),
                                                    "--out", o], ["train-images-idx3-ubyte.gz", "truncated"], None),
    ("train-corrupt-gzip-idx", lambda f, o: TR + ["--dataset", "fashion-mnist", "--data", str(f.idx_corrupt),
                                                  "--out", o], ["train-images-idx3-ubyte.gz", "corrupt"], None),
    ("train-missing-data-dir", lambda f, o: TR + ["--dataset", "fashion-mnist", "--data", str(f.root / "nowhere"),
                                                  "--out", o], ["nowhere", "apt-get install dataset-fashion-mnist"],
     None),
    ("sweep-cfg-w-inf", lambda f, o: ["sweep", "cfg", "fmnist-cfg", "--w", "0,inf", "--out", o],
     ["--w must hold finite numbers", "'0,inf'"], None),
    ("sweep-cfg-w-negative", lambda f, o: ["sweep", "cfg", "fmnist-cfg", "--w", "0,-1", "--n", "10", "--out", o],
     ["must be >= 0"], None),
    ("zoo-path-name-unknown", lambda f, o: ["zoo", "path", "fmnist-gan"], ["no zoo model named 'fmnist-gan'",
                                                                           "fmnist-cfg"], None),
    ("sample-prompt-on-class-model", lambda f, o: S + ["--prompt", "a bag", "--out", o],
     ["--prompt: fmnist-cfg takes no text prompt", "guidekit train --captions"], None),
    ("sample-negative-prompt-alone", lambda f, o: S + ["--negative-prompt", "a bag", "--out", o],
     ["--negative-prompt needs --prompt"], None),
    ("train-captions-unconditional", lambda f, o: TR + ["--captions", "--unconditional", "--out", o],
     ["--captions and --unconditional exclude each other"], None),
    ("control-prompt-on-class-model", lambda f, o: CTL + ["--condition-image", str(f.gray), "--prompt", "a bag",
                                                          "--out", o],
     ["--prompt: fmnist-cfg takes no text prompt", "guidekit train --captions"], None),
]


def _no_data(monkeypatch):
    """A machine without Fashion-MNIST: the system folder hidden, $GUIDEKIT_DATA unset."""
    from guidekit.data import idx

    monkeypatch.setenv(idx.HIDE_SYSTEM_ENV, "1")
    monkeypatch.delenv(idx.ENV_VAR, raising=False)


def _tiny_run(root: Path) -> Path:
    """A one-step tiny training run on the embedded samples (made once)."""
    run_dir = root / "tiny-run"
    if not run_dir.exists():
        assert main(["train", "--data", "samples", "--preset", "tiny", "--steps", "1", "--batch-size", "4",
                     "--no-progress", "--out", str(run_dir)]) == 0
    return run_dir


CLI += [
    ("inpaint-float-image-out-of-range", lambda f, o: INP + ["--image", str(f.float_neg), "--mask", "half",
                                                             "--out", o],
     ["float-negative.tif is a float image with values in [-0.5, -0.5]", "rescale it to [0, 1]"], None),
    ("sample-out-is-the-model", lambda f, o: ["sample", str(f.shape), "--out", str(f.shape), "--overwrite"],
     ["is the input MODEL", "never writes over its inputs"], None),
    ("sample-out-in-the-package", lambda f, o: S + ["--out", str(WEIGHTS / "fmnist-cfg"), "--overwrite"],
     ["lies inside guidekit's own files", "choose an --out outside it"], None),
    ("edit-out-holds-the-guide", lambda f, o: ED + ["--guide", str(f.gray), "--out", str(f.root), "--overwrite"],
     ["holds the input --guide", "gray.png"], None),
    ("sample-overwrite-not-a-sample-folder", lambda f, o: S + ["--out", str(f.junk), "--overwrite"],
     ["--overwrite replaces only an earlier output of 'guidekit sample'", "it holds a.png"], None),
    ("sample-out-under-a-file", lambda f, o: S + ["--out", str(f.file_out / "x")],
     ["lies under", "existing-file, which is a file"], None),
    ("sample-out-unwritable", lambda f, o: S + ["--out", "/proc/guidekit-out"],
     ["nothing can be created in /proc", "choose a folder you can write to"], None),
    ("sample-out-working-folder", lambda f, o: S + ["--out", ".", "--overwrite"],
     ["--out . is the working folder or holds it", "--out out/"], None),
    ("sample-out-empty", lambda f, o: S + ["--out", ""], ["--out is empty"], None),
    ("train-out-not-a-run", lambda f, o: TR + ["--data", "samples", "--out", str(f.junk)],
     ["is not empty and is not a guidekit run", "a.png"], None),
    ("sweep-out-is-a-file", lambda f, o: ["sweep", "cfg", "fmnist-cfg", "--out", str(f.file_out)],
     ["exists and is a file, not a folder"], None),
    ("eval-json-unwritable", lambda f, o: ["eval", "fmnist-cfg", "--json", "/proc/guidekit.json"],
     ["--json /proc/guidekit.json: nothing can be created"], None),
    ("sample-seed-too-large", lambda f, o: S + ["--seed", str(2 ** 64), "--out", o],
     ["--seed must be <= 4294967295", "18446744073709551616"], None),
    ("sample-class-no-letters", lambda f, o: S + ["--class", "—", "--out", o],
     ["class '—' has no letters or digits", "0=T-shirt/top"], None),
    ("sample-class-value-huge", lambda f, o: S + ["--class", "x" * 10000, "--out", o],
     ["unknown class", "characters cut"], None),
    ("inpaint-image-is-a-folder", lambda f, o: INP + ["--image", str(f.empty), "--mask", "half", "--out", o],
     ["is a folder, not an image file"], None),
    ("sample-integer-weights", lambda f, o: ["sample", str(f.intw), "--out", o],
     ["stores 1 weight tensor(s) as integers", "conv_in.weight (torch.int64)"], None),
    ("eval-no-dataset", lambda f, o: ["eval", "fmnist-cfg", "--n", "10"],
     ["no IDX data found", "--data samples (or GUIDEKIT_DATA=samples)"], _no_data),
    ("sweep-no-dataset-before-sampling", lambda f, o: ["sweep", "cfg", "fmnist-cfg", "--n", "20", "--out", o],
     ["no IDX data found", "--data samples"], _no_data),
    ("train-resume-contradicting-preset", lambda f, o: ["train", "--out", str(_tiny_run(f.root)), "--resume",
                                                        "--preset", "small", "--no-progress"],
     ["was trained with --preset tiny, not small", "drop --preset"], None),
]


def _sd(f, kind: str = "ok"):
    """tests/sd_tiny.py's pipeline folder under the catalogue's root (built once): "ok", "broken" (no tokenizer/),
    "sd3" (a diffusion-transformer index), or "cn" (a tiny ControlNetModel folder for it)."""
    from sd_tiny import tiny_controlnet, tiny_pipeline

    if not hasattr(f, "sd"):
        f.sd_pipe, f.sd = tiny_pipeline(f.root / "sd")
        f.sd_broken = shutil.copytree(f.sd, f.root / "sd-broken")
        shutil.rmtree(f.sd_broken / "tokenizer")
        f.sd3 = shutil.copytree(f.sd, f.root / "sd3")
        index = json.loads((f.sd3 / "model_index.json").read_text())
        index.update(_class_name="StableDiffusion3Pipeline", transformer=["diffusers", "SD3Transformer2DModel"],
                     text_encoder_3=["transformers", "T5EncoderModel"])
        (f.sd3 / "model_index.json").write_text(json.dumps(index))
        tiny_controlnet(f.sd_pipe, f.root / "sd-cn")
        f.sd_cn = f.root / "sd-cn"
    return str({"ok": f.sd, "broken": f.sd_broken, "sd3": f.sd3, "cn": f.sd_cn}[kind])


CLI += [
    ("latent-folder-missing-part", lambda f, o: ["sample", _sd(f, "broken"), "--prompt", "a bag", "--out", o],
     ["lacks tokenizer/", "has unet/, vae/, text_encoder/, tokenizer/, scheduler/"], None),
    ("latent-folder-sd3", lambda f, o: ["sample", _sd(f, "sd3"), "--prompt", "a bag", "--out", o],
     ["is a diffusion-transformer pipeline", "as SD3 and Flux have", "Stable Diffusion 1.x/2.x"], None),
    ("train-latent-preset-base", lambda f, o: ["train", "--latent", "--preset", "base", "--out", o],
     ["--latent has the presets tiny, small; got --preset base"], None),
    ("train-latent-used-folder", lambda f, o: ["train", "--latent", "--preset", "tiny", "--out", str(f.root)],
     ["is not empty; a new --latent run needs a new or empty --out, or pass --resume"], None),
    ("sample-latent-pixel-classifier", lambda f, o: ["sample", _sd(f), "--classifier", "fmnist-classifier",
                                                     "--class", "bag", "--n", "1", "--out", o],
     ["reads 1×32² inputs, the model samples 4×8×8 latents", "guidekit train-classifier --like MODEL"], None),
    ("sample-text-classifier-without-class", lambda f, o: ["sample", _sd(f), "--classifier", "fmnist-classifier",
                                                           "--n", "1", "--out", o],
     ["name the class to guide towards with --class"], None),
]


CLI += [
    ("guidance-cfgpp-other-sampler", lambda f, o: S + ["--guidance-rule", "cfgpp", "--sampler", "dpmpp-2m", "--out", o],
     ["CFG++ renoises DDIM's direction term", "runs with --sampler ddim, not dpmpp-2m"], None),
    ("guidance-cfgpp-lambda-above-one", lambda f, o: S + ["--guidance-rule", "cfgpp", "--w", "2", "--sampler", "ddim",
                                                           "--out", o],
     ["CFG++'s λ (given as w) must lie in [0, 1]", "got w = 2.0"], None),
    ("guidance-rule-without-w", lambda f, o: S + ["--class", "bag", "--guidance-rule", "apg", "--w", "0", "--out", o],
     ["--guidance-rule apg, --rescale and --guidance-interval change how guidance combines", "give w > 0"], None),
    ("guidance-interval-reversed", lambda f, o: S + ["--guidance-interval", "5,1", "--out", o],
     ["--guidance-interval needs 0 <= lo < hi (hi may be inf), like 0.3,5, got '5,1'"], None),
    ("guidance-rescale-out-of-range", lambda f, o: S + ["--rescale", "1.5", "--out", o],
     ["CFG rescale factor φ must lie in [0, 1]", "got 1.5"], None),
    ("guidance-apg-momentum-out-of-range", lambda f, o: S + ["--guidance-rule", "apg", "--apg-momentum", "1.5",
                                                              "--out", o],
     ["APG's momentum β must lie in (-1, 1)", "got 1.5"], None),
    ("guide-model-latent-for-pixel", lambda f, o: S + ["--guide-model", _sd(f), "--out", o],
     ["samples 4×8×8, the model 1×32×32", "autoguidance needs the same sample space"], None),
    ("dynamic-threshold-latent", lambda f, o: ["sample", _sd(f), "--prompt", "a bag", "--dynamic-threshold", "--n",
                                               "1", "--out", o],
     ["a latent model's latents have no such range", "drop --dynamic-threshold"], None),
]


DST = ["distill", "fmnist-cfg", "--no-progress"]

CLI += [
    ("distill-w-range-reversed", lambda f, o: DST + ["--w-range", "4,0", "--out", o],
     ["--w-range '4,0' needs 0 <= lo < hi", "e.g. --w-range 0,4"], None),
    ("distill-w-range-inf", lambda f, o: DST + ["--w-range", "0,inf", "--out", o],
     ["--w-range '0,inf' is not two finite numbers", "e.g. --w-range 0,4"], None),
    ("distill-latent-teacher", lambda f, o: ["distill", _sd(f), "--out", o],
     ["is a text-to-image pipeline", "supports only guidekit UNet models"], None),
    ("distill-out-not-a-run", lambda f, o: DST + ["--data", "samples", "--out", str(f.junk)],
     ["is not empty and is not a guidekit run", "a.png"], None),
]


RST = ["restore", "fmnist-cfg", "--from-dataset", "0", "--data", "samples", "--dataset", "samples", "--steps", "2",
       "--n", "1", "--no-progress"]

CLI += [
    ("restore-inpaint-without-mask", lambda f, o: RST + ["--task", "inpaint", "--out", o],
     ["--task inpaint needs --mask KIND|FILE (white = known)"], None),
    ("restore-mask-on-other-task", lambda f, o: RST + ["--task", "sr4", "--mask", "half", "--out", o],
     ["--mask is for --task inpaint, not sr4"], None),
    ("restore-ddnm-plus-deterministic-step", lambda f, o: RST + ["--task", "sr4", "--method", "ddnm", "--sigma-y",
                                                                "0.05", "--out", o],
     ["DDNM+ hides y's noise in the step's own noise", "--sampler ddpm, or ddim with --eta in (0, 1]"], None),
    ("restore-measurement-wrong-size", lambda f, o: ["restore", "fmnist-cfg", "--task", "sr2", "--measurement",
                                                     str(_png(f.root / "low8.png", 100, size=8)), "--out", o],
     ["is 8×8, but sr2 of this 32×32 model measures 16×16 images", "resize it to 16×16"], None),
    ("restore-latent-model", lambda f, o: ["restore", _sd(f), "--task", "sr2", "--image",
                                           str(_png(f.root / "img32.png", 100)), "--out", o],
     ["is a latent or text-conditioned model", "'guidekit inpaint'"], None),
    ("restore-zeta-on-other-method", lambda f, o: RST + ["--task", "sr4", "--method", "pigdm", "--zeta", "3",
                                                        "--out", o],
     ["--zeta is DPS/MCG's step size, not pigdm's"], None),
    ("sweep-restore-unknown-task", lambda f, o: ["sweep", "restore", "fmnist-cfg", "--tasks", "sr4,denoise", "--out",
                                                 o],
     ["--tasks: unknown ['denoise']", "inpaint, sr2, sr4, deblur"], None),
]


def _run(argv: list[str]) -> int:
    """main(argv), with argparse's SystemExit turned into its code."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv,needles,setup", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cli(files, tmp_path, capsys, monkeypatch, argv, needles, setup):
    """Exit code 2, a message naming the value and the fix, nothing written next to --out."""
    if setup is not None:
        setup(monkeypatch)
    out = tmp_path / "out"
    before = files.file_out.read_text()
    assert _run(argv(files, str(out))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no output, no stray .out.tmp-* folder
    assert files.file_out.read_text() == before and not files.marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Python API rows: (id, call(files, model), substrings the GuidekitError must hold)

def _x(n=2):
    """n blank 1x32x32 images."""
    return torch.zeros(n, *IMAGE)


def _half_mask(n=1):
    """n masks whose left half is known."""
    m = torch.zeros(n, *IMAGE)
    m[..., :16] = 1
    return m


def _gen(model, shape=IMAGE, seeds=(0,), cond=None, **kw):
    """sampling.generate with the model's denoiser, one step by default."""
    from guidekit.sampling import generate

    cond = {"y": torch.tensor([1] * len(seeds))} if cond is None else cond
    return generate(model.denoiser(), model.schedule, shape, list(seeds), cond, **{"steps": 1, **kw})


def _nan_like(shape):
    """Zeros of shape with one NaN."""
    x = torch.zeros(shape)
    x.view(-1)[5] = float("nan")
    return x


def _mask_nan():
    """A half mask with one NaN in its unknown half."""
    m = _half_mask()
    m[0, 0, 0, 20] = float("nan")
    return m


def _sample_nan_net(f, model):
    """Sample a freshly loaded model after writing a NaN into one of its weights."""
    from guidekit.checkpoints import load_model
    from guidekit.pipelines import Guidance, SamplerSettings, sample_guided

    broken = load_model("fmnist-cfg")
    with torch.no_grad():
        broken.net.conv_in.weight[0, 0, 0, 0] = float("nan")  # in memory only: what a bad in-place edit does
    sample_guided(broken, torch.tensor([1]), [0], Guidance(), SamplerSettings(steps=1))


def _inpaint_nan(f, model):
    """RePaint an image holding a NaN."""
    from guidekit.pipelines import Guidance, SamplerSettings
    from guidekit.pipelines import inpaint_guided

    inpaint_guided(model, _nan_like((1, *IMAGE)), _half_mask(), torch.tensor([1]), [0], Guidance(),
                   SamplerSettings(steps=2), 1, 1)


def _class_prompt_cond(M, labels):
    from guidekit.pipelines import class_prompt_cond

    return class_prompt_cond(M, labels)


def _controlled(model, **kw):
    """The model steered by the zoo's canny ControlNet."""
    from guidekit.checkpoints import load_controlnet
    from guidekit.models.controlnet import ControlledUNet

    return ControlledUNet(model.net, load_controlnet("fmnist-canny", model.net).net, **kw)


def _memory_guard():
    """The CPU allocator's error inside memory_guard."""
    from guidekit.cli.common import memory_guard

    with memory_guard("--batch-size"):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 81920000000 bytes.")


def _unet_dict(**change):
    """fmnist-cfg's UNet config dict with some fields changed."""
    return {**json.loads((WEIGHTS / "fmnist-cfg" / "config.json").read_text())["unet"], **change}


def _api():
    """The Python API rows (imports deferred so collection stays fast)."""
    from guidekit.conditions import get_condition, load_condition_image
    from guidekit.conditions.base import check_hint
    from guidekit.data import ImageDataset, load_dataset, read_idx
    from guidekit.data.folder import load_folder
    from guidekit.diffusion.schedule import NoiseSchedule
    from guidekit.guidance import ClassifierFreeGuidance, ClassifierGuidance, guidance_scale_to_w
    from guidekit.guides import load_guide, stroke_painting
    from guidekit.metrics.evaluate import load_sample_dir
    from guidekit.metrics.inception import read_weights
    from guidekit.metrics.scores import inception_score
    from guidekit.models.unet import UNetConfig
    from guidekit.sampling.repaint import inpaint, repaint_levels
    from guidekit.sampling.sdedit import check_guide, check_t0, sdedit, sdedit_levels
    from guidekit.checkpoints import load_classifier, load_model
    import guidekit.masks as m
    from guidekit.cli.common import check_memory

    return [
        ("mask-3d", lambda f, M: m.check_mask(torch.ones(1, 32, 32), _x()), ["mask must be 4-D", "mask[None, None]"]),
        ("mask-wrong-size", lambda f, M: m.check_mask(torch.ones(1, 1, 16, 16), _x()),
         ["mask is 16x16 but the images are 32x32", "resize the mask to 32x32"]),
        ("mask-three-channels", lambda f, M: m.check_mask(torch.ones(1, 3, 32, 32), _x()),
         ["mask must have 1 channel", "(1, 3, 32, 32)"]),
        ("mask-batch-mismatch", lambda f, M: m.check_mask(_half_mask(3), _x(2)),
         ["mask batch 3 must be 1 or the number of images 2"]),
        ("mask-non-binary", lambda f, M: m.check_mask(_half_mask() * 0.5, _x()),
         ["only 0 (generate) and 1 (known)", "0.5", "(mask > 0.5).float()"]),
        ("mask-all-ones", lambda f, M: m.check_mask(torch.ones(1, *IMAGE), _x()), ["all ones", "keeps everything"]),
        ("mask-all-zeros", lambda f, M: m.check_mask(torch.zeros(1, *IMAGE), _x()), ["all zeros", "drop the mask"]),
        ("mask-nan", lambda f, M: m.check_mask(_mask_nan(), _x()), ["nan", "threshold it"]),
        ("mask-not-a-tensor", lambda f, M: m.check_mask(np.ones((1, *IMAGE)), _x()),
         ["mask must be a tensor, got ndarray"]),
        ("mask-kind-unknown", lambda f, M: m.make_mask("circle"), ["unknown mask kind 'circle'", "wide"]),
        ("mask-file-not-an-image", lambda f, M: m.load_mask(f.text), ["cannot read mask", "notes.png"]),
        ("cfg-w-negative", lambda f, M: ClassifierFreeGuidance(M.denoiser(), -0.5),
         ["w must be >= 0 and finite", "-0.5", "w = s - 1"]),
        ("cfg-w-inf", lambda f, M: ClassifierFreeGuidance(M.denoiser(), float("inf")), ["finite", "got inf"]),
        ("cfg-w-nan", lambda f, M: ClassifierFreeGuidance(M.denoiser(), float("nan")), ["finite", "got nan"]),
        ("classifier-w-nan", lambda f, M: ClassifierGuidance(M.denoiser(), torch.nn.Identity(), M.schedule,
                                                             float("nan")),
         ["classifier guidance weight must be >= 0 and finite", "nan"]),
        ("guidance-scale-below-1", lambda f, M: guidance_scale_to_w(0.5), ["--guidance-scale must be", ">= 1", "0.5"]),
        ("generate-y-float", lambda f, M: _gen(M, cond={"y": torch.tensor([1.0])}), ["y must be an integer tensor"]),
        ("generate-y-out-of-range", lambda f, M: _gen(M, cond={"y": torch.tensor([42])}),
         ["labels must be in [0, 10]", "42"]),
        ("generate-wrong-channels", lambda f, M: _gen(M, shape=(3, 32, 32)), ["x must be a (B, 1, H, W)",
                                                                             "(1, 3, 32, 32)"]),
        ("generate-shape-without-channels", lambda f, M: _gen(M, shape=(32, 32)), ["(1, 32, 32)"]),
        ("generate-cond-rows-mismatch", lambda f, M: _gen(M, cond={"y": torch.tensor([1, 2])}),
         ["cond['y'] has 2 rows but there are 1 seeds"]),
        ("generate-steps-zero", lambda f, M: _gen(M, steps=0), ["steps must be an integer >= 1, got 0"]),
        ("generate-steps-float", lambda f, M: _gen(M, steps=2.5), ["steps must be an integer >= 1, got 2.5"]),
        ("generate-steps-above-T", lambda f, M: _gen(M, steps=1001),
         ["steps (1001) must not exceed the training timesteps (1000)"]),
        ("generate-sampler-unknown", lambda f, M: _gen(M, sampler="euler"), ["unknown sampler 'euler'", "ddim"]),
        ("generate-eta-above-1", lambda f, M: _gen(M, eta=1.5), ["eta must lie in [0, 1]", "1.5"]),
        ("generate-spacing-unknown", lambda f, M: _gen(M, spacing="random"),
         ["unknown timestep spacing 'random'", "trailing"]),
        ("schedule-timestep-out-of-range", lambda f, M: M.schedule.alpha_bar(1000.0),
         ["timestep out of range [-1, 999]", "1000"]),
        ("sdedit-t0-zero", lambda f, M: check_t0(0.0), ["t0 = 0.0 is not a noise level in (0, 1]", "e.g. 0.5"]),
        ("sdedit-t0-above-1", lambda f, M: sdedit_levels(M.schedule, 1.5, 10), ["t0 = 1.5", "(0, 1]"]),
        ("sdedit-guide-uint8", lambda f, M: check_guide(torch.zeros(1, *IMAGE, dtype=torch.uint8), 1),
         ["must be a float tensor", "torch.uint8"]),
        ("sdedit-guide-nan", lambda f, M: check_guide(_nan_like((1, *IMAGE)), 1), ["guide contains NaN"]),
        ("sdedit-guide-0-255", lambda f, M: check_guide(torch.full((1, *IMAGE), 255.0), 1),
         ["spans 255..255", "x / 127.5 - 1"]),
        ("sdedit-guide-rows-mismatch", lambda f, M: check_guide(torch.zeros(3, *IMAGE), 2),
         ["guide has 3 rows but there are 2 seeds"]),
        ("sdedit-repeats-zero", lambda f, M: sdedit(M.denoiser(), M.schedule, torch.zeros(1, *IMAGE), 0.5, {},
                                                    "ddim", [0], 1, repeats=0), ["repeats = 0", "K >= 1"]),
        ("stroke-painting-3d", lambda f, M: stroke_painting(torch.zeros(*IMAGE)), ["(B, C, H, W)", "(1, 32, 32)"]),
        ("repaint-jump-length-zero", lambda f, M: repaint_levels(M.schedule.timesteps(10), 0, 2),
         ["jump_length must be an integer >= 1, got 0"]),
        ("repaint-jump-n-sample-zero", lambda f, M: repaint_levels(M.schedule.timesteps(10), 2, 0),
         ["jump_n_sample must be an integer >= 1, got 0"]),
        ("repaint-jump-longer-than-steps", lambda f, M: repaint_levels(M.schedule.timesteps(5), 10, 2),
         ["jump_length 10 leaves no room to jump back within 5 steps"]),
        ("inpaint-image-3d", lambda f, M: inpaint(M.denoiser(), M.schedule, torch.zeros(*IMAGE), _half_mask(), {},
                                                  "ddim", [0], 2), ["x0_known must be (1 or 1, C, H, W)"]),
        ("inpaint-image-nan", _inpaint_nan, ["without NaN or infinite values"]),
        ("condition-two-channels", lambda f, M: get_condition("canny")(torch.zeros(1, 2, 32, 32)),
         ["has 2 channels", "gray (1) or RGB (3)"]),
        ("condition-uint8-image", lambda f, M: get_condition("canny")(torch.zeros(1, *IMAGE, dtype=torch.uint8)),
         ["must be float in [-1, 1]", "torch.uint8"]),
        ("condition-nan-image", lambda f, M: get_condition("sketch")(_nan_like((1, *IMAGE))), ["NaN"]),
        ("hint-nan", lambda f, M: check_hint(_nan_like((1, *IMAGE)), torch.zeros(1, *IMAGE), 1),
         ["hint contains NaN", "re-extract"]),
        ("hint-wrong-channels", lambda f, M: check_hint(torch.zeros(1, 3, 32, 32), torch.zeros(1, *IMAGE), 1),
         ["hint shape (1, 3, 32, 32) does not match", "(B, 1, H, W)"]),
        ("controlnet-hint-wrong-channels", lambda f, M: _controlled(M)(torch.zeros(1, *IMAGE), torch.tensor([5.0]),
                                                                      hint=torch.zeros(1, 3, 32, 32)),
         ["hint", "(1, 3, 32, 32)"]),
        ("control-scale-negative", lambda f, M: _controlled(M, control_scale=-1.0),
         ["control_scale must be finite and >= 0", "-1.0"]),
        ("control-window-reversed", lambda f, M: _controlled(M, control_start=0.8, control_end=0.2),
         ["control_start <= control_end", "start=0.8"]),
        ("controlnet-text-on-class-base", lambda f, M: _controlled(M)(torch.zeros(1, *IMAGE), torch.tensor([5.0]),
                                                                     hint=torch.zeros(1, *IMAGE),
                                                                     text=torch.zeros(1, 384)),
         ["takes no text prompt", "guidekit train --captions"]),
        ("class-prompts-outside-fmnist", lambda f, M: _class_prompt_cond(M, torch.tensor([3, 12, 10])),
         ["labels [10, 12] are outside 0–9", "use Fashion-MNIST images"]),
        ("condition-image-not-an-image", lambda f, M: load_condition_image(f.text),
         ["cannot read condition image", "not an image"]),
        ("condition-image-truncated", lambda f, M: load_condition_image(f.trunc), ["truncated.png", "truncated"]),
        ("condition-image-missing", lambda f, M: load_condition_image(f.root / "missing.png"),
         ["missing.png does not exist"]),
        ("guide-image-is-a-folder", lambda f, M: load_guide(f.empty), ["is not a file", "pass an image file"]),
        ("idx-truncated-gzip", lambda f, M: read_idx(f.idx_trunc / "train-images-idx3-ubyte.gz"),
         ["train-images-idx3-ubyte.gz", "expected 15680 bytes of pixels", "truncated"]),
        ("idx-corrupt-gzip", lambda f, M: read_idx(f.idx_corrupt / "train-images-idx3-ubyte.gz"),
         ["corrupt gzip file"]),
        ("idx-gzip-cut-in-header", lambda f, M: read_idx(f.idx_header),
         ["gzip stream ends early (only 0 bytes decompress)", "truncated"]),
        ("idx-bad-magic", lambda f, M: read_idx(f.idx_magic), ["is not an IDX file", "bad magic number 0x504b0304"]),
        ("dataset-two-channels", lambda f, M: ImageDataset(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), None, None,
                                                           "mine"), ["mine: pixels need 1 or 3 channels, got 2"]),
        ("dataset-float-pixels", lambda f, M: ImageDataset(torch.zeros(2, 1, 8, 8), None, None, "mine"),
         ["pixels must be uint8 (N, C, H, W)", "torch.float32"]),
        ("dataset-empty-folder", lambda f, M: load_folder(f.empty), ["has no images", "one subfolder per class"]),
        ("dataset-folder-of-non-images", lambda f, M: load_folder(f.junk), ["cannot read image", "a.png"]),
        ("dataset-name-unknown", lambda f, M: load_dataset("cifar10"), ["cifar10"]),
        ("samples-manifest-broken", lambda f, M: load_sample_dir(f.samples),
         ["manifest.json", "KeyError", "delete it"]),
        ("unet-config-unknown-key", lambda f, M: UNetConfig.from_dict(_unet_dict(colour=3)),
         ["unknown UNetConfig key(s) ['colour']"]),
        ("unet-config-missing-key", lambda f, M: UNetConfig.from_dict(
            {k: v for k, v in _unet_dict().items() if k != "channels"}), ["missing key(s) ['channels']"]),
        ("unet-config-bad-value", lambda f, M: UNetConfig.from_dict(_unet_dict(channels=-4)),
         ["UNetConfig.channels must be a positive integer, got -4"]),
        ("schedule-config-unknown-key", lambda f, M: NoiseSchedule.from_config({"kind": "linear", "betas": 1}),
         ["unknown linear schedule key(s) ['betas']", "num_timesteps"]),
        ("schedule-config-bad-T", lambda f, M: NoiseSchedule.from_config({"kind": "cosine", "num_timesteps": "1k"}),
         ["num_timesteps must be an integer", "'1k'"]),
        ("schedule-config-kind-unknown", lambda f, M: NoiseSchedule.from_config({"kind": "sigmoid"}),
         ["unknown noise schedule 'sigmoid'"]),
        ("load-model-nan-weights", lambda f, M: load_model(f.nan), ["NaN/inf", "conv_in.weight"]),
        ("load-model-shape-mismatch", lambda f, M: load_model(f.shape),
         ["conv_in.weight: file (32, 1, 3, 3) vs model (16, 1, 3, 3)", "conv_in.bias: file (32,) vs model (16,)",
          "time_embed.0.weight: file (128, 32) vs model (64, 16)"]),
        ("load-model-corrupt-safetensors", lambda f, M: load_model(f.corrupt), ["corrupt or not safetensors"]),
        ("load-model-missing-config", lambda f, M: load_model(f.nocfg), ["has no config.json"]),
        ("load-model-pickle-file", lambda f, M: load_model(f.evil_pt), ["pickled checkpoint (.pt)"]),
        ("load-model-pickle-renamed", lambda f, M: load_model(f.evil_dir), ["pickle (torch.save) file, not "
                                                                             "safetensors"]),
        ("samples-not-finite", _sample_nan_net, ["1 of 1 samples contain NaN/inf", "reload the checkpoint"]),
        ("weights-pickle-with-code", lambda f, M: read_weights(f.evil_pt), ["refused to load", "weights_only"]),
        ("weights-raw-pickle-with-code", lambda f, M: read_weights(f.evil_raw), ["refused to load"]),
        ("weights-legacy-pt-wrong-keys", lambda f, M: read_weights(f.legacy_pt),
         ["is not an FID InceptionV3 state dict"]),
        ("memory-estimate-too-big", lambda f, M: check_memory(M.net, 10 ** 9, 64, "cpu"), ["lower --n"]),
        ("memory-allocator-failure", lambda f, M: _memory_guard(), ["ran out of memory", "lower --batch-size"]),
        ("condition-image-nan-pixels", lambda f, M: load_condition_image(f.float_nan),
         ["float-nan.tif has 1024 NaN or infinite pixels", "numpy.nan_to_num"]),
        ("mask-negative-integers", lambda f, M: m.load_mask(f.int_neg),
         ["32-bit signed image with values in [-5, -5]", "save it as an 8- or 16-bit PNG"]),
        ("guide-reads-all-black", lambda f, M: load_guide(f.int_deep),
         ["only reach 40000", "reads as all black", "stretch its contrast"]),
        ("inception-score-seed-not-int", lambda f, M: inception_score(torch.full((10, 2), 0.5), seed="x"),
         ["seed must be an integer, got 'x'"]),
        ("load-model-integer-weights", lambda f, M: load_model(f.intw),
         ["stores 1 weight tensor(s) as integers", "conv_in.weight (torch.int64)", "float32"]),
        ("load-model-newer-format", lambda f, M: load_model(f.newer),
         ["written by a newer guidekit (format 'guidekit-unet/2'", "reads unet folders up to 'guidekit-unet/1'",
          "upgrade guidekit"]),
        ("load-classifier-other-kind", lambda f, M: load_classifier(WEIGHTS / "fmnist-canny"),
         ["has format 'guidekit-controlnet/1', expected 'guidekit-classifier/1'", "that is a ControlNet",
          "pass a noise-aware classifier (guidekit train-classifier)"]),
        ("latent-inpaint-mask-latent-size", lambda f, M: _latent_inpaint(f, torch.ones(1, 1, 8, 8)),
         ["the mask must be (N or 1, 1, 16, 16) at the pixel size", "on the 8×8 latent grid itself"]),
        ("latent-inpaint-mask-no-whole-cell", lambda f, M: _latent_inpaint(f, _lines(16)),
         ["mask 0 keeps no whole 2×2 pixel cell", "every-second-line", "use a mask of blocks"]),
        ("latent-hint-latent-size", lambda f, M: _latent_control(f, torch.zeros(1, 3, 8, 8)),
         ["hint 0 must be a (1 or 1, 3, 16, 16) tensor"]),
        ("restore-y-rows", lambda f, M: _restore(torch.zeros(2, 1, 16, 16), [0]),
         ["y must have one row per image (1), got (2, 1, 16, 16)"]),
        ("restore-ddnm-plus-multistep", lambda f, M: _restore(torch.zeros(1, 1, 16, 16), [0], "dpmpp-2m", 0.1),
         ["DDNM+ (ddnm with --sigma-y > 0) replaces the step", "use --sampler ddpm or ddim"]),
        ("restore-sr-indivisible", lambda f, M: make_operator("sr4")(torch.zeros(1, 1, 30, 30)),
         ["×4 super-resolution needs a side divisible by 4, got 30×30"]),
        ("unet-w-missing", lambda f, M: _student()(_x(1), torch.tensor([5.0]), y=torch.tensor([1])),
         ["guidance-distilled student (guidance_embed=True) and needs its CFG weight", "w=torch.full((B,), w)"]),
        ("unet-w-on-plain-model", lambda f, M: M.net(_x(1), torch.tensor([5.0]), y=torch.tensor([1]),
                                                     w=torch.zeros(1)),
         ["takes no guidance weight w (guidance_embed=False)", "'guidekit distill'"]),
    ]


def _restore(y, seeds, sampler="ddim", sigma_y=0.0):
    from guidekit.checkpoints import load_model
    from guidekit.diffusion import NULL
    from guidekit.pipelines import Guidance, SamplerSettings, restore_guided
    from guidekit.restoration import Method

    model = load_model("fmnist-cfg")
    return restore_guided(model, y, make_operator("sr2"), Method("ddnm"), torch.full((len(seeds),), NULL), seeds,
                          Guidance(), SamplerSettings(sampler, 2), sigma_y)


def make_operator(task):
    from guidekit.restoration import make_operator as make

    return make(task)


def _student():
    """A tiny guidance-distilled UNet (guidance_embed=True)."""
    from guidekit.models.unet import UNet, UNetConfig

    return UNet(UNetConfig.preset("tiny", num_classes=10, guidance_embed=True))


def _lines(side: int) -> torch.Tensor:
    """A (1, 1, side, side) mask keeping every second row."""
    mask = torch.ones(1, 1, side, side)
    mask[..., ::2, :] = 0
    return mask


def _latent_inpaint(f, mask):
    from guidekit.checkpoints import load_model
    from guidekit.diffusion import NULL
    from guidekit.pipelines import Guidance, SamplerSettings, inpaint_guided, prompt_cond

    model = load_model(_sd(f))
    return inpaint_guided(model, torch.zeros(1, 3, 16, 16), mask, torch.full((1,), NULL), [0], Guidance(),
                          SamplerSettings("ddim", 2), 1, 1, cond=prompt_cond(model, ["a bag"]))


def _latent_control(f, hint):
    from guidekit.checkpoints import load_controlnet, load_model
    from guidekit.diffusion import NULL
    from guidekit.pipelines import SamplerSettings, control_samples, prompt_cond

    model = load_model(_sd(f))
    net = load_controlnet(_sd(f, "cn"), model.net)
    return control_samples(model, [net], [hint], torch.full((1,), NULL), [0], 1.0, SamplerSettings("ddim", 2),
                           cond=prompt_cond(model, ["a bag"]))


API = _api()


@pytest.mark.parametrize("call,needles", [c[1:] for c in API], ids=[c[0] for c in API])
def test_api(files, model, call, needles):
    """A GuidekitError whose message holds every needle; a planted pickle payload never runs."""
    with pytest.raises(GuidekitError) as err:
        call(files, model)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert not files.marker.exists()


def test_planted_pickle_payload_is_live_but_never_runs(files, tmp_path):
    """The payload works when unpickled carelessly; guidekit's loaders never run it."""
    from guidekit.checkpoints import load_model
    from guidekit.metrics.inception import read_weights

    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))  # the plain unpickler runs it: the payload is real
    assert probe.exists()
    for load in (load_model, read_weights):
        for path in (files.evil_pt, files.evil_raw, files.evil_dir):
            with pytest.raises(GuidekitError):
                load(path)
    assert not files.marker.exists()


def _doc_ids() -> list[str]:
    """Test ids in the last column of docs/errors.md's table rows (`| N | ... | `test_cli[ID]` |`)."""
    rows = [line for line in DOC.read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    return [m.group(1) for line in rows if (m := re.search(r"`(test_\w+\[[\w.-]+\])` \|$", line))] + \
        [f"row without a test id: {line[:40]}" for line in rows if not re.search(r"`test_\w+\[[\w.-]+\]` \|$", line)]


def test_doc_lists_every_row_once():
    """docs/errors.md and these tests cannot drift: the same ids, one row each."""
    ids = _doc_ids()
    want = [f"test_cli[{c[0]}]" for c in CLI] + [f"test_api[{c[0]}]" for c in API]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert sorted(ids) == sorted(want), (sorted(set(ids) - set(want)), sorted(set(want) - set(ids)))
    assert len(set(want)) == len(want)
