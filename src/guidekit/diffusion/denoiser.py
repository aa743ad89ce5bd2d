"""The one denoiser interface: eps(x_t, t, cond) in DDPM form; every sampler and guidance method calls it."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from guidekit.diffusion.parameterization import to_eps
from guidekit.diffusion.schedule import NoiseSchedule
from guidekit.errors import check

NULL = -1
"""The null label ∅ of classifier-free guidance, in every cond dict; adapters map it to the model's own null."""

TEXT = "text"
"""cond key of a text-conditioned model's prompt embeddings, float (B, D); the empty prompt ∅ is the zero vector."""
NEGATIVE_TEXT = "text_negative"
"""cond key of negative-prompt embeddings (B, D): CFG's null half uses them instead of ∅; never reaches the network."""

CLASS_EMBEDDING = "class_embedding"
"""cond key of a float class embedding (B, D) that replaces the network's lookup of cond["y"] in the rows whose label
is not ∅ (CADS noises it; ∅ rows, CFG's null half among them, keep the null embedding)."""

Cond = Mapping[str, torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor]


class ModelDenoiser:
    """Adapts a network (ε-, x0- or v-prediction; Salimans & Ho 2022) to eps(x_t, t, cond)."""

    def __init__(self, net: torch.nn.Module, schedule: NoiseSchedule, prediction_type: str = "eps",
                 num_classes: int = 0):
        self.net, self.schedule, self.prediction_type, self.num_classes = net, schedule, prediction_type, num_classes

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        kwargs = dict(cond)
        kwargs.pop(NEGATIVE_TEXT, None)  # consumed by classifier-free guidance; w = 0 leaves it unused
        y = kwargs.pop("y", None)
        if y is not None:
            check(self.num_classes > 0 or bool((y == NULL).all()),
                  "this model is unconditional: drop --class, or use a class-conditional model")
            y = torch.where(y == NULL, torch.full_like(y, self.num_classes), y) if self.num_classes else None
        out = self.net(x, t, y=y, **kwargs)
        return to_eps(out.to(x.dtype), x, self.schedule.alpha_bar(t.detach().cpu()), self.prediction_type)


def reset_state(obj) -> None:
    """Forget what a stateful denoiser transform carries between calls (APG's momentum, CFG-Zero*'s step count):
    the loop calls it at the start of every trajectory; transforms forward it to what they wrap."""
    reset = getattr(obj, "reset", None)
    if callable(reset):
        reset()


class CountedDenoiser:
    """A denoiser that counts its network evaluations: `images` = rows evaluated (a batched CFG call of N images
    counts 2N), so NFE per image = images / N."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser, self.images = denoiser, 0

    def reset(self) -> None:
        reset_state(self.denoiser)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        self.images += x.shape[0]
        return self.denoiser(x, t, cond)
