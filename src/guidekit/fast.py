"""GPU fast path of the network call: bf16 autocast, channels_last, cuDNN autotuning, torch.compile and CUDA-graph
replay.

`Fast` names the options; `Fast.wrap(net, device)` returns a callable with net's signature that runs it that way.
Every option is a pure speed choice: outputs match fp32 eager to bf16 tolerance (tests/test_fast.py).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from guidekit.errors import check

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


@dataclass(frozen=True)
class Fast:
    """How the network runs: precision (auto = bf16 on CUDA), channels_last, torch.compile, CUDA graphs."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    compile_mode: str | None = None  # torch.compile's mode; None = reduce-overhead with cuda_graphs, else default
    cudnn_benchmark: bool = True  # on CUDA: cuDNN times its convolution algorithms once per shape, keeps the fastest

    @classmethod
    def auto(cls, device, precision: str = "auto", compile: bool = False, cuda_graphs: bool = False) -> "Fast":
        """The defaults for device: bf16 on CUDA (channels_last only when compiled: eager GroupNorm is slower in
        it, docs/results.md), fp32 eager on the CPU; then validated."""
        cuda = torch.device(device).type == "cuda"
        fast = cls(precision=("bf16" if cuda else "fp32") if precision == "auto" else precision,
                   channels_last=cuda and compile, compile=compile, cuda_graphs=cuda_graphs)
        return fast.validate(device)

    def validate(self, device) -> "Fast":
        """Refuse options the device cannot run, naming the fix."""
        check(self.precision in PRECISIONS[1:], f"precision {self.precision!r} is not one of {PRECISIONS}")
        check(self.compile_mode is None or self.compile_mode in COMPILE_MODES,
              f"compile mode {self.compile_mode!r} is not one of {COMPILE_MODES}")
        check(not self.cuda_graphs or torch.device(device).type == "cuda",
              "--cuda-graphs needs a CUDA device; drop it, or run with --device cuda")
        check(self.precision != "fp16" or torch.device(device).type == "cuda",
              "--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return self

    @property
    def compiled_graphs(self) -> bool:
        """Whether torch.compile captures CUDA graphs (its output buffer is then reused by the next call)."""
        return self.compile and (self.compile_mode in ("reduce-overhead", "max-autotune")
                                 or (self.cuda_graphs and self.compile_mode is None))

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self, device):
        """An autocast context for this precision (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.dtype)

    def prepare(self, net: torch.nn.Module) -> torch.nn.Module:
        """Convert net's weights to channels_last in place if asked (harmless for every other use)."""
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def wrap(self, net: torch.nn.Module, device) -> "FastForward":
        """A callable running net(x, t, y=..., **kw) with these options."""
        return FastForward(self, self.prepare(net), torch.device(device))


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    """torch.backends.cudnn.benchmark = on inside the block (cuDNN autotunes each new convolution shape once and
    keeps the fastest algorithm: fixed-shape sampling and training pay once), the previous value after it."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class FastForward:
    """net under Fast's options; with cuda_graphs, one captured graph per input signature, replayed."""

    def __init__(self, fast: Fast, net: torch.nn.Module, device: torch.device):
        self.fast, self.net, self.device = fast, net, device
        self.call = net
        if fast.compile:
            mode = fast.compile_mode or ("reduce-overhead" if fast.cuda_graphs else "default")  # graphs replace ours
            self.call = torch.compile(net, mode=mode, dynamic=False)
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None
        self.graphed = fast.cuda_graphs and not fast.compile and getattr(net, "graph_safe", False)
        if fast.cuda_graphs and not fast.compile and not self.graphed:
            warnings.warn(f"--cuda-graphs: {type(net).__name__} has data-dependent branches (e.g. ControlNet "
                          f"windows), so it runs eagerly; full-trajectory control can be captured")

    def __getattr__(self, name):
        return getattr(self.__dict__["net"], name)

    def _run(self, x, t, y, kw):
        if self.fast.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.fast.autocast(self.device), cudnn_benchmark(self.fast.cudnn_benchmark and self.device.type == "cuda"):
            return self.call(x, t, y=y, **kw)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **kw) -> torch.Tensor:
        if not self.graphed or torch.is_grad_enabled():
            out = self._run(x, t, y, kw)  # compiled CUDA graphs reuse their output buffer: multistep samplers keep it
            return out.clone() if self.fast.compiled_graphs and not torch.is_grad_enabled() else out
        inputs = {"x": x, "t": t, **({"y": y} if y is not None else {}), **kw}
        key = tuple((k, tuple(v.shape), v.dtype) if torch.is_tensor(v) else (k, v) for k, v in inputs.items())
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        static, out, graph = self.graphs[key]
        for k, v in inputs.items():
            if torch.is_tensor(v):
                static[k].copy_(v)
        graph.replay()
        return out.clone()

    def _capture(self, inputs: dict) -> tuple:
        """Record one call on static input buffers (after warm-up on a side stream) as a CUDA graph."""
        static = {k: v.clone() if torch.is_tensor(v) else v for k, v in inputs.items()}
        args = lambda: (static["x"], static["t"], static.get("y"),  # noqa: E731
                        {k: v for k, v in static.items() if k not in ("x", "t", "y")})
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run(*args())
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._run(*args())
        return static, out, graph
