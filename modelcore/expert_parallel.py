"""Expert parallel for the MoE layers: each rank of the EP group holds ``n_experts / EP`` experts.

The layout (``parallel.expert_parallel``) is its own mesh dimension, as the issue's
``TP x EP x DP = num_processes`` says, and unlike torchtitan, where EP borrows ranks from
data parallel: the ranks of one EP group train the same batch. Everything but the experts
is replicated on them and computes the same values, the router included, so every rank
knows every routing decision (capacity too, taken over all the tokens in token order, as
one process does) and no counts need exchanging.

Per MoE layer, rank ``r`` takes the ``r``-th share of the token positions: it sends the
kept token slots of its share to the ranks owning their experts with one
``all_to_all_single`` (dispatch), those ranks run their experts, a second all-to-all
sends the outputs back (combine), rank ``r`` weights and sums them into its share of
the output, and an all-reduce gives every rank the whole output. The backward of each
all-to-all is the reverse all-to-all; the backward of the all-reduce is the identity
(every rank holds the same gradient), and the inputs and routing weights enter through
Megatron's ``f`` (identity forward, gradients summed over the group), since each rank's
dispatch reads only its share of them. Expert gradients are then whole on their owner.

Beside data parallel (``num_processes`` > EP), the ranks at one EP coordinate of every
data-parallel group hold the same experts. Strategy ddp: ``average_gradients`` averages all
gradients over the ``dp`` dimension after the backward, as DDP would. Strategy fsdp
(``parallelize.apply_fsdp`` on the ``(dp, ep)`` mesh): each local expert is sharded over
``dp``, everything else over all ranks, and FSDP's reduce-scatter does the averaging.

Checkpoints (``modelcore.checkpoint``, torch.distributed.checkpoint) hold each expert once,
written by the rank that owns it and named by its global index (``layers.i.mlp.experts.e``:
``apply_ep`` keeps every expert at its global place, another rank's as a ``RemoteExpert``),
so a run saved under EP=2 resumes under EP=1 and back, and exports and
``load_checkpoint`` read it as any other.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor

from modelcore.model import MoE, Routing, Transformer
from modelcore.tensor_parallel import copy_to_tp_region


class _AllToAll(torch.autograd.Function):
    """Rows of ``x`` split by ``send`` go to the group's ranks in order; ``recv`` rows come back.
    The backward sends the gradients the reverse way."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, send: list[int], recv: list[int], group: dist.ProcessGroup
    ) -> torch.Tensor:
        ctx.send, ctx.recv, ctx.group = send, recv, group
        out = x.new_empty((sum(recv), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv, send, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        out = grad.new_empty((sum(ctx.send), *grad.shape[1:]))
        dist.all_to_all_single(out, grad.contiguous(), ctx.send, ctx.recv, group=ctx.group)
        return out, None, None, None


class _ReduceFromRegion(torch.autograd.Function):
    """Megatron's ``g``: the forward sums over the group, the backward is the identity."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def all_to_all(x: torch.Tensor, send: list[int], recv: list[int], group: dist.ProcessGroup) -> torch.Tensor:
    """``all_to_all_single`` with autograd: ``send[q]`` rows to rank ``q``, ``recv[q]`` rows from it."""
    return _AllToAll.apply(x, send, recv, group)


class RemoteExpert(nn.Module):
    """The place of an expert another rank of the EP group holds: no weights, never called."""

    def __init__(self, owner: int):
        super().__init__()
        self.owner = owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(f"this expert lives on rank {self.owner} of the expert-parallel group")


def apply_ep(model: Transformer, ep_mesh: DeviceMesh) -> Transformer:
    """Shard every MoE layer's experts over ``ep_mesh`` (rank ``r`` keeps experts
    ``[r * E / EP, (r + 1) * E / EP)``) and route tokens to them with all-to-all. The model's
    weights must be the same on every rank of the group (same seed)."""
    cfg, ep, rank = model.config, ep_mesh.size(), ep_mesh.get_local_rank()
    if not cfg.n_experts:
        raise ValueError("parallel.expert_parallel needs a mixture-of-experts model (model.n_experts > 0)")
    if cfg.n_experts % ep:
        raise ValueError(
            f"model.n_experts ({cfg.n_experts}) must be divisible by parallel.expert_parallel ({ep})"
        )
    per = cfg.n_experts // ep
    for block in model.layers:
        moe = block.mlp
        assert isinstance(moe, MoE)
        for e in range(cfg.n_experts):
            if e // per != rank:
                moe.experts[e] = RemoteExpert(e // per)
        moe.dispatch = functools.partial(_dispatch, moe, ep_mesh.get_group(), rank, ep)
    return model


def _shares(n: int, parts: int) -> list[int]:
    """Where each rank's share of ``n`` positions starts, and ``n`` (``torch.tensor_split``'s sizes)."""
    base, extra = divmod(n, parts)
    starts = [0]
    for i in range(parts):
        starts.append(starts[-1] + base + (1 if i < extra else 0))
    return starts


def _dispatch(
    moe: MoE, group: dist.ProcessGroup, rank: int, ep: int, flat: torch.Tensor, routing: Routing
) -> torch.Tensor:
    N, E = flat.shape[0], moe.n_experts
    per = E // ep
    starts = torch.tensor(_shares(N, ep), device=flat.device)
    # counts[src][e]: kept slots of rank src's share routed to expert e (known on every rank).
    edges = [torch.searchsorted(token, starts) for token, _slot in routing.assignments]  # tokens ascend
    counts = torch.stack([edge.diff() for edge in edges], dim=1).tolist()  # (ep, E)
    own = [
        (token[edge[rank] : edge[rank + 1]], slot[edge[rank] : edge[rank + 1]])
        for (token, slot), edge in zip(routing.assignments, edges, strict=True)
    ]
    token = torch.cat([t for t, _ in own])  # grouped by expert, so by the rank that owns it
    slot = torch.cat([s for _, s in own])
    flat = copy_to_tp_region(flat, group)  # each rank reads its share: gradients summed
    weights = copy_to_tp_region(routing.weights, group)

    send = [sum(counts[rank][q * per : (q + 1) * per]) for q in range(ep)]
    mine = range(rank * per, (rank + 1) * per)
    recv = [sum(counts[src][e] for e in mine) for src in range(ep)]
    received = all_to_all(flat[token], send, recv, group)  # by source rank, then by expert

    # Rows of each local expert in the received buffer, gathered over the source ranks.
    rows: list[list[int]] = [[] for _ in mine]
    offset = 0
    for src in range(ep):
        for j, e in enumerate(mine):
            rows[j].extend(range(offset, offset + counts[src][e]))
            offset += counts[src][e]
    outputs = []
    for j, e in enumerate(mine):
        index = torch.tensor(rows[j], dtype=torch.long, device=flat.device)
        # Called even with no tokens so every expert's weights join the graph.
        outputs.append(moe.experts[e](received[index]))
    order = torch.tensor([i for r in rows for i in r], dtype=torch.long, device=flat.device)
    back = torch.cat(outputs)[order.argsort()]  # in the received order again
    y = all_to_all(back, recv, send, group) * weights[token, slot, None]  # (n_own, D)
    out = torch.zeros_like(flat).index_add(0, token, y)  # this rank's share of the tokens
    return _ReduceFromRegion.apply(out, group)


def average_gradients(model: nn.Module, dp_group: dist.ProcessGroup) -> None:
    """Average every gradient over the data-parallel group (expert parallel beside data
    parallel: the ranks of ``dp_group`` sit at one EP coordinate and hold the same experts)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=dp_group)
    flat /= dist.get_world_size(dp_group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _is_expert(name: str) -> bool:
    return ".mlp.experts." in name


def clip_grad_norm(model: nn.Module, max_norm: float, group: dist.ProcessGroup | None) -> float:
    """Clip the global gradient norm; returns the norm before clipping.

    Beside DDP, ``group`` is the EP group: expert gradients live on one rank each, the rest
    are the same on every rank of it. Under FSDP, ``group`` is None (all ranks): every
    gradient is a DTensor and each rank's shard is its own part of the whole.
    """
    distributed, shared = torch.zeros(()), torch.zeros(())
    grads = []
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        grads.append(p.grad)
        grad = p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
        square = grad.detach().float().pow(2).sum().cpu()
        if _is_expert(name) or isinstance(p.grad, DTensor):
            distributed += square
        else:
            shared += square
    distributed = distributed.to(grads[0].device if grads else "cpu")
    dist.all_reduce(distributed, group=group)
    total = math.sqrt(float(distributed) + float(shared))
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total


# --- checkpoints from before the sharded format ------------------------------------
# Checkpoints are now written with torch.distributed.checkpoint (``modelcore.checkpoint``):
# each rank writes its own experts under their global names. Older ones hold the whole model
# and the optimizer state as one process numbers it; these functions resume from them.


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state: each rank keeps the experts it holds."""
    local = model.state_dict()
    model.load_state_dict({name: state[name] for name in local}, strict=True)


def _full_order(model: Transformer, param_groups: list[list[str]]) -> list[list[str]]:
    """The names of one process's optimizer groups, in its order (local experts in place of all)."""
    with torch.device("meta"):
        whole = Transformer(model.config)
    names = [name for name, _p in whole.named_parameters()]
    group_of = {name: i for i, group in enumerate(param_groups) for name in group}
    full: list[list[str]] = [[] for _ in param_groups]
    for name, p in whole.named_parameters():
        if name in group_of:
            full[group_of[name]].append(name)
        else:  # another rank's expert: same group as this rank's experts of that shape
            full[_group_for_dim(p.dim())].append(name)
    assert sum(len(g) for g in full) == len(names)
    return full


def _group_for_dim(dim: int) -> int:
    # The trainer's groups: matrices (weight decay) first, then vectors.
    return 0 if dim >= 2 else 1


def _local_groups(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    names = {id(p): name for name, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def load_full_optimizer_state(
    model: Transformer, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a one-process optimizer state: each rank keeps its own parameters' entries."""
    local = _local_groups(model, optimizer)
    full = _full_order(model, local)
    saved = [i for g in state["param_groups"] for i in g["params"]]
    names = [n for g in full for n in g]
    if len(saved) != len(names):
        raise ValueError(
            f"the checkpoint's optimizer state holds {len(saved)} parameters, the model {len(names)}"
        )
    index = dict(zip(names, saved, strict=True))
    position = {name: i for i, name in enumerate(n for g in local for n in g)}
    optimizer.load_state_dict(
        {
            "state": {position[n]: state["state"][index[n]] for n in position if index[n] in state["state"]},
            "param_groups": [
                {**hyper, "params": [position[n] for n in group]}
                for hyper, group in zip(state["param_groups"], local, strict=True)
            ],
        }
    )
