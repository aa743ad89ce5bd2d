"""Per-image random streams (as in EDM's sampler): an image depends on its seed, not on its batch or its device."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from guidekit.errors import check, shown
from guidekit.transfer import to_device


class Noise:
    """One CPU torch.Generator per image; randn(shape) stacks each image's own draw and moves it to device.

    Drawn on the CPU so that a seed gives the same noise on every machine: CUDA's generator draws other numbers.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        check(len(seeds) > 0, "at least one seed is needed")
        check(all(isinstance(s, int) and 0 <= s < 2 ** 64 for s in seeds),
              f"seeds must be integers in 0..2^64-1 (torch generators hold 64 bits), got {shown(list(seeds), 200)}")
        self.seeds = list(seeds)
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]

    @classmethod
    def from_generators(cls, generators: Sequence[torch.Generator], device: torch.device | str = "cpu") -> "Noise":
        """One stream per image from the caller's own CPU generators (diffusers' generator=[...] convention)."""
        check(len(generators) > 0 and all(isinstance(g, torch.Generator) and g.device.type == "cpu"
                                          for g in generators),
              "generators must be a non-empty list of CPU torch.Generator objects, one per image")
        noise = cls.__new__(cls)
        noise.seeds, noise.device, noise.generators = [None] * len(generators), torch.device(device), list(generators)
        return noise

    def rows(self, start: int, stop: int) -> "Noise":
        """The streams of images start..stop-1 (a batch), sharing their generators."""
        part = Noise.__new__(Noise)
        part.seeds, part.device = self.seeds[start:stop], self.device
        part.generators = self.generators[start:stop]
        return part

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


class GivenNoise:
    """Noise the caller hands over, with Noise's interface: the trajectory's k-th draw is draws[k] (one row per
    image), or draws(k, shape) for a callable. Draw 0 is x_T in generate and inpaint (SDEdit's is the first noising
    of the guide), then each step's in order, so a run can reproduce another implementation's noise exactly."""

    def __init__(self, draws: Sequence[torch.Tensor] | Callable[[int, tuple], torch.Tensor], n: int | None = None,
                 device: torch.device | str = "cpu"):
        if callable(draws):
            check(isinstance(n, int) and n >= 1, "GivenNoise(callable) needs n, the number of images")
        else:
            draws = list(draws)
            check(len(draws) > 0 and all(isinstance(d, torch.Tensor) for d in draws),
                  "GivenNoise needs a non-empty list of tensors (draw 0 = x_T), or a callable draws(k, shape)")
            n = draws[0].shape[0]
        self.draws, self.n, self.device, self.k = draws, n, torch.device(device), 0

    def __len__(self) -> int:
        return self.n

    def rows(self, start: int, stop: int) -> "GivenNoise":
        """The draws of images start..stop-1 (a batch), counted from draw 0 again."""
        if callable(self.draws):
            full = self.draws
            return GivenNoise(lambda k, shape: full(k, (self.n, *shape[1:]))[start:stop], stop - start, self.device)
        return GivenNoise([d[start:stop] for d in self.draws], device=self.device)

    def _next(self, shape: tuple) -> torch.Tensor:
        k, want = self.k, (self.n, *shape)
        if callable(self.draws):
            draw = self.draws(k, want)
        else:
            check(k < len(self.draws), f"GivenNoise ran out: the trajectory asks for draw {k} but {len(self.draws)} "
                                       f"were given (generate: 1 + one per stochastic step)")
            draw = self.draws[k]
        check(isinstance(draw, torch.Tensor) and tuple(draw.shape) == want,
              f"GivenNoise draw {k} has shape {tuple(getattr(draw, 'shape', ()))}, the trajectory needs {want}")
        self.k += 1
        return draw

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return to_device(self._next(tuple(shape)).to(dtype), self.device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        check(x.shape[0] == self.n, f"batch of {x.shape[0]} images but {self.n} rows of given noise")
        return self._next(tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)


def noise_for(seeds: Sequence[int] | None, noise, device: torch.device | str = "cpu"):
    """The noise of a sampling call: `noise` (a Noise, a GivenNoise, or a list of CPU generators) or seeds."""
    check((seeds is None) != (noise is None), "pass seeds= or noise=, exactly one of them")
    if noise is None:
        return Noise(list(seeds), device)
    if isinstance(noise, (list, tuple)):
        return Noise.from_generators(noise, device)
    check(hasattr(noise, "randn_like") and hasattr(noise, "rows"),
          f"noise must be a Noise, a GivenNoise or a list of torch.Generator, got {type(noise).__name__}")
    noise.device = torch.device(device)
    return noise
