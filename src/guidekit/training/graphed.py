"""A whole training step (forward, backward, gradient clipping, fused AdamW) captured once as a CUDA graph and
replayed, so a small-batch step costs no per-kernel launch overhead; a non-finite gradient skips the update on the
device, with no host sync.

`GraphedTrainStep(loss_fn, params, ...)`: `step(*inputs, lr=...)` copies inputs into static buffers, replays the
graph and returns (loss, grad norm) as device tensors. Its first `warmup` calls run the same step eagerly on a side
stream (torch.compile and cuDNN settle there), the next captures; every call is one real optimizer step.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from guidekit.errors import check


class GraphedTrainStep:
    """loss_fn(*inputs) → scalar loss (under autocast to dtype if given); its backward, clipping to max_norm and an
    AdamW step, as one CUDA graph."""

    def __init__(self, loss_fn: Callable[..., torch.Tensor], params: list[torch.nn.Parameter], lr: float,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), max_norm: float = math.inf,
                 warmup: int = 3, dtype: torch.dtype | None = None):
        params = [p for p in params if p.requires_grad]
        check(bool(params), "GraphedTrainStep needs trainable parameters")
        device = params[0].device
        check(device.type == "cuda", f"a CUDA-graphed training step needs the model on a CUDA device, got {device}; "
                                     f"drop --cuda-graphs or train with --device cuda")
        check(warmup >= 1, f"warmup must be >= 1 eager step before capture, got {warmup}")
        self.loss_fn, self.params, self.max_norm, self.warmup, self.dtype = loss_fn, params, max_norm, warmup, dtype
        self.lr = torch.tensor(float(lr), device=device)
        self.opt = torch.optim.AdamW(params, lr=self.lr, betas=betas, weight_decay=weight_decay, fused=True,
                                     capturable=True)
        self.opt.found_inf = torch.zeros((), device=device)  # fused AdamW skips its update where this is 1
        self.calls, self.graph, self.static, self.out = 0, None, None, None
        self.side = torch.cuda.Stream(device)

    def _step(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        # autocast's weight-cast cache off: a graph must record the casts, not reuse an eager step's stale copies
        with torch.autocast("cuda", dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None,
                            cache_enabled=False):
            loss = self.loss_fn(*inputs)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
        self.opt.found_inf.copy_((~torch.isfinite(norm)).float())
        self.opt.step()
        return loss.detach(), norm.detach()

    def __call__(self, *inputs: torch.Tensor, lr: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on inputs (same shapes every call); returns (loss, grad norm) on the device."""
        if lr is not None:
            self.lr.fill_(lr)
        self.calls += 1
        if self.graph is not None:
            for buf, v in zip(self.static, inputs):
                buf.copy_(v, non_blocking=True)
            self.graph.replay()
            return self.out
        cur = torch.cuda.current_stream()
        self.side.wait_stream(cur)
        with torch.cuda.stream(self.side):
            if self.calls <= self.warmup:
                self.opt.zero_grad(set_to_none=True)
                out = self._step(inputs)
            else:  # capture: the graph owns static inputs, grads and outputs; replays rewrite them in place
                self.static = [v.clone() for v in inputs]
                self.opt.zero_grad(set_to_none=True)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, stream=self.side):
                    self.out = self._step(self.static)
                out = None
        cur.wait_stream(self.side)
        if out is None:  # capturing records the work without running it: run the captured step once now
            self.graph.replay()
            out = self.out
        return out
