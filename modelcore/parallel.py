"""FSDP2 sharding applied to the model from outside (torchtitan's ``parallelize`` split).

Accelerate drives DDP and the process group; FSDP is applied here with
``torch.distributed.fsdp.fully_shard`` because it then works the same on GPUs
(NCCL) and CPU processes (gloo), where Accelerate would silently fall back to
DDP. Each transformer block is one FSDP unit; the root unit holds the (possibly
tied) embeddings, final norm and output projection.

Checkpoints of a sharded model are written as full (unsharded) state dicts, so
they load into a plain model and resume under any number of processes.
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
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from modelcore.model import Transformer

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}


def apply_fsdp(
    model: Transformer, device: torch.device, world_size: int, mixed_precision: str
) -> Transformer:
    if mixed_precision == "fp16":
        raise ValueError("parallel.mixed_precision: fp16 needs a sharded loss scaler; use bf16 with FSDP")
    mesh = init_device_mesh(device.type, (world_size,))
    # Compute in the autocast dtype, reduce gradients in fp32, keep fp32 master weights.
    policy = MixedPrecisionPolicy(param_dtype=_DTYPES[mixed_precision], reduce_dtype=torch.float32)
    for layer in model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


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
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
