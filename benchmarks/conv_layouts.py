"""Which convolutions of a compiled training step get a tensor that is not dense in one memory format.

cuDNN (and oneDNN on the CPU) copy such a tensor into a dense one inside the convolution call, so each one is an
elementwise copy in the kernel profile. This compiles guidekit's UNet training step (forward + backward, autocast
as asked) with torch.compile, then reads Inductor's generated code and classifies the (input, weight) of every
convolution and the (grad_output, input, weight) of every convolution backward: NHWC, NCHW, dense (1 channel or 1
pixel: both at once) or strided. Or pass generated-code files (`--code FILE ...`, e.g. from TORCHINDUCTOR_CACHE_DIR
of a GPU run) to classify those.

  python benchmarks/conv_layouts.py --device cpu --batch 4             # compiles (minutes on 2 CPU cores)
  python benchmarks/conv_layouts.py --device cpu --batch 4 --like-cuda # Inductor's layout decision as on a GPU
  python benchmarks/conv_layouts.py --code /tmp/torchinductor_root/*/c*.py
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

SHAPE = r"\(([^)]*)\), \(([^)]*)\)"
DEFINES = [re.compile(r"assert_size_stride\((\w+), " + SHAPE), re.compile(r"(\w+) = empty_strided_\w+\(" + SHAPE),
           re.compile(r"(\w+) = reinterpret_tensor\(\w+, " + SHAPE)]
ARG = r"(reinterpret_tensor\(\w+, \([^)]*\), \([^)]*\), \d+\)|\w+)"
CALL = re.compile(r"(aten\.convolution_backward\.default|extern_kernels\.convolution)\(" + ", ".join([ARG] * 3))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace(" ", "").split(",") if v)


def layout(shape: tuple | None, stride: tuple | None) -> str:
    """NHWC / NCHW / dense (both) / strided (a copy in cuDNN) / unknown, for a 4-d shape and stride."""
    if shape is None or len(shape) != 4:
        return "unknown"
    n, c, h, w = shape
    dense = {"NHWC": (c * h * w, 1, w * c, c), "NCHW": (c * h * w, h * w, w, 1)}
    found = [name for name, s in dense.items() if all(a == b or d == 1 for a, b, d in zip(s, stride, shape))]
    return "dense" if len(found) == 2 else found[0] if found else "strided"


def scan(lines: list[str]) -> list[tuple[int, str, list[tuple[str, tuple]]]]:
    """(line number, fwd|bwd, [(layout, shape) of the first three arguments]) for every convolution call."""
    defs, calls = {}, []
    for i, line in enumerate(lines, 1):
        for pattern in DEFINES:
            for m in pattern.finditer(line):
                defs[m.group(1)] = (ints(m.group(2)), ints(m.group(3)))
        reuse = re.match(r"\s*(\w+) = (\w+); del \w+  # reuse", line)
        if reuse and reuse.group(2) in defs:
            defs[reuse.group(1)] = defs[reuse.group(2)]
        m = CALL.search(line)
        if m:
            args = []
            for a in m.groups()[1:]:
                inline = re.match(r"reinterpret_tensor\(\w+, " + SHAPE, a)
                shape, stride = (ints(inline.group(1)), ints(inline.group(2))) if inline else defs.get(a, (None, None))
                args.append((layout(shape, stride), shape))
            op = "bwd" if "backward" in m.group(1) else "fwd"
            calls.append((i, op, args if op == "bwd" else args[:2]))  # fwd: input, weight (then the bias)
    return calls


def report(files: list[str]) -> int:
    """Print the layout counts and every call with a strided argument; return how many there are."""
    strided = 0
    for path in files:
        with open(path) as fh:
            calls = scan(fh.read().split("\n"))
        if not calls:
            continue
        print(f"{path}: {len(calls)} convolution calls")
        counts = Counter((op, tuple(a[0] for a in args)) for _, op, args in calls)
        for (op, kinds), n in sorted(counts.items()):
            names = "grad_output / input / weight" if op == "bwd" else "input / weight"
            print(f"  {n:4d}  {op}  {names}: {' / '.join(kinds)}")
        for line, op, args in calls:
            if any(kind == "strided" for kind, _ in args):
                strided += 1
                print(f"  strided: line {line} {op} " + ", ".join(f"{k} {s}" for k, s in args))
    print(f"{strided} convolution calls with a strided argument (each one a copy in cuDNN/oneDNN)")
    return strided


def compile_step(device: str, batch: int, preset: str, dtype: str, out_dir: str, like_cuda: bool = False,
                 force_layout_opt: bool = False) -> list[str]:
    """Compile one training step of the preset UNet (NHWC, as `guidekit train --compile` runs on a GPU) into
    out_dir; return Inductor's generated-code files. like_cuda: with oneDNN off, as on a GPU: Inductor then decides
    its channels_last layout optimization by its GPU heuristics, and the CPU convolution picks its memory format by
    cuDNN's rule (channels_last if the input or the weight is). force_layout_opt: Inductor's layout optimization on
    whatever its heuristics say."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = out_dir  # a fresh cache: everything is compiled and written here
    import torch
    import torch.nn.functional as F
    from torch._inductor.graph import GraphLowering

    from guidekit.models import UNet, UNetConfig

    torch._inductor.config.fx_graph_cache = False
    torch._inductor.config.force_layout_optimization = force_layout_opt
    torch.backends.mkldnn.enabled = not like_cuda
    decide = GraphLowering.decide_layout_opt

    def told(gm, *, is_inference: bool) -> bool:
        on = decide(gm, is_inference=is_inference)
        print(f"Inductor's channels_last layout optimization for {'an inference' if is_inference else 'a training'} "
              f"graph: {'on' if on else 'off'}")
        return on

    GraphLowering.decide_layout_opt = staticmethod(told)
    net = UNet(UNetConfig.preset(preset, num_classes=10)).to(device).train().to(memory_format=torch.channels_last)
    call = torch.compile(net)
    x = torch.randn(batch, 1, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    t, y = torch.randint(0, 1000, (batch,), device=device), torch.randint(0, 10, (batch,), device=device)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        out = call(x, t, y=y)
    F.mse_loss(out.float(), torch.randn_like(x)).backward()
    return sorted(p for p in glob.glob(os.path.join(out_dir, "*", "*.py")) if "def call(" in Path(p).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", nargs="+", help="Inductor output-code files to scan instead of compiling")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--preset", default="base", help="guidekit UNet preset (base = the 16M reference UNet)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--keep", help="write the generated code here (default: a temporary folder)")
    p.add_argument("--like-cuda", action="store_true", help="on the CPU: oneDNN off, so Inductor's layout decision "
                   "and the convolutions' memory formats follow the GPU's rules")
    p.add_argument("--force-layout-opt", action="store_true", help="Inductor's channels_last layout optimization on "
                   "whatever its heuristics decide (config.force_layout_optimization)")
    a = p.parse_args(argv)
    if a.code:
        report(a.code)
        return 0
    out_dir = a.keep or tempfile.mkdtemp(prefix="conv-layouts-")
    files = compile_step(a.device, a.batch, a.preset, a.dtype, out_dir, a.like_cuda, a.force_layout_opt)
    print(f"{len(files)} generated-code files in {out_dir}")
    report(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
