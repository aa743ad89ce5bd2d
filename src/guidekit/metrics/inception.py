"""FID InceptionV3 (the 2015-12-05 TensorFlow graph behind FID/IS): 2048-d pool3 features, 1008 logits for IS.

guidekit's own implementation of the published architecture, with the FID graph's quirks: BatchNorm eps 1e-3,
the 3x3 pooling branches average without counting the zero padding, and the last block (Mixed_7c) max-pools.
Module names follow pytorch-fid's weights file (pt_inception-2015-12-05-6726825d.pth: `Conv2d_1a_3x3.conv.weight`,
`Mixed_5b.branch1x1.conv.weight`, `fc.weight`, ...), so that state dict loads with strict=True. No weights ship
with guidekit: users pass their own file, read as safetensors or with torch.load(weights_only=True), never
unpickled otherwise.

Input: images in [-1, 1], 1 (grayscale, repeated) or 3 channels, any size; they are resized bilinearly
(align_corners=False, as pytorch-fid) to 299x299 and fed in [-1, 1], the range the TF graph's own preprocessing
(x / 127.5 - 1) produces and pytorch-fid feeds.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from guidekit.errors import GuidekitError, check

SIZE = 299
FEATURES = 2048
LOGITS = 1008
CHUNK = 32  # images per forward pass inside features_and_probs (bounds memory at 299x299)
LAYOUT = ("pytorch-fid's FID Inception layout (pt_inception-2015-12-05-6726825d.pth: Conv2d_1a_3x3.conv.weight, "
          "Mixed_5b.branch1x1.conv.weight, ..., fc.weight, fc.bias)")
# pytorch-fid's InceptionV3 wrapper stores the same modules as blocks.I.J (None: a parameter-free pooling layer).
WRAPPER_BLOCKS = (("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", None), ("Conv2d_3b_1x1", "Conv2d_4a_3x3", None),
                  ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
                  ("Mixed_7a", "Mixed_7b", "Mixed_7c", None))


class BasicConv(nn.Module):
    """Conv (no bias) → BatchNorm (eps 1e-3, as in the TF graph) → ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool3x3(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Size-preserving 3x3 pooling: TF's average (zero padding not counted) or max."""
    if kind == "max":
        return F.max_pool2d(x, 3, 1, 1)
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class Block(nn.Module):
    """Parallel conv chains concatenated along channels; subclasses name their convs as pytorch-fid does."""

    def chain(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        """Apply the named convs in order."""
        for n in names:
            x = getattr(self, n)(x)
        return x


class BlockA(Block):
    """35x35: 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avg-pool→1x1 (Mixed_5b-d)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv(cin, 48, 1), BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1)
        self.branch_pool = BasicConv(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.chain(x, "branch5x5_1", "branch5x5_2"),
                          self.chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          self.branch_pool(pool3x3(x, "avg"))], 1)


class BlockB(Block):
    """35→17 reduction: stride-2 3x3 | 1x1→3x3→stride-2 3x3 | stride-2 max-pool (Mixed_6a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          F.max_pool2d(x, 3, 2)], 1)


class BlockC(Block):
    """17x17 with factorized 7x7 convs (1x7, 7x1) of width c7 (Mixed_6b-e)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv(cin, 192, 1)
        self.branch7x7_1 = BasicConv(cin, c7, 1)
        self.branch7x7_2, self.branch7x7_3 = BasicConv(c7, c7, **row), BasicConv(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv(cin, c7, 1)
        self.branch7x7dbl_2, self.branch7x7dbl_3 = BasicConv(c7, c7, **col), BasicConv(c7, c7, **row)
        self.branch7x7dbl_4, self.branch7x7dbl_5 = BasicConv(c7, c7, **col), BasicConv(c7, 192, **row)
        self.branch_pool = BasicConv(cin, 192, 1)

    def forward(self, x):
        dbl = [f"branch7x7dbl_{i}" for i in range(1, 6)]
        return torch.cat([self.branch1x1(x), self.chain(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                          self.chain(x, *dbl), self.branch_pool(pool3x3(x, "avg"))], 1)


class BlockD(Block):
    """17→8 reduction: 1x1→stride-2 3x3 | 1x1→1x7→7x1→stride-2 3x3 | stride-2 max-pool (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv(cin, 192, 1), BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.chain(x, "branch3x3_1", "branch3x3_2"),
                          self.chain(x, *(f"branch7x7x3_{i}" for i in range(1, 5))), F.max_pool2d(x, 3, 2)], 1)


