"""Linear measurement operators y = A(x) + σ_y·n for zero-shot restoration: forward A, adjoint Aᵀ, pseudo-inverse A†,
the Gram solve (a·AAᵀ + b·I)⁻¹ of ΠGDM, and A's singular values for DDNM+ (Wang et al. 2023, Song et al. 2023).

Every operator is diagonal in a basis V of its own (pixels for a mask, f×f blocks for average pooling, the 2-D DFT
for a circular blur), so `in_range(v, f)` = V·diag(f(s))·Vᵀ·v over the range of A†A (s = the singular values there).
Images are (B, C, H, W) in [−1, 1]; σ_y is in the same units.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from guidekit.errors import check
from guidekit.masks import check_mask

TASKS = ("inpaint", "sr2", "sr4", "deblur")
BLUR_SIGMA = 1.5  # the deblur task's Gaussian blur, in pixels of a 32×32 image
PINV_CUTOFF = 1e-3  # singular values below this are treated as zero by A† (a blur's high frequencies)


class Operator:
    """y = A(x): forward, adjoint, pseudo-inverse and Gram solve of one linear degradation."""

    name = "operator"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gram_solve(self, v: torch.Tensor, a, b: float) -> torch.Tensor:
        """(a·AAᵀ + b·I)⁻¹ v in y's space (a may be per image, (B, 1, 1, 1)); b = 0 is the pseudo-inverse (AAᵀ)⁺."""
        raise NotImplementedError

    def in_range(self, v: torch.Tensor, scale: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """V·diag(scale(s))·Vᵀ v restricted to the range of A†A: scale sees the singular values s there."""
        raise NotImplementedError

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """A†A x: the part of x that the measurement sees."""
        return self.pinv(self(x))

    def merge(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(I − A†A)x + A†A·known: x with the measured part taken from `known`."""
        return x - self.project(x) + self.project(known)

    def rows(self, rows: slice) -> "Operator":
        """The operator of images `rows` of a call (only a per-image mask differs)."""
        return self

    def measure(self, x: torch.Tensor, sigma_y: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """y = A(x) + σ_y·n, n ~ N(0, I) from generator (drawn on the CPU, in x's dtype)."""
        check(math.isfinite(sigma_y) and sigma_y >= 0, f"sigma_y must be >= 0 (the measurement noise std on the "
                                                       f"[-1, 1] scale, e.g. 0.05), got {sigma_y}")
        y = self(x)
        if sigma_y > 0:
            y = y + sigma_y * self.noise_like(y, generator)
        return y

    def noise_like(self, y: torch.Tensor, generator) -> torch.Tensor:
        return torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)

    def show(self, y: torch.Tensor) -> torch.Tensor:
        """y as an image of x's size, for pictures: A†y (the low-res image upsampled, the blurred image itself)."""
        return self.pinv(y)


class Inpaint(Operator):
    """y = m ⊙ x, m = 1 where known (guidekit.masks); A = Aᵀ = A† (an orthogonal projection; RePaint's mask)."""

    name = "inpaint"

    def __init__(self, mask: torch.Tensor):
        check(isinstance(mask, torch.Tensor) and mask.ndim == 4,
              f"the inpainting mask must be a (B or 1, 1, H, W) tensor, got {getattr(mask, 'shape', type(mask))}")
        self.mask = check_mask(mask, torch.zeros(mask.shape[0], 1, *mask.shape[-2:]))

    def rows(self, rows):
        return self if self.mask.shape[0] == 1 else Inpaint(self.mask[rows])

    def m(self, x):
        return self.mask.to(device=x.device, dtype=x.dtype)

    def __call__(self, x):
        return self.m(x) * x

    def adjoint(self, y):
        return self.m(y) * y

    pinv = adjoint

    def noise_like(self, y, generator):
        return self.m(y) * super().noise_like(y, generator)  # the unknown pixels are not measured at all

    def gram_solve(self, v, a, b):
        m = self.m(v)
        return torch.where(m > 0, v / (a * m + b), torch.zeros_like(v))

    def in_range(self, v, scale):
        return self.m(v) * scale(torch.ones((), dtype=v.dtype, device=v.device)) * v

    def merge(self, x, known):
        return torch.where(self.m(x) > 0, known, x)  # bit-exact: the known pixels are `known`'s


class SuperResolution(Operator):
    """y = f×f average pooling of x (×f super-resolution); Aᵀ = nearest upsampling / f², A† = nearest upsampling,
    AAᵀ = I / f², every singular value 1/f."""

    def __init__(self, factor: int):
        check(isinstance(factor, int) and factor >= 2, f"the super-resolution factor must be an integer >= 2, "
                                                       f"got {factor!r}")
        self.factor, self.name = factor, f"sr{factor}"

    def __call__(self, x):
        f = self.factor
        check(x.shape[-1] % f == 0 and x.shape[-2] % f == 0,
              f"×{f} super-resolution needs a side divisible by {f}, got {x.shape[-2]}×{x.shape[-1]}")
        return F.avg_pool2d(x, f)

    def pinv(self, y):
        return y.repeat_interleave(self.factor, -1).repeat_interleave(self.factor, -2)

    def adjoint(self, y):
        return self.pinv(y) / self.factor ** 2

    def gram_solve(self, v, a, b):
        return v / (a / self.factor ** 2 + b)

    def in_range(self, v, scale):
        return scale(torch.full((), 1.0 / self.factor, dtype=v.dtype, device=v.device)) * self.project(v)


class GaussianBlur(Operator):
    """y = k ⊛ x, a circular convolution with a Gaussian of std `sigma` pixels, diagonal in the 2-D DFT: the
    singular values are |k̂|, and A† inverts those above `cutoff` (the rest are the null space)."""

    name = "deblur"

    def __init__(self, sigma: float = BLUR_SIGMA, cutoff: float = PINV_CUTOFF):
        check(math.isfinite(sigma) and sigma > 0, f"the blur's sigma must be > 0 pixels, got {sigma}")
        check(0 < cutoff < 1, f"the pseudo-inverse cutoff must lie in (0, 1), got {cutoff}")
        self.sigma, self.cutoff, self._k = sigma, cutoff, {}

    def k_hat(self, x: torch.Tensor) -> torch.Tensor:
        """The blur's real, positive transfer function on x's (H, W//2 + 1) rfft grid."""
        h, w = x.shape[-2:]
        key = (h, w, x.device, x.dtype)
        if key not in self._k:
            d = lambda n: torch.minimum(torch.arange(n), n - torch.arange(n)).double()  # noqa: E731 (circular)
            g = torch.exp(-(d(h)[:, None] ** 2 + d(w)[None] ** 2) / (2 * self.sigma ** 2))
            self._k[key] = torch.fft.rfft2(g / g.sum()).real.clamp(min=0).to(device=x.device, dtype=x.dtype)
        return self._k[key]

    def _diag(self, v, d):
        return torch.fft.irfft2(torch.fft.rfft2(v) * d, s=v.shape[-2:])

    def __call__(self, x):
        return self._diag(x, self.k_hat(x))

    adjoint = __call__  # the kernel is symmetric

    def kept(self, v):
        return self.k_hat(v) > self.cutoff

    def pinv(self, y):
        k = self.k_hat(y)
        return self._diag(y, torch.where(self.kept(y), 1 / k.clamp(min=self.cutoff), torch.zeros_like(k)))

    def gram_solve(self, v, a, b):
        k = self.k_hat(v)
        a = torch.as_tensor(a, dtype=v.dtype, device=v.device)
        a = a.view(-1, 1, 1, 1) if a.ndim >= 1 else a
        kept = self.kept(v) if b == 0 else torch.ones_like(k, dtype=torch.bool)
        return self._diag(v, torch.where(kept, 1 / (a * k ** 2 + b).clamp(min=1e-30), torch.zeros_like(a * k)))

    def in_range(self, v, scale):
        k = self.k_hat(v)
        return self._diag(v, torch.where(self.kept(v), scale(k), torch.zeros_like(k)))

    def show(self, y):
        return y


def make_operator(task: str, mask: torch.Tensor | None = None, blur_sigma: float = BLUR_SIGMA) -> Operator:
    """The operator of a task name: inpaint (needs mask), sr2, sr4, deblur."""
    check(task in TASKS, f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if task == "inpaint":
        check(mask is not None, "the inpaint task needs a mask (1 = known): --mask KIND|FILE")
        return Inpaint(mask)
    if task.startswith("sr"):
        return SuperResolution(int(task[2:]))
    return GaussianBlur(blur_sigma)
