"""Per-image random streams (as in EDM's sampler): an image depends on its seed, not on its batch."""

from __future__ import annotations

from typing import Sequence

import torch

from guidekit.errors import check


class Noise:
    """One torch.Generator per image; randn(shape) stacks each image's own draw."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        check(len(seeds) > 0, "at least one seed is needed")
        check(all(isinstance(s, int) and s >= 0 for s in seeds), f"seeds must be non-negative integers, got {list(seeds)}")
        self.seeds = list(seeds)
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A (len(seeds), *shape) standard normal tensor, row i from generator i."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like x (x's batch must equal the number of seeds)."""
        check(x.shape[0] == len(self), f"batch of {x.shape[0]} images but {len(self)} seeds")
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)