class BlockE(Block):
    """8x8: 1x1 | 1x1→(1x3, 3x1) | 1x1→3x3→(1x3, 3x1) | pool→1x1; pool: avg (Mixed_7b) or max (Mixed_7c)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        self.branch1x1 = BasicConv(cin, 320, 1)
        self.branch3x3_1 = BasicConv(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = BasicConv(384, 384, **row), BasicConv(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = BasicConv(384, 384, **row), BasicConv(384, 384, **col)
        self.branch_pool = BasicConv(cin, 192, 1)

    def forward(self, x):
        a, b = self.branch3x3_1(x), self.chain(x, "branch3x3dbl_1", "branch3x3dbl_2")
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a), self.branch3x3dbl_3a(b),
                          self.branch3x3dbl_3b(b), self.branch_pool(pool3x3(x, self.pool))], 1)


class InceptionV3(nn.Module):
    """The FID Inception network; a feature network for guidekit's metrics (labelled FID/KID/IS-Inception)."""

    metric_tag = "Inception"  # metrics read FID-Inception, KID-Inception, IS-Inception
    has_requested_classes = False  # its 1008 ImageNet outputs are not Fashion-MNIST classes: no accuracy

    def __init__(self):
        super().__init__()
        self.weights_id = None  # load_inception sets "inception-<SHA-256 of the weights file>"
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, "avg"), BlockE(2048, "max")
        self.fc = nn.Linear(FEATURES, LOGITS)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images (N, 1 or 3, H, W) → (N, 3, 299, 299) in [-1, 1] on the network's device."""
        check(isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] in (1, 3),
              f"Inception needs images of shape (N, 1 or 3, H, W) in [-1, 1], got "
              f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        check(x.is_floating_point(), f"Inception needs float images in [-1, 1], got {x.dtype}; "
                                     f"convert uint8 with x / 127.5 - 1")
        p = self.fc.weight
        x = x.to(p.device, p.dtype).expand(-1, 3, -1, -1)
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        return x.contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """pool3 features (N, 2048) of [-1, 1] images: the FID feature vector."""
        x = self.preprocess(x)
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            x = getattr(self, name)(x)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, 2))), 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1008 logits (with the fc bias) of [-1, 1] images."""
        return self.fc(self.features(x))

    def features_and_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool3 features (N, 2048) and IS probabilities softmax(pool3 · fc.weightᵀ) (N, 1008; no bias, as IS)."""
        feats = torch.cat([self.features(c) for c in x.split(CHUNK)]) if len(x) else self.features(x)
        return feats, (feats @ self.fc.weight.T).softmax(dim=1)


