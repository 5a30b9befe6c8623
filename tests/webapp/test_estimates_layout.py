"""The new-run form's mesh and memory-per-GPU estimate for a parallel layout."""

from __future__ import annotations

from modelcore.config import resolve
from webapp.runs.estimates import estimate, human_bytes, memory_per_gpu


def _memory(preset: str, parallel: dict) -> dict[str, int]:
    return memory_per_gpu(resolve(preset, {"parallel": parallel}))


def test_tensor_parallel_and_fsdp_split_the_weights_ddp_does_not() -> None:
    one = _memory("llama-1b", {"num_processes": 1})
    fsdp8 = _memory("llama-1b", {"num_processes": 8, "strategy": "fsdp"})
    ddp8 = _memory("llama-1b", {"num_processes": 8, "strategy": "ddp"})
    tp2 = _memory("llama-1b", {"num_processes": 2, "tensor_parallel": 2})
    tp2_fsdp4 = _memory("llama-1b", {"num_processes": 8, "tensor_parallel": 2, "strategy": "fsdp"})
    n = resolve("llama-1b").model.num_params()
    assert one["weights"] == 4 * n and one["optimizer"] == 8 * n and one["gradients"] == 4 * n
    assert ddp8["weights"] == one["weights"] and ddp8["activations"] == one["activations"]
    assert fsdp8["weights"] == round(4 * n / 8) == tp2_fsdp4["weights"]
    assert tp2["weights"] == round(4 * n / 2)
    # Tensor + sequence parallel split every activation; without SP the norms' part stays whole.
    assert tp2["activations"] == one["activations"] / 2
    no_sp = _memory("llama-1b", {"num_processes": 2, "tensor_parallel": 2, "sequence_parallel": False})
    assert tp2["activations"] < no_sp["activations"] < one["activations"]
    assert one["activations_checkpointed"] < one["activations"] / 5


def test_estimate_shows_the_mesh_and_the_memory(client_for, alice) -> None:
    est = estimate(
        resolve("tiny-cpu", {"parallel": {"num_processes": 4, "tensor_parallel": 2, "strategy": "fsdp"}})
    )
    assert est["mesh"] == {
        "data_parallel": 2,
        "tensor_parallel": 2,
        "expert_parallel": 1,
        "sequence_parallel": True,
        "strategy": "fsdp",
    }
    assert est["display"]["mesh"] == "2 DP (FSDP) × 2 TP + SP"
    assert estimate(resolve("tiny-cpu"))["display"]["mesh"] == "2 DP (DDP)"
    assert estimate(resolve("tiny-cpu", {"parallel": {"num_processes": 1}}))["display"]["mesh"] == "1 DP"
    assert est["display"]["memory_activations"].endswith("with checkpointing")
    # The total follows the config's own activation checkpointing.
    memory = est["memory_per_gpu"]
    state = memory["weights"] + memory["gradients"] + memory["optimizer"]
    assert est["display"]["memory_per_gpu"] == human_bytes(state + memory["activations"])
    ac = estimate(
        resolve(
            "tiny-cpu",
            {
                "parallel": {
                    "num_processes": 4,
                    "tensor_parallel": 2,
                    "strategy": "fsdp",
                    "activation_checkpointing": True,
                }
            },
        )
    )
    assert ac["display"]["memory_per_gpu"] == human_bytes(state + memory["activations_checkpointed"])
    client = client_for(alice)
    ok = client.post(
        "/api/v1/config/estimate",
        {"preset": "tiny-cpu", "config": {"parallel": {"tensor_parallel": 2}}},
        content_type="application/json",
    )
    assert ok.status_code == 200 and ok.json()["mesh"]["tensor_parallel"] == 2
    bad = client.post(
        "/api/v1/config/estimate",
        {"preset": "tiny-cpu", "config": {"parallel": {"tensor_parallel": 3}}},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert "must divide parallel.num_processes" in bad.json()["errors"]["parallel.tensor_parallel"]
