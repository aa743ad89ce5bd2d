"""Per-image random streams (as in EDM's sampler): an image depends on its seed, not on its batch or its device."""

from __future__ import annotations

from typing import Sequence

import torch

from guidekit.errors import check
from guidekit.transfer import to_device


class Noise:
    """One CPU torch.Generator per image; randn(shape) stacks each image's own draw and moves it to device.

    Drawn on the CPU so that a seed gives the same noise on every machine: CUDA's generator draws other numbers.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        check(len(seeds) > 0, "at least one seed is needed")
        check(all(isinstance(s, int) and s >= 0 for s in seeds), f"seeds must be non-negative integers, got {list(seeds)}")
        self.seeds = list(seeds)
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A (len(seeds), *shape) standard normal tensor on the device, row i from generator i."""
        return to_device(self._draw(shape, dtype), self.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x (x's batch must equal the number of seeds)."""
        check(x.shape[0] == len(self), f"batch of {x.shape[0]} images but {len(self)} seeds")
        return to_device(self._draw(x.shape[1:], x.dtype), x.device)

    def _draw(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self.generators])
