"""The decoder: shapes, GQA, MoE routing and losses, KV cache, parameter count."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from modelcore.config import ModelConfig
from modelcore.kernels import linear_cross_entropy_reference
from modelcore.model import Transformer
from modelcore.parallelize import apply_ac

TINY = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
MOE = dataclasses.replace(TINY, n_experts=4, moe_top_k=2, d_ff=48)


def _ids(batch: int = 2, length: int = 12, vocab: int = 97) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "cfg",
    [TINY, dataclasses.replace(TINY, n_kv_heads=0, tie_embeddings=False), MOE],
    ids=["gqa-tied", "mha-untied", "moe"],
)
def test_logits_shape_and_parameter_count(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = Transformer(cfg)
    logits = model(_ids())
    assert logits.shape == (2, 12, cfg.vocab_size)
    unique = {id(p): p for p in model.parameters()}
    assert sum(p.numel() for p in unique.values()) == cfg.num_params()
    assert (model.lm_head.weight is model.embed_tokens.weight) == cfg.tie_embeddings


def test_loss_path_equals_cross_entropy_of_logits_and_trains() -> None:
    torch.manual_seed(0)
    model = Transformer(TINY)
    ids = _ids()
    out = model(ids[:, :-1], ids[:, 1:])
    logits = model(ids[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, TINY.vocab_size), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # A few steps on one batch must lower its loss: the graph is wired end to end.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = out.loss.item()
    for _ in range(20):
        opt.zero_grad()
        loss = model(ids[:, :-1], ids[:, 1:]).loss
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    ids = _ids()
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % TINY.vocab_size
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_gqa_equals_mha_with_repeated_kv_heads() -> None:
    torch.manual_seed(0)
    gqa = Transformer(TINY).eval()
    mha = Transformer(dataclasses.replace(TINY, n_kv_heads=0)).eval()
    state = gqa.state_dict()
    head = TINY.head_dim
    for key in list(state):
        if key.endswith(("k_proj.weight", "v_proj.weight")):
            # (K*Dh, D) -> each kv head serves n_heads/n_kv_heads consecutive query heads
            w = state[key].view(TINY.kv_heads, head, -1)
            state[key] = w.repeat_interleave(TINY.n_heads // TINY.kv_heads, dim=0).reshape(-1, TINY.d_model)
    mha.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(gqa(_ids()), mha(_ids()))


@pytest.mark.parametrize("cfg", [TINY, MOE], ids=["dense", "moe"])
def test_kv_cache_matches_full_forward(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    ids = _ids(length=14)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2)
        parts = [model(ids[:, :9], cache=cache)] + [
            model(ids[:, i : i + 1], cache=cache) for i in range(9, 14)
        ]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_moe_losses_utilisation_and_gradients() -> None:
    torch.manual_seed(0)
    model = Transformer(MOE)
    ids = _ids()
    out = model(ids[:, :-1], ids[:, 1:])
    assert out.expert_load.shape == (MOE.n_layers, MOE.n_experts)
    torch.testing.assert_close(out.expert_load.sum(dim=1), torch.ones(MOE.n_layers))
    assert out.aux_loss.item() >= 1.0 - 1e-4  # E * sum(f * P) is at least 1, equal when balanced
    assert out.z_loss.item() > 0
    torch.testing.assert_close(
        out.loss, out.ce_loss + MOE.moe_aux_loss_coef * out.aux_loss + MOE.moe_z_loss_coef * out.z_loss
    )
    out.loss.backward()
    for layer in model.layers:
        assert layer.mlp.gate.weight.grad.abs().sum() > 0  # the router learns from both losses
        assert all(e.gate_proj.weight.grad is not None for e in layer.mlp.experts)


def test_capacity_routing_drops_overflow_tokens() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(MOE, moe_capacity_factor=0.25)
    model = Transformer(cfg)
    moe = model.layers[0].mlp
    x = torch.randn(2, 16, cfg.d_model)
    _, stats = moe(x)
    # capacity = ceil(0.25 * 32 tokens * 2 / 4) = 4 slots per expert: at most 16 of 64 kept
    assert stats.dropped.item() >= 1 - 16 / 64 - 1e-6
    dropless = Transformer(MOE).layers[0].mlp
    dropless.load_state_dict(moe.state_dict())
    assert dropless(x)[1].dropped.item() == 0


def test_sequence_longer_than_max_seq_len_is_refused() -> None:
    model = Transformer(TINY)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, TINY.max_seq_len + 1, dtype=torch.long))


def test_loss_uses_the_kernel_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import modelcore.kernels as kernels

    calls = []

    def spy(hidden, weight, targets, ignore_index=-100, backend="torch", chunk_rows=None):  # noqa: ANN001, ANN202
        calls.append((backend, chunk_rows))
        return linear_cross_entropy_reference(hidden, weight, targets, ignore_index)

    monkeypatch.setattr(kernels, "fused_linear_cross_entropy", spy)
    ids = _ids()
    Transformer(TINY)(ids[:, :-1], ids[:, 1:])
    # 22 tokens: one chunk of them all (the CPU minimum of 512 rows is capped at the row count).
    assert calls == [("torch", 22)]


def test_cpu_loss_chunks_of_512_rows_give_the_reference_loss_and_gradients() -> None:
    cfg = dataclasses.replace(TINY, max_seq_len=400)
    ids = _ids(batch=3, length=400)  # 1197 target rows: chunks of 512, 512 and 173
    torch.manual_seed(0)
    model = Transformer(cfg)
    assert model._loss_chunk_rows(torch.zeros(3, 399, cfg.d_model)) == 512
    out = model(ids[:, :-1], ids[:, 1:])
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits = model(ids[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
    expected.backward()
    torch.testing.assert_close(out.loss, expected)
    for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cfg", [TINY, MOE], ids=["dense", "moe"])
def test_activation_checkpointing_gives_the_same_gradients(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    plain = Transformer(cfg)
    recomputed = Transformer(cfg)
    recomputed.load_state_dict(plain.state_dict())
    apply_ac(recomputed)
    calls = []
    recomputed.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
    ids = _ids()
    for model in (plain, recomputed):
        model(ids[:, :-1], ids[:, 1:]).loss.backward()
    assert len(calls) == 2  # the forward, and its recomputation in the backward
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in recomputed.named_parameters()]
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.no_grad():  # generation and evaluation do not recompute
        recomputed(ids)
    assert len(calls) == 3
