"""Roofline bounds for the UNet's forward and training step on a GPU (the 40 %-of-peak forward and 2.5× training
targets).

Records every aten op of one eager forward (and forward + backward) of a guidekit UNet on the CPU, with its FLOPs
and the bytes it reads and writes (bf16 for every float tensor, as under autocast at best), and bounds the time any
kernels could take on a GPU with matmul peak P and memory bandwidth BW. Each kernel takes at least max(FLOPs / P,
bytes / BW); the bound sums that over the kernels of four ways to cut the work:

- eager: one kernel per aten op (what PyTorch eager launches);
- fused: one kernel per matmul (convolution, mm, attention), and between them every connected run of
  elementwise/normalization ops fused into one kernel that reads its inputs once and writes only what later
  kernels read (what torch.compile's Inductor aims at around cuDNN convolutions);
- prologue: one kernel per matmul with the elementwise work between matmuls applied as they load their inputs
  and store their outputs (GroupNorm + SiLU in a convolution's prologue, residual adds in its epilogue); what
  needs a reduction first (GroupNorm statistics, bias gradients, the loss) stays a pass that reads its inputs
  once and writes almost nothing (hand-written convolution kernels with fused normalization);
- ceiling: one kernel per matmul with all other work fused into them for free.

FLOPs and bytes are affine in the batch, so two small traces (batch 2 and 4) give them at any batch exactly.

  python benchmarks/roofline.py --preset base --peak 757 --bandwidth 3.35
  python benchmarks/roofline.py --measure cuda        # this GPU's bf16 matmul peak and copy bandwidth instead
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten
CPU_SDPA = {aten._scaled_dot_product_flash_attention_for_cpu.default: "fwd",
            aten._scaled_dot_product_flash_attention_for_cpu_backward.default: "bwd"}
MATMUL_WORDS = ("convolution", "mm", "scaled_dot_product", "linear")
CUTS = ("eager", "fused", "prologue", "ceiling")
REDUCTIONS = ("group_norm", "sum", "mean", "var", "mse_loss")  # ops whose output needs a whole pass first
FREE = {aten.detach.default, aten.alias.default, aten.lift_fresh.default, aten._local_scalar_dense.default,
        aten.empty.memory_format, aten.empty_strided.default, aten.new_empty_strided.default, aten.new_empty.default}


@dataclass
class Op:
    """One recorded aten op: what it reads and writes (value ids and bytes), its FLOPs and phase."""

    name: str
    phase: str
    matmul: bool
    flops: int
    reads: dict = field(default_factory=dict)  # value id -> bytes
    writes: dict = field(default_factory=dict)

    @property
    def moved(self) -> int:
        """Bytes read and written when the op is a kernel of its own."""
        return sum(self.reads.values()) + sum(self.writes.values())


def nbytes(t: torch.Tensor) -> int:
    """Bytes of t as a bf16 activation (floats) or as stored (integers, bools)."""
    return t.numel() * (2 if t.is_floating_point() else t.element_size())


def op_flops(func, args, kwargs, out) -> int:
    """FLOPs of a matmul-like op (torch's flop formulas; the CPU's fused attention by the same bmm counts)."""
    if func in CPU_SDPA:
        if CPU_SDPA[func] == "fwd":
            return sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)
        return sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape, args[3].shape)
    formula = flop_registry.get(func._overloadpacket)
    return int(formula(*args, **kwargs, out_val=out)) if formula else 0


class Recorder(TorchDispatchMode):
    """Records the ops of the code run under it as Op rows. A storage freed and reused gets a new value id when it
    is written, so no tensor is kept alive (that would change what autograd copies)."""

    def __init__(self):
        super().__init__()
        self.ops, self.phase = [], "fwd"
        self.current, self.next_id = {}, 0  # storage -> id of the value last written to it

    def value(self, t: torch.Tensor) -> int:
        key = t.untyped_storage()._cdata
        if key not in self.current:  # a parameter or an input: a value from outside
            self.current[key], self.next_id = self.next_id, self.next_id + 1
        return self.current[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        aliases = {t.untyped_storage()._cdata for t in ins}
        if func in FREE or func.is_view or not outs or (
                not func._schema.is_mutable and all(t.untyped_storage()._cdata in aliases for t in outs)):
            return out  # allocation or view: no data moves
        op = Op(str(func), self.phase, any(w in str(func) for w in MATMUL_WORDS), op_flops(func, args, kwargs, out))
        for t in ins:
            op.reads[self.value(t)] = max(op.reads.get(self.value(t), 0), nbytes(t))
        for t in outs:
            key = t.untyped_storage()._cdata
            self.current[key], self.next_id = self.next_id, self.next_id + 1
            op.writes[self.current[key]] = nbytes(t)
        self.ops.append(op)
        return out


def record(forward, backward: bool = False) -> list[Op]:
    """The ops of forward() (backward: then of .backward() on what it returns, as phase "bwd")."""
    rec = Recorder()
    with rec, torch.set_grad_enabled(backward):
        out = forward()
        if backward:
            rec.phase = "bwd"
            out.backward()
    return rec.ops


def trace(preset: str, batch: int, train: bool) -> list[Op]:
    """The ops of one forward (train: forward, MSE loss and backward) of the preset UNet at batch."""
    from guidekit.models import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig.preset(preset, num_classes=10)).train(train)
    x, t = torch.randn(batch, 1, 32, 32), torch.randint(0, 1000, (batch,))
    y = torch.randint(0, 10, (batch,))
    if not train:
        return record(lambda: net(x, t, y=y))
    return record(lambda: F.mse_loss(net(x, t, y=y), torch.randn_like(x)), backward=True)


def kernels(ops: list[Op], how: str) -> list[tuple[float, float, bool]]:
    """(FLOPs, bytes, is a matmul) of each kernel when ops are cut the eager, fused, prologue or ceiling way."""
    assert how in CUTS, f"cut {how!r} is not one of {CUTS}"
    if how == "eager":
        return [(o.flops, o.moved, o.matmul) for o in ops]
    mm = [(o.flops, o.moved, True) for o in ops if o.matmul]
    if how == "ceiling":
        return mm
    producer, level, parent = {}, {}, list(range(len(ops)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, o in enumerate(ops):  # level: matmuls between an op and the phase's inputs, on the longest path
        srcs = [producer[v] for v in o.reads if v in producer and ops[producer[v]].phase == o.phase]
        level[i] = max([level[j] + ops[j].matmul for j in srcs], default=0)
        if not o.matmul:
            for j in srcs:
                if not ops[j].matmul and level[j] == level[i]:
                    parent[root(j)] = root(i)
        for v in o.writes:
            producer[v] = i
    groups = {}
    for i, o in enumerate(ops):
        if not o.matmul:
            groups.setdefault(root(i), []).append(i)
    readers = {}
    for i, o in enumerate(ops):
        for v in o.reads:
            readers.setdefault(v, set()).add(i)
    out = list(mm)
    for members in groups.values():
        inside = set(members)
        made = {v: b for i in members for v, b in ops[i].writes.items()}
        reads = {v: b for i in members for v, b in ops[i].reads.items() if v not in made}
        if how == "fused":
            writes = {v: b for v, b in made.items() if readers.get(v, set()) - inside or (not readers.get(v) and (
                ops[producer[v]].phase == "bwd" or producer[v] == len(ops) - 1))}  # read later, a weight's grad, output
            out.append((0, sum(reads.values()) + sum(writes.values()), False))
        elif any(any(w in ops[i].name for w in REDUCTIONS) for i in members):  # prologue: statistics pass
            out.append((0, sum(reads.values()), False))
    return out


def scale(small: list, large: list, b1: int, b2: int, batch: int) -> list:
    """Per-kernel (FLOPs, bytes, matmul) at batch from their values at b1 and b2 (both affine in the batch)."""
    assert len(small) == len(large), "the two traces cut into different kernels"
    f = lambda a, b: a + (b - a) * (batch - b1) / (b2 - b1)  # noqa: E731
    return [(f(s[0], l[0]), f(s[1], l[1]), s[2]) for s, l in zip(small, large)]


def bound(ks: list, peak: float, bw: float) -> dict:
    """Sum over kernels of max(FLOPs/peak, bytes/bw), in all and for the matmul and the other kernels."""
    sec = [max(k[0] / peak, k[1] / bw) for k in ks]
    mm = sum(s for s, k in zip(sec, ks) if k[2])
    return {"kernels": len(ks), "flops": sum(k[0] for k in ks), "bytes": sum(k[1] for k in ks), "sec": sum(sec),
            "matmul_sec": mm, "other_sec": sum(sec) - mm}


def table(name: str, preset: str, batch: int, train: bool, peak: float, bw: float, extra_bytes: float = 0.0) -> str:
    """Markdown rows of the three bounds for one workload."""
    b1, b2 = 2, 4
    small, large = trace(preset, b1, train), trace(preset, b2, train)
    rows = [f"\n{name}, batch {batch} (peak {peak / 1e12:.3g} TFLOP/s, {bw / 1e12:.3g} TB/s)\n",
            "| cut | kernels | GFLOP | GB moved | bound ms (matmuls + rest) | img/s at most | TFLOP/s at most "
            "| % of peak at most |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for how in CUTS:
        ks = scale(kernels(small, how), kernels(large, how), b1, b2, batch)
        if extra_bytes:
            ks.append((0, extra_bytes, False))
        r = bound(ks, peak, bw)
        tflops = r["flops"] / r["sec"] / 1e12
        ms = f"{r['sec'] * 1e3:.2f} ({r['matmul_sec'] * 1e3:.2f} + {r['other_sec'] * 1e3:.2f})"
        rows.append(f"| {how} | {r['kernels']} | {r['flops'] / 1e9:,.0f} | {r['bytes'] / 1e9:.2f} | {ms} | "
                    f"{batch / r['sec']:,.0f} | {tflops:.3g} | {100 * tflops * 1e12 / peak:.1f} |")
    return "\n".join(rows)


def measure(device: str, size: int) -> tuple[float, float]:
    """(matmul FLOP/s, copy bytes/s) on device, timed as benchmarks/vs_diffusers.py times everything (its Bench:
    median of 5 after a warm-up): its matmul_peak at size³ (bf16 on CUDA, fp32 on the CPU) and a copy of 8·size²
    bytes (read + write counted)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from vs_diffusers import Bench, matmul_peak

    bench = Bench(torch.device(device), "bf16" if device == "cuda" else "fp32", repeats=5, warmup=1)
    src = torch.empty(4 * size * size, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy_sec, _ = bench.time(lambda: dst.copy_(src))
    return matmul_peak(bench, size) * 1e12, 2 * src.numel() * 2 / copy_sec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="base", help="guidekit UNet preset (base = the 16M reference UNet)")
    p.add_argument("--peak", type=float, default=757.0, help="matmul peak, TFLOP/s (H100 bf16, measured: 757)")
    p.add_argument("--bandwidth", type=float, default=3.35, help="memory bandwidth, TB/s (H100 SXM HBM3: 3.35)")
    p.add_argument("--forward-batch", type=int, default=2000)
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--measure", choices=["cpu", "cuda"], help="measure the matmul peak and the copy bandwidth on "
                   "this device instead of --peak and --bandwidth")
    p.add_argument("--measure-size", type=int, default=8192, help="matmul size for --measure (copy: 8·size² bytes)")
    a = p.parse_args(argv)
    peak, bw = a.peak * 1e12, a.bandwidth * 1e12
    if a.measure:
        peak, bw = measure(a.measure, a.measure_size)
        print(f"measured on {a.measure}: matmul {peak / 1e12:.1f} TFLOP/s, copy {bw / 1e12:.3f} TB/s")
    from guidekit.models import UNet, UNetConfig

    params = sum(q.numel() for q in UNet(UNetConfig.preset(a.preset, num_classes=10)).parameters())
    print(f"guidekit UNet preset {a.preset!r}, {params:,} parameters, 32×32×1, bf16 bytes for every float tensor")
    print(table("Forward (no grad)", a.preset, a.forward_batch, False, peak, bw))
    adamw = 28.0 * params  # fused AdamW reads fp32 weight, grad, m, v and writes weight, m, v
    print(table("Training step (forward, MSE, backward, fused AdamW)", a.preset, a.train_batch, True, peak, bw,
                extra_bytes=adamw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
