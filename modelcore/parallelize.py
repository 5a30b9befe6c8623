"""Parallelism, activation checkpointing and compilation applied to a built model from outside.

torchtitan's split: ``modelcore.model`` is only the model; this module changes a built
``Transformer`` in place, in torchtitan's order:

1. ``apply_tp``: tensor (and sequence) parallel with DTensor's ``parallelize_module``
   over the mesh's ``tp`` dimension (Megatron's layout, below); ``apply_ep``: a MoE model's
   experts split over the mesh's ``ep`` dimension, tokens exchanged with all-to-all
   (``modelcore.expert_parallel``);
2. ``apply_ac``: recompute each block in the backward pass;
3. ``apply_compile``: ``torch.compile`` per block (under FSDP) or of the whole model;
4. ``apply_fsdp``: FSDP2 over the ``dp`` dimension, one unit per block plus the root (under
   expert parallel: each local expert its own unit over ``dp``, the rest over all ranks).

DDP (replicated data parallel without TP) stays with Accelerate, which the trainer uses
for the process group and mixed precision.

The device mesh is ``(dp, tp)``: ranks ``[d * tp, (d + 1) * tp)`` form one TP group (on a
GPU node, neighbours on NVLink), and data parallel runs across the groups.

Megatron's tensor-parallel layout per block: column-wise q/k/v and gate/up (each rank
computes its own heads and its own share of the SwiGLU hidden units), row-wise o and
down (partial sums all-reduced, or reduce-scattered over positions under sequence
parallel). The embedding and the output projection are split by vocabulary rows; the
loss (``tensor_parallel.VocabParallelCrossEntropy``) never gathers the logits. Key/value
heads are split when their count divides by the TP degree, replicated when the degree
divides by their count (each rank then uses the one head its query heads share).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.utils.checkpoint import checkpoint

from modelcore.expert_parallel import RemoteExpert, apply_ep
from modelcore.model import Transformer
from modelcore.tensor_parallel import VocabParallelCrossEntropy, copy_to_tp_region

__all__ = ["apply_ac", "apply_compile", "apply_ep", "apply_fsdp", "apply_tp", "build_mesh", "clip_grad_norm"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": None}


def build_mesh(
    device_type: str, world_size: int, tensor_parallel: int, expert_parallel: int = 1
) -> DeviceMesh:
    """The ``(dp, tp)`` mesh over all ranks, or ``(dp, ep)`` for expert parallel (a MoE model
    is not split by tensor parallel); the process group must be initialised."""
    if expert_parallel > 1:
        if tensor_parallel > 1:
            raise ValueError("parallel.tensor_parallel must be 1 with parallel.expert_parallel")
        if world_size % expert_parallel:
            raise ValueError(
                f"parallel.expert_parallel ({expert_parallel}) must divide the number of processes ({world_size})"
            )
        return init_device_mesh(
            device_type, (world_size // expert_parallel, expert_parallel), mesh_dim_names=("dp", "ep")
        )
    if world_size % tensor_parallel:
        raise ValueError(
            f"parallel.tensor_parallel ({tensor_parallel}) must divide the number of processes ({world_size})"
        )
    return init_device_mesh(
        device_type, (world_size // tensor_parallel, tensor_parallel), mesh_dim_names=("dp", "tp")
    )


def kv_head_layout(n_heads: int, n_kv_heads: int, tp: int) -> str:
    """``"split"`` or ``"replicate"``: how TP of degree ``tp`` lays out the key/value heads."""
    if n_heads % tp:
        raise ValueError(f"model.n_heads ({n_heads}) must be divisible by parallel.tensor_parallel ({tp})")
    if n_kv_heads % tp == 0:
        return "split"
    if tp % n_kv_heads == 0:
        return "replicate"
    raise ValueError(
        f"model.n_kv_heads ({n_kv_heads}) must divide by parallel.tensor_parallel ({tp}) or divide "
        "it, so key/value heads can be split or replicated"
    )


def apply_tp(model: Transformer, tp_mesh: DeviceMesh, sequence_parallel: bool) -> Transformer:
    """Megatron tensor parallel (and sequence parallel) over ``tp_mesh``; the model's weights
    must be the same on every rank of the group (same seed), each rank keeps its slice."""
    cfg, tp = model.config, tp_mesh.size()
    if cfg.n_experts:
        raise ValueError("parallel.tensor_parallel: MoE models are split with parallel.expert_parallel")
    layout = kv_head_layout(cfg.n_heads, cfg.kv_heads, tp)
    seq = Shard(1)  # the residual stream's layout between TP regions under sequence parallel
    stream = seq if sequence_parallel else Replicate()
    tied = cfg.tie_embeddings
    parallelize_module(
        model,
        tp_mesh,
        {
            "embed_tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=stream),
            **({"norm": SequenceParallel()} if sequence_parallel else {}),
        },
    )
    # The output projection: rows of the vocabulary, read only by the vocabulary-parallel loss.
    if tied:
        model.lm_head.weight = model.embed_tokens.weight
    else:
        model.lm_head.weight = nn.Parameter(distribute_tensor(model.lm_head.weight.data, tp_mesh, [Shard(0)]))
    model.cross_entropy = VocabParallelCrossEntropy(tp_mesh)
    model.register_forward_pre_hook(functools.partial(_check_call, tp, sequence_parallel), with_kwargs=True)

    kv_split = layout == "split"
    for block in model.layers:
        attn = block.self_attn
        plan: dict[str, Any] = {
            "self_attn.q_proj": ColwiseParallel(),
            "self_attn.o_proj": RowwiseParallel(output_layouts=stream),
            "mlp.gate_proj": ColwiseParallel(),
            "mlp.up_proj": ColwiseParallel(),
            "mlp.down_proj": RowwiseParallel(output_layouts=stream),
        }
        if kv_split:
            plan["self_attn.k_proj"] = ColwiseParallel()
            plan["self_attn.v_proj"] = ColwiseParallel()
        if sequence_parallel:
            # Attention is called (x, cos, sin, cache, layer): only x changes layout.
            rest = (None,) * 4
            plan |= {
                "input_layernorm": SequenceParallel(),
                "post_attention_layernorm": SequenceParallel(),
                "self_attn": PrepareModuleInput(
                    input_layouts=(seq, *rest),
                    desired_input_layouts=(Replicate(), *rest),
                    use_local_output=True,
                ),
                "mlp": PrepareModuleInput(
                    input_layouts=(seq,), desired_input_layouts=(Replicate(),), use_local_output=True
                ),
            }
        parallelize_module(block, tp_mesh, plan)
        attn.n_heads = cfg.n_heads // tp
        if kv_split:
            attn.n_kv_heads = cfg.kv_heads // tp
        else:
            _replicate_kv_heads(attn, tp_mesh, cfg.n_heads, cfg.kv_heads, cfg.head_dim)
    return model


def _check_call(
    tp: int, sequence_parallel: bool, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """A split model computes losses only, and under sequence parallel on whole shares of positions."""
    targets = args[1] if len(args) > 1 else kwargs.get("targets")
    if targets is None:
        raise RuntimeError(
            "a tensor-parallel model computes its loss without the full logits and gives none: "
            "load its checkpoint whole (modelcore.checkpoint.load_checkpoint) to generate"
        )
    length = args[0].shape[1]
    if sequence_parallel and length % tp:
        raise ValueError(f"sequence parallel needs a sequence length divisible by {tp}, got {length}")


def _replicate_kv_heads(attn: nn.Module, tp_mesh: DeviceMesh, n_heads: int, n_kv: int, head_dim: int) -> None:
    """Fewer key/value heads than TP ranks: every rank holds k/v whole and keeps the one
    head its query heads share. Its input gradient and the weights' gradients are partial
    sums over the group (each rank used another head), summed by Megatron's ``f``."""
    group, rank, tp = tp_mesh.get_group(), tp_mesh.get_local_rank(), tp_mesh.size()
    head = rank * (n_heads // tp) // (n_heads // n_kv)
    attn.n_kv_heads = 1

    def into_region(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (copy_to_tp_region(args[0], group), *args[1:])

    def own_head(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        return out[..., head * head_dim : (head + 1) * head_dim]

    def summed(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, group=group)
        return grad

    for proj in (attn.k_proj, attn.v_proj):
        proj.register_forward_pre_hook(into_region)
        proj.register_forward_hook(own_head)
        proj.weight.register_hook(summed)


def apply_ac(model: Transformer) -> Transformer:
    """Recompute each block's activations in the backward pass (training only)."""
    for block in model.layers:
        block.forward = functools.partial(_checkpointed, block.forward)
    return model


def _checkpointed(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def apply_compile(model: Transformer, per_block: bool) -> Transformer:
    """``torch.compile`` in place (state-dict names unchanged).

    Per block under FSDP, which shards block by block (torchtitan does the same); else the
    whole model, so norms, rotary, SwiGLU, residual adds and the loss fuse across blocks.
    """
    if per_block:
        for block in model.layers:
            block.compile()
    else:
        model.compile()
    return model


def apply_fsdp(model: Transformer, mesh: DeviceMesh, mixed_precision: str) -> Transformer:
    """FSDP2 over ``mesh``: each block one unit; the root holds embeddings, final norm and head.

    ``mesh`` is the ``dp`` dimension, or for an expert-parallel model (``apply_ep`` first) the
    whole ``(dp, ep)`` mesh: each local expert is then its own unit sharded over ``dp`` (the
    ranks at one EP coordinate hold the same experts), and the rest, which every rank holds
    and whose gradients every rank of an EP group computes whole, is sharded over all ranks
    (the flattened mesh; averaging over it is averaging over ``dp``).
    """
    if mixed_precision == "fp16":
        raise ValueError("parallel.mixed_precision: fp16 needs a sharded loss scaler; use bf16 with FSDP")
    # Compute in the autocast dtype, reduce gradients in fp32, keep fp32 master weights.
    policy = MixedPrecisionPolicy(param_dtype=_DTYPES[mixed_precision], reduce_dtype=torch.float32)
    dense_mesh = mesh
    if mesh.mesh_dim_names == ("dp", "ep"):
        dense_mesh = mesh._flatten("dp_ep")
        for layer in model.layers:
            for expert in layer.mlp.experts:
                if not isinstance(expert, RemoteExpert):
                    fully_shard(expert, mesh=mesh["dp"], mp_policy=policy)
    for layer in model.layers:
        fully_shard(layer, mesh=dense_mesh, mp_policy=policy)
    fully_shard(model, mesh=dense_mesh, mp_policy=policy)
    return model


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm of a model whose parameters may be DTensors; returns it.

    Sharded (DTensor) gradients and plain ones (replicated and whole on every rank) are
    normed apart and combined, which ``torch.nn.utils.clip_grad_norm_`` cannot do.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    sharded = [g for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    squares = 0.0
    if sharded:
        norm = torch.nn.utils.get_total_norm(sharded)
        squares += float(norm.full_tensor() if isinstance(norm, DTensor) else norm) ** 2
    if plain:
        squares += float(torch.nn.utils.get_total_norm(plain)) ** 2
    total = math.sqrt(squares)
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total
