"""Optimizer state to and from flat safetensors dicts (no pickle in any checkpoint)."""

from __future__ import annotations

import torch

from guidekit.errors import check


def flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """AdamW state as {'<param>.<name>': tensor} plus JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {f"{i}.{name}": torch.as_tensor(v) for i, st in sd["state"].items() for name, v in st.items()}
    return tensors, sd["param_groups"]


def unflatten_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Restore what flatten_optimizer wrote, checking that the parameter layout matches."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    current = opt.state_dict()["param_groups"]
    check(len(groups) == len(current) and all(len(a["params"]) == len(b["params"]) for a, b in zip(groups, current)),
          "the optimizer state in this checkpoint does not match the model's parameters; "
          "resume with the same model config, or start a new run")
    opt.load_state_dict({"state": state, "param_groups": groups})
