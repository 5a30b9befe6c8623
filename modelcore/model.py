"""A Llama-style decoder, dense or mixture-of-experts, in plain PyTorch.

Read top to bottom: RMSNorm, rotary tables, attention (grouped-query, through
``scaled_dot_product_attention``), the SwiGLU MLP, the MoE layer that can stand
in for it, the block, and the model. Parameter names follow Hugging Face's
``LlamaForCausalLM`` (``embed_tokens``, ``layers.{i}.self_attn.q_proj``, ``norm``,
``lm_head``) so export is a rename of the ``model.`` prefix. Pointwise ops go
through ``modelcore.kernels`` so a fused backend can replace them, and so do the
matrix multiplies (``Linear``), which run on oneDNN on x86 CPUs.

Shapes: B batch, T sequence, D d_model, H query heads, K key/value heads,
Dh head size, E experts, V vocabulary, N = B*T tokens.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from modelcore import kernels
from modelcore.config import ModelConfig
from modelcore.kernels.chunked_ce import default_chunk_rows

# On the CPU every chunk of the fused loss also reads and writes the whole (V, D) weight
# gradient (under torch.compile it copies it once more): with fewer rows than this the traffic
# costs more than smaller logits save. At d_model 256, vocab 4096, 2048 tokens the kernel's
# default (128 rows) made a compiled step ~5% slower than 512 rows. CPU memory is rarely the
# limit; on GPUs the kernel's default stands.
CPU_MIN_LOSS_CHUNK_ROWS = 512


class Linear(nn.Linear):
    """A bias-free ``nn.Linear`` whose multiply goes through ``kernels.linear`` (oneDNN on x86 CPUs)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, backend: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps, self.backend = eps, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps, backend=self.backend)


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (max_seq_len, head_dim/2), for the half-split layout HF Llama uses."""
    # Computed in float32 exactly as Hugging Face Llama does, so exported models
    # give the same logits at long positions too.
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq)
    return angles.cos(), angles.sin()


class KVCache:
    """Keys and values of past positions, one preallocated buffer per layer, for generation."""

    def __init__(
        self, cfg: ModelConfig, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ):
        shape = (batch_size, max_len, cfg.kv_heads, cfg.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.length = 0  # positions filled so far (the same in every layer)
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, T, K, Dh) at the current position; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked for {end}")
        self.keys[layer][:, start:end] = k
        self.values[layer][:, start:end] = v
        return self.keys[layer][:, :end], self.values[layer][:, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = Linear(cfg.d_model, cfg.n_heads * cfg.head_dim)
        self.k_proj = Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim)
        self.v_proj = Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim)
        self.o_proj = Linear(cfg.n_heads * cfg.head_dim, cfg.d_model)
        self.backend = cfg.kernels

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, Dh)
        q, k = kernels.apply_rotary(q, k, cos, sin, backend=self.backend)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.update(layer, k, v)  # (B, past+T, K, Dh)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, time, Dh)
        if self.n_kv_heads != self.n_heads:
            # Each key/value head serves n_heads/n_kv_heads query heads.
            repeat = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(repeat, dim=1)  # (B, H, S, Dh)
            v = v.repeat_interleave(repeat, dim=1)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # Query i (absolute position past+i) sees keys 0..past+i.
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*Dh)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int, backend: str):
        super().__init__()
        self.gate_proj = Linear(d_model, hidden)
        self.up_proj = Linear(d_model, hidden)
        self.down_proj = Linear(hidden, d_model)
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(kernels.swiglu(self.gate_proj(x), self.up_proj(x), backend=self.backend))


class RouterStats(NamedTuple):
    aux_loss: torch.Tensor  # load-balancing loss, scalar
    z_loss: torch.Tensor  # router z-loss, scalar
    expert_load: torch.Tensor  # (E,) share of routed token slots each expert received
    dropped: torch.Tensor  # share of routed token slots dropped by the capacity limit


class Routing(NamedTuple):
    weights: torch.Tensor  # (N, k) renormalised top-k weights
    assignments: list[tuple[torch.Tensor, torch.Tensor]]  # per expert: kept (token, slot), token order
    stats: RouterStats


class MoE(nn.Module):
    """Top-k routed SwiGLU experts (Mixtral style: softmax, top-k, renormalised weights).

    ``capacity_factor`` 0 is dropless: every expert takes every token sent to it.
    Otherwise an expert takes at most ``ceil(capacity_factor * N * k / E)`` token
    slots, in token order, and the rest pass through the residual unchanged.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts, self.top_k = cfg.n_experts, cfg.moe_top_k
        self.capacity_factor = cfg.moe_capacity_factor
        self.gate = Linear(cfg.d_model, cfg.n_experts)  # the router
        self.experts = nn.ModuleList(
            MLP(cfg.d_model, cfg.ffn_hidden, cfg.kernels) for _ in range(cfg.n_experts)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterStats]:
        B, T, D = x.shape
        flat = x.reshape(-1, D)  # (N, D)
        routing = self.route(flat)
        return self.dispatch(flat, routing).view(B, T, D), routing.stats

    def route(self, flat: torch.Tensor) -> Routing:
        """Which token slots each expert takes (capacity applied), their weights, and the router's losses."""
        N, E, k = flat.shape[0], self.n_experts, self.top_k
        logits = self.gate(flat).float()  # (N, E); routing in fp32 for stable softmax
        probs = logits.softmax(dim=-1)  # (N, E)
        weights, chosen = probs.topk(k, dim=-1)  # (N, k) each
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(flat.dtype)

        capacity = math.ceil(self.capacity_factor * N * k / E) if self.capacity_factor > 0 else N * k
        assignments = []
        kept = torch.zeros(E, device=flat.device)
        for e in range(E):
            token, slot = torch.where(chosen == e)  # token order, so capacity keeps the earliest
            assignments.append((token[:capacity], slot[:capacity]))
            kept[e] = assignments[-1][0].numel()

        # Switch/Mixtral load balancing: E * sum_e (share of slots routed to e) * (mean prob of e).
        routed = F.one_hot(chosen, E).float().sum(dim=(0, 1)) / (N * k)  # (E,)
        aux_loss = E * (routed * probs.mean(dim=0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()  # ST-MoE router z-loss
        stats = RouterStats(aux_loss, z_loss, routed.detach(), 1.0 - kept.sum() / (N * k))
        return Routing(weights, assignments, stats)

    def dispatch(self, flat: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The experts' weighted outputs summed per token (N, D); expert parallel
        (``modelcore.expert_parallel``) replaces this with an all-to-all over its group."""
        out = torch.zeros_like(flat)  # (N, D)
        for e, expert in enumerate(self.experts):
            token, slot = routing.assignments[e]
            # Called even with no tokens so every expert joins the graph (DDP needs
            # a gradient, if zero, for every parameter).
            y = expert(flat[token]) * routing.weights[token, slot, None]  # (n_e, D)
            out.index_add_(0, token, y)
        return out


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.kernels)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.kernels)
        self.mlp: nn.Module = MoE(cfg) if cfg.n_experts else MLP(cfg.d_model, cfg.ffn_hidden, cfg.kernels)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> tuple[torch.Tensor, RouterStats | None]:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer)  # (B, T, D)
        h = self.post_attention_layernorm(x)
        if isinstance(self.mlp, MoE):
            y, stats = self.mlp(h)
            return x + y, stats
        return x + self.mlp(h), None


class LossOutput(NamedTuple):
    loss: torch.Tensor  # what to backpropagate: cross-entropy + weighted MoE losses
    ce_loss: torch.Tensor  # next-token cross-entropy alone
    aux_loss: torch.Tensor  # mean over MoE layers (0 for dense models)
    z_loss: torch.Tensor
    expert_load: torch.Tensor | None  # (n_layers, E) routed share per expert, MoE only


class Transformer(nn.Module):
    """``model(input_ids)`` gives logits (B, T, V); ``model(input_ids, targets)`` gives a LossOutput.

    Loss goes through the same ``forward`` (not a second method) so DDP and FSDP
    wrappers see it, and through ``kernels.fused_linear_cross_entropy`` so the
    (N, V) logits never have to be materialised.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps, cfg.kernels)
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rotary_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        # Not persistent: derived from the config, so checkpoints hold weights only.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # The fused linear + cross-entropy; tensor parallel swaps in its vocabulary-parallel
        # loss (``modelcore.parallelize.apply_tp``), which keeps the same signature.
        self.cross_entropy = kernels.fused_linear_cross_entropy
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        # GPT-2 / nanoGPT: scale the projections that write into the residual
        # stream by 1/sqrt(2 * n_layers) so its variance does not grow with depth.
        resid_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                last = name.rsplit(".", 1)[-1]
                nn.init.normal_(module.weight, 0.0, resid_std if last in ("o_proj", "down_proj") else std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def forward(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor | LossOutput:
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds model.max_seq_len ({self.config.max_seq_len})"
            )
        cos, sin = self.rope_cos[start : start + T], self.rope_sin[start : start + T]  # (T, Dh/2)
        x = self.embed_tokens(input_ids)  # (B, T, D)
        router_stats = []
        for i, layer in enumerate(self.layers):
            x, stats = layer(x, cos, sin, cache, i)
            if stats is not None:
                router_stats.append(stats)
        if cache is not None:
            cache.length += T
        x = self.norm(x)  # (B, T, D)
        if targets is None:
            return self.lm_head(x)  # (B, T, V)
        return self._loss(x, targets, router_stats)

    def _loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, router_stats: list[RouterStats]
    ) -> LossOutput:
        cfg = self.config
        ce = self.cross_entropy(
            hidden,
            self.lm_head.weight,
            targets,
            backend=cfg.kernels,
            chunk_rows=self._loss_chunk_rows(hidden),
        )
        if not router_stats:
            zero = ce.new_zeros(())
            return LossOutput(ce, ce.detach(), zero, zero, None)
        aux = torch.stack([s.aux_loss for s in router_stats]).mean()
        z = torch.stack([s.z_loss for s in router_stats]).mean()
        loss = ce + cfg.moe_aux_loss_coef * aux + cfg.moe_z_loss_coef * z
        load = torch.stack([s.expert_load for s in router_stats])  # (n_layers, E)
        return LossOutput(loss, ce.detach(), aux.detach(), z.detach(), load)

    def _loss_chunk_rows(self, hidden: torch.Tensor) -> int | None:
        """Rows per chunk of the fused loss: the kernel's default, but at least 512 on the CPU."""
        if hidden.device.type != "cpu":
            return None
        rows = hidden.numel() // hidden.shape[-1]
        vocab, width = self.lm_head.weight.shape
        return max(1, min(rows, max(default_chunk_rows(rows, vocab, width), CPU_MIN_LOSS_CHUNK_ROWS)))

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.embed_tokens.weight
        return KVCache(self.config, batch_size, max_len or self.config.max_seq_len, p.device, p.dtype)


def build_model(cfg: ModelConfig) -> Transformer:
    return Transformer(cfg)
