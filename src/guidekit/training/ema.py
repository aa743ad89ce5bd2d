"""Exponential moving average of weights, with the warm-up decay min(d, (1+n)/(10+n)) of Improved DDPM-era trainers."""

from __future__ import annotations

import torch


class EMA:
    """Shadow copy of a module's floating-point state, updated after every optimizer step."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    def rate(self, step: int) -> float:
        """Decay at optimizer step `step`: short runs still average sensibly."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int, keep: torch.Tensor | None = None) -> None:
        """shadow ← lerp(shadow, weights, 1 − decay): one foreach kernel over all floating tensors (per tensor, the
        same arithmetic as lerp_). keep: a 0-dim device tensor, 0 on a skipped step (shadow unchanged), no sync."""
        d = self.rate(step)
        shadows, values = [], []
        for k, v in module.state_dict().items():
            if self.shadow[k].device != v.device:
                self.shadow[k] = self.shadow[k].to(v.device)
            if v.is_floating_point():
                shadows.append(self.shadow[k])
                values.append(v.detach().float())
            else:
                self.shadow[k].copy_(v)
        if shadows and keep is None:
            torch._foreach_lerp_(shadows, values, 1 - d)
        elif shadows:  # shadow + (1 − d)·keep·(weights − shadow)
            delta = torch._foreach_sub(values, shadows)
            torch._foreach_mul_(delta, keep * (1 - d))
            torch._foreach_add_(shadows, delta)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone().float() for k, v in state.items()}
