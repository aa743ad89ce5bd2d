"""Forward process q(x_t|x_0) and conversions between ε-, x0- and v-predictions (Ho et al. 2020; Salimans & Ho 2022)."""

from __future__ import annotations

import torch

from guidekit.errors import check

PREDICTION_TYPES = ("eps", "x0", "v")


def _bcast(ab, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
    """ᾱ as a tensor broadcastable against x (per-image when 1-D), in the widest float dtype of x and others."""
    ab = torch.as_tensor(ab, dtype=torch.float64)
    if ab.ndim == 1:
        ab = ab.view(-1, *([1] * (x.ndim - 1)))
    dtype = x.dtype
    for other in others:
        dtype = torch.promote_types(dtype, other.dtype)
    return ab.to(device=x.device, dtype=dtype)


def q_sample(x0: torch.Tensor, alpha_bar, eps: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε, a sample of q(x_t | x0) (DDPM eq. 4)."""
    ab = _bcast(alpha_bar, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def eps_to_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x̂0 = (x_t − √(1−ᾱ) ε) / √ᾱ, in ε's precision where it is wider (float64 from to_eps)."""
    ab = _bcast(alpha_bar, x_t, eps)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def x0_to_eps(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """ε = (x_t − √ᾱ x0) / √(1−ᾱ), in x0's precision where it is wider."""
    ab = _bcast(alpha_bar, x_t, x0)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()


def to_eps(output: torch.Tensor, x_t: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    """Turn a network output of the given prediction type into ε; an x0- or v-network's ε is float64, so that
    eps_to_x0 gives back the network's own x̂0 to float32 rounding even where ᾱ ≈ 1e-9 (a cosine schedule's t = T−1:
    there float32 ε would cost 1e-3 in x̂0)."""
    check(prediction_type in PREDICTION_TYPES, f"unknown prediction_type {prediction_type!r}: use one of {PREDICTION_TYPES}")
    if prediction_type == "eps":
        return output
    output, x_t = output.double(), x_t.double()
    if prediction_type == "x0":
        return x0_to_eps(x_t, output, alpha_bar)
    ab = _bcast(alpha_bar, x_t)  # v = √ᾱ ε − √(1−ᾱ) x0  ⇒  ε = √ᾱ v + √(1−ᾱ) x_t
    return ab.sqrt() * output + (1 - ab).sqrt() * x_t


def target(x0: torch.Tensor, eps: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    """The regression target of a network with this prediction type."""
    check(prediction_type in PREDICTION_TYPES, f"unknown prediction_type {prediction_type!r}: use one of {PREDICTION_TYPES}")
    if prediction_type == "eps":
        return eps
    if prediction_type == "x0":
        return x0
    ab = _bcast(alpha_bar, x0)
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0
