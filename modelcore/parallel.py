"""Full (unsharded) state dicts loaded into a sharded model: FSDP2, tensor parallel, or both.

Checkpoints are written sharded (``modelcore.checkpoint``, torch.distributed.checkpoint);
the ones from before that hold the full state, and a run resumes from them under any
layout through these functions. The sharding itself is applied in ``modelcore.parallelize``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    set_model_state_dict,
    set_optimizer_state_dict,
)


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a full optimizer state: the sharded format (keyed by parameter name) or a plain
    ``optimizer.state_dict()`` (keyed by position), as one process or DDP saves it."""
    if any(isinstance(key, int) for key in state["state"]):
        state = _keyed_by_name(model, optimizer, state)
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _keyed_by_name(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> dict[str, Any]:
    # A plain state dict numbers the parameters in the optimizer's group order.
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved = [i for group in state["param_groups"] for i in group["params"]]
    if len(saved) != len(order):
        raise ValueError(
            f"the checkpoint's optimizer state holds {len(saved)} parameters, the model {len(order)}"
        )
    by_position = dict(zip(saved, order, strict=True))
    return {
        "state": {by_position[i]: value for i, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [by_position[i] for i in group["params"]]} for group in state["param_groups"]
        ],
    }
