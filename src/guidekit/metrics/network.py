"""Feature networks for evaluation: the shipped Fashion-MNIST evaluator (default) or a user's FID InceptionV3."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, Protocol

import torch

from guidekit.errors import check


class FeatureNetwork(Protocol):
    """What evaluation needs: [-1, 1] images → (features, probabilities), a metric label and whether accuracy applies.

    Implemented by models.evaluator.Evaluator (metric_tag "FMNIST", probabilities over the Fashion-MNIST classes)
    and metrics.inception.InceptionV3 (metric_tag "Inception", 1008 ImageNet-graph outputs: no class accuracy).
    """

    metric_tag: str  # metrics are labelled FID-{metric_tag}, KID-{metric_tag}, IS-{metric_tag}
    has_requested_classes: bool  # whether probabilities are over the classes samples were requested as

    def features_and_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


def load_network(evaluator: str | Path | None = None, inception_weights: str | Path | None = None,
                 device: torch.device | str = "cpu") -> FeatureNetwork:
    """The evaluator folder (None: the shipped one) or, with inception_weights, FID InceptionV3; eval mode on device."""
    check(evaluator is None or inception_weights is None, f"pass either an evaluator ({evaluator}) or Inception "
          f"weights ({inception_weights}), not both: they are two different feature networks")
    if inception_weights is not None:
        from guidekit.metrics.inception import load_inception

        return load_inception(inception_weights, device)
    from guidekit.checkpoints import load_evaluator

    return load_evaluator(evaluator, device)


def network_id(net: FeatureNetwork) -> str:
    """The id that keys a network's cached reference features (evaluator_id, or inception-<hash of the weights>)."""
    from guidekit.checkpoints import evaluator_id
    from guidekit.models.evaluator import Evaluator

    if isinstance(net, Evaluator):
        return evaluator_id(net)
    if getattr(net, "weights_id", None):
        return net.weights_id
    h = hashlib.sha256()  # a network built in code: hash its weights
    for k, v in sorted(net.state_dict().items()):
        h.update(f"{k}:{tuple(v.shape)}".encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return f"{getattr(net, 'metric_tag', 'net').lower()}-{h.hexdigest()[:12]}"
