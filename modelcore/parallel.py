"""Full (unsharded) state dicts of a sharded model: FSDP2, tensor parallel, or both.

Checkpoints of a model whose parameters are DTensors are written as full state dicts,
so they load into a plain model (export, ``load_checkpoint``) and resume under any
layout: another number of processes, another tensor-parallel degree, or none. The
sharding itself is applied in ``modelcore.parallelize``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0 (empty elsewhere); every rank must call it."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


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