def _file_kind(path: Path) -> str:
    """'safetensors' or 'torch' from the file's first bytes (never by unpickling); GuidekitError otherwise."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, or a legacy/raw pickle
        return "torch"
    raise GuidekitError(f"{path} is neither a safetensors file nor a PyTorch state dict (.pth/.pt); pass FID "
                        f"Inception weights in one of those formats, e.g. pytorch-fid's "
                        f"pt_inception-2015-12-05-6726825d.pth")


def _refused(path: Path, error: Exception) -> GuidekitError:
    """The error for a pickle that torch.load(weights_only=True) will not read."""
    found = re.search(r"GLOBAL (\S+)", str(error))
    detail = f" (it calls {found.group(1)})" if found else ""
    return GuidekitError(
        f"refused to load {path}: it is a pickle that needs torch.load(weights_only=False), which can run arbitrary "
        f"code{detail}. guidekit reads .pth/.pt files with weights_only=True only. If you "
        f"trust the file, convert it once in a trusted environment: `sd = torch.load(PATH, weights_only=False); "
        f"safetensors.torch.save_file({{k: v.contiguous() for k, v in sd.items()}}, 'inception.safetensors')` "
        f"and pass inception.safetensors")


def _read(path: Path) -> dict:
    """The tensors of a safetensors file or of a weights_only torch.load; unwraps {'state_dict': ...}."""
    kind = _file_kind(path)
    try:
        if kind == "safetensors":
            state = load_file(str(path))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protocol notes from the weights-only unpickler
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refused(path, e) from e
    except (OSError, SafetensorError, RuntimeError, EOFError, KeyError, ValueError, AttributeError, IndexError,
            TypeError, OverflowError, struct.error, zipfile.BadZipFile) as e:  # what junk makes the unpickler raise
        raise GuidekitError(f"cannot read {path} as {kind}: {type(e).__name__}: {e}; the file is corrupt or "
                            f"not a state dict") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict) and not any(
                isinstance(v, torch.Tensor) for v in state.values()):
            state = state[wrapper]
    check(isinstance(state, dict), f"{path} holds a {type(state).__name__}, not a state dict of tensors; "
                                   f"save model.state_dict() instead")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    check(not bad, f"{path}: entries that are not named tensors: {', '.join(bad[:10])}; save a state dict "
                   f"of tensors only")
    return state


def map_keys(state: dict, top: set[str]) -> dict:
    """Rename a state dict to our names: strip wrapper prefixes (module., inception., ...), map blocks.I.J."""
    while state and all("." in k for k in state):
        first = {k.split(".", 1)[0] for k in state}
        if len(first) != 1 or first & top or first == {"blocks"}:
            break
        state = {k.split(".", 1)[1]: v for k, v in state.items()}
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "blocks" and len(parts) > 3 and parts[1].isdigit() and parts[2].isdigit():
            i, j = int(parts[1]), int(parts[2])
            name = WRAPPER_BLOCKS[i][j] if i < len(WRAPPER_BLOCKS) and j < len(WRAPPER_BLOCKS[i]) else None
            k = ".".join([name, *parts[3:]]) if name else k
        out[k] = v
    return out


def _problems(state: dict, expected: dict) -> list[str]:
    """Key-by-key differences between a file's state dict and the network's (num_batches_tracked optional)."""
    out = [f"missing {k}" for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    out += [f"unexpected {k}" for k in state if k not in expected]
    for k, v in state.items():
        if k not in expected:
            continue
        want = expected[k]
        if v.shape != want.shape:
            out.append(f"{k}: file {tuple(v.shape)} vs model {tuple(want.shape)}")
        elif want.is_floating_point() and not v.is_floating_point():
            out.append(f"{k}: dtype {v.dtype}, expected floating point")
        elif v.is_floating_point() and not bool(v.isfinite().all()):
            out.append(f"{k} holds NaN/inf")
    return out


def read_weights(path: str | Path) -> dict:
    """A validated FID Inception state dict (our names, float32) from a file; GuidekitError naming each bad key."""
    path = Path(path).expanduser()
    check(path.is_file(), f"Inception weights not found: {path}; pass the path of a .safetensors or .pth/.pt file "
                          f"with FID InceptionV3 weights (e.g. pytorch-fid's pt_inception-2015-12-05-6726825d.pth)")
    with torch.device("meta"):
        net = InceptionV3()
    expected = net.state_dict()
    top = {k.split(".", 1)[0] for k in expected}
    state = map_keys(_read(path), top)
    problems = _problems(state, expected)
    check(not problems, f"{path} is not an FID InceptionV3 state dict ({len(problems)} problem(s)): "
                        + "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20
                                                       else "") + f". guidekit expects {LAYOUT}")
    out = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    for k, v in expected.items():
        out.setdefault(k, torch.zeros((), dtype=v.dtype))  # num_batches_tracked: unused in eval mode
    return out


def file_hash(path: str | Path) -> str:
    """12 hex digits of the SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def load_inception(path: str | Path, device: torch.device | str = "cpu") -> InceptionV3:
    """FID InceptionV3 with the weights of path (.safetensors, or .pth/.pt via weights_only=True), eval mode."""
    state = read_weights(path)
    model = InceptionV3()
    model.load_state_dict(state, strict=True)
    model.weights_id = f"inception-{file_hash(Path(path).expanduser())}"
    return model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
