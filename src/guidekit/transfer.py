"""Host→device copies that do not make the host wait for the GPU to drain."""

from __future__ import annotations

import torch


def to_device(v: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """v on device; a CPU→CUDA copy goes through pinned memory without blocking (a plain .to() waits for the GPU)."""
    device = torch.device(device)
    if v.device == device:
        return v
    if device.type != "cuda" or v.device.type != "cpu":
        return v.to(device)
    return v.pin_memory().to(device, non_blocking=True)
