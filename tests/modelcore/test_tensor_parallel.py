"""Tensor and sequence parallel on 2 CPU processes (gloo); on a GPU host the same code runs on NCCL.

- one step of a TP model against the same model whole: equal loss, every parameter's
  gradient equal (``tp_worker.py``; one torchrun launch runs every TP and EP case), with and without
  sequence parallel, key/value heads split or replicated;
- the real trainer (``launch_command``, as a worker starts it): TP=2 on 2 processes trains
  the same 20 losses as 1 process and samples the same text (``train.sample_every``, the
  model gathered whole), and each rank writes its own shard of the checkpoints
  (torch.distributed.checkpoint); TP=2's checkpoint of step 10 resumes on 1 process, and 1
  process's resumes at TP=2 (without sequence parallel) and at TP=2 x FSDP=2 on 4 processes
  (with activation checkpointing), each for steps 11-20 with the losses of 1 process; the TP
  checkpoint loads whole and exports to transformers with the same logits;
- the (dp, tp) mesh of 4 ranks, on torch's fake process group;
- config errors for every impossible layout.

Launches are what cost here (the steps of these tiny models are cheap), so the runs are
shared: the two 20-step runs are module fixtures, and a resume starts from a copy of one of
their checkpoints of step 10 instead of training the first half again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from distributed import (
    assert_same_losses,
    copy_checkpoint,
    fake_meshes,
    register_step_cases,
    step_results,
    written_by_file,
)
from test_training import SMALL, _config, _events, _losses, _run, _statuses
from torch.distributed.tensor import DTensor

from modelcore.checkpoint import is_sharded, load_checkpoint
from modelcore.config import ConfigError, resolve
from modelcore.export import export_checkpoint

TINY_MODEL = {
    "vocab_size": 260,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "max_seq_len": 64,
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


# --- config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        (
            {"parallel": {"tensor_parallel": 3}},
            "parallel.tensor_parallel",
            "must divide parallel.num_processes (2)",
        ),
        (
            {
                "parallel": {"tensor_parallel": 4, "num_processes": 4},
                "model": {"n_heads": 2, "n_kv_heads": 0},
            },
            "parallel.tensor_parallel",
            "must divide model.n_heads (2)",
        ),
        (
            {
                "parallel": {"tensor_parallel": 4, "num_processes": 4},
                "model": {"d_model": 96, "n_heads": 12, "n_kv_heads": 6},
            },
            "parallel.tensor_parallel",
            "model.n_kv_heads (6)",
        ),
        (
            {"parallel": {"tensor_parallel": 2, "num_processes": 4, "strategy": "ddp"}},
            "parallel.strategy",
            "must be fsdp",
        ),
        (
            {"parallel": {"tensor_parallel": 2, "mixed_precision": "fp16"}},
            "parallel.mixed_precision",
            "use bf16",
        ),
        (
            {"parallel": {"tensor_parallel": 2}, "data": {"seq_len": 63}},
            "parallel.sequence_parallel",
            "data.seq_len (63) divisible",
        ),
    ],
)
def test_impossible_layouts_are_field_errors(overrides: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("tiny-cpu", overrides)
    assert fragment in caught.value.errors[field], caught.value.errors


def test_moe_models_are_not_tensor_parallel() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve("tiny-moe-cpu", {"parallel": {"tensor_parallel": 2}})
    assert "mixture-of-experts" in caught.value.errors["parallel.tensor_parallel"]


def test_global_batch_counts_data_parallel_processes_only() -> None:
    tp = resolve("tiny-cpu", {"parallel": {"tensor_parallel": 2}})
    one = resolve("tiny-cpu", {"parallel": {"num_processes": 1}})
    ddp = resolve("tiny-cpu")
    assert tp.parallel.data_parallel == 1 and tp.tokens_per_step() == one.tokens_per_step()
    assert ddp.tokens_per_step() == 2 * one.tokens_per_step()
    mixed = resolve("tiny-cpu", {"parallel": {"tensor_parallel": 2, "num_processes": 4, "strategy": "fsdp"}})
    assert mixed.parallel.data_parallel == 2


# --- the mesh ----------------------------------------------------------------


def test_mesh_of_tp_2_by_dp_2_groups_neighbouring_ranks_for_tensor_parallel() -> None:
    meshes = fake_meshes()["2x1"]
    assert all(m["shape"] == [2, 2] and m["names"] == ["dp", "tp"] for m in meshes.values())
    # Tensor-parallel groups are neighbours (one node's NVLink); data parallel runs across them.
    assert [meshes[r]["tp"] for r in range(4)] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert [meshes[r]["dp"] for r in range(4)] == [[0, 2], [1, 3], [0, 2], [1, 3]]
    # The trainer's data-parallel rank is rank // tp: the first mesh coordinate.
    assert [meshes[r]["coords"] for r in range(4)] == [[0, 0], [0, 1], [1, 0], [1, 1]]


# --- one step against the whole model ----------------------------------------

STEP_CASES = {
    "tp": (TINY_MODEL, False),
    "tp-sp": (TINY_MODEL, True),
    # One key/value head for two ranks (replicated), an untied head, a vocabulary that
    # does not split evenly.
    "tp-sp-replicated-kv-untied": (
        {**TINY_MODEL, "vocab_size": 261, "n_kv_heads": 1, "tie_embeddings": False},
        True,
    ),
}


register_step_cases(
    "tp", [{"id": case, "model": model, "sp": sp} for case, (model, sp) in STEP_CASES.items()]
)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(STEP_CASES))
def test_tp_step_gives_the_loss_and_every_gradient_of_the_whole_model(
    case: str,
) -> None:
    model, sequence_parallel = STEP_CASES[case]
    result = step_results()["tp"][case]
    whole, split = result["losses"]
    assert split == pytest.approx(whole, abs=1e-6)
    names = set(result["grad_diffs"])
    assert "layers.1.mlp.down_proj.weight" in names and "embed_tokens.weight" in names
    assert ("lm_head.weight" in names) == (not model.get("tie_embeddings", True))
    worst = max(result["grad_diffs"].items(), key=lambda kv: kv[1])
    assert worst[1] < 1e-6, worst
    # Logits are never gathered: asking for them says how to get them instead; sequence
    # parallel turns down a length it cannot split evenly (15 positions on 2 ranks).
    logits_error, odd_length_error = result["errors"]
    assert "load its checkpoint whole" in logits_error
    assert odd_length_error == (
        "sequence parallel needs a sequence length divisible by 2, got 15" if sequence_parallel else ""
    )


# --- the real trainer --------------------------------------------------------

SAMPLES = {"sample_every": 10, "sample_prompts": "def |import ", "sample_max_tokens": 8}
STEPS = {"train": {"max_steps": 20, "micro_batch_size": 4, "checkpoint_every": 10, **SAMPLES}}
ALL_STEPS, SECOND_HALF = range(1, 21), range(11, 21)


def _tp(sequence_parallel: bool = True) -> Any:
    return _config(
        {
            **STEPS,
            "parallel": {"num_processes": 2, "tensor_parallel": 2, "sequence_parallel": sequence_parallel},
        },
        SMALL,
    )


def _one() -> Any:
    return _config({**STEPS, "parallel": {"num_processes": 1}}, SMALL)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """20 steps on one process, checkpoints of steps 10 and 20."""
    run_dir = tmp_path_factory.mktemp("one")
    code, out = _run(_one(), run_dir, cache_dir)
    assert code == 0, out
    return run_dir


@pytest.fixture(scope="module")
def one_process_losses(one_process_run: Path) -> dict[int, float]:
    return _losses(one_process_run)


@pytest.fixture(scope="module")
def tp_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """20 steps at TP=2 with sequence parallel, checkpoints of steps 10 and 20."""
    run_dir = tmp_path_factory.mktemp("tp")
    code, out = _run(_tp(), run_dir, cache_dir)
    assert code == 0, out
    return run_dir


@pytest.mark.slow
def test_tp_2_trains_the_same_losses_and_samples_as_one_process(
    tp_run: Path, one_process_run: Path, one_process_losses: dict[int, float]
) -> None:
    info = _statuses(tp_run)[0]["info"]
    assert info["mesh"] == {"dp": 1, "tp": 2} and info["tokens_per_step"] == _one().tokens_per_step()
    losses = _losses(tp_run)
    assert_same_losses(losses, one_process_losses, ALL_STEPS)
    assert losses[20] < losses[1] - 0.5  # it learns
    # Samples during training: the split model gathered whole writes what one process writes.
    samples = _samples(tp_run)
    assert sorted(samples) == [10, 20] and samples == _samples(one_process_run)
    assert [row["prompt"] for row in samples[20]] == ["def ", "import "]


@pytest.mark.slow
def test_each_tp_rank_writes_its_own_shard_of_the_checkpoint(tp_run: Path) -> None:
    path = tp_run / "checkpoints" / "step_000020"
    assert is_sharded(path) and json.loads((path / "meta.json").read_text())["format"] == "dcp"
    assert not (path / "model.safetensors").exists() and not (path / "optimizer.pt").exists()
    files = written_by_file(path)
    assert set(files) == {"__0_0.distcp", "__1_0.distcp"}
    # A column-split weight and its AdamW moments: half in each rank's file.
    for name in (
        "model.layers.0.mlp.gate_proj.weight",
        "optimizer.state.layers.0.mlp.gate_proj.weight.exp_avg",
    ):
        assert name in files["__0_0.distcp"] and name in files["__1_0.distcp"], name
    sizes = [(path / "state" / f).stat().st_size for f in sorted(files)]
    assert min(sizes) > max(sizes) / 3, sizes  # not everything on rank 0


@pytest.mark.slow
def test_a_tp_2_checkpoint_loads_whole_and_exports_to_transformers(tmp_path: Path, tp_run: Path) -> None:
    transformers = pytest.importorskip("transformers")
    model, loaded_cfg, _ = load_checkpoint(tp_run)
    assert loaded_cfg.parallel.tensor_parallel == 2
    assert not any(isinstance(p, DTensor) for p in model.parameters())
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        export_checkpoint(tp_run, tmp_path / "hf"), torch_dtype=torch.float32
    ).eval()
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def _samples(run_dir: Path) -> dict[int, list[dict[str, str]]]:
    return {e["step"]: e["samples"] for e in _events(run_dir) if e["type"] == "sample"}


def _resumed_from(run_dir: Path) -> list[int | None]:
    return [s["info"]["resumed_from_step"] for s in _statuses(run_dir) if s["status"] == "running"]


@pytest.mark.slow
def test_a_tp_2_checkpoint_resumes_on_one_process_with_the_same_losses(
    tmp_path: Path, cache_dir: Path, tp_run: Path, one_process_losses: dict[int, float]
) -> None:
    # Steps 1-10 at TP=2 (the fixture's run), 11-20 on one process.
    run_dir = tmp_path / "moved"
    copy_checkpoint(tp_run, 10, run_dir)
    code, out = _run(_one(), run_dir, cache_dir)
    assert code == 0, out
    assert _resumed_from(run_dir) == [10]
    assert_same_losses(_losses(run_dir), one_process_losses, SECOND_HALF)


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_at_tp_2_without_sequence_parallel(
    tmp_path: Path, cache_dir: Path, one_process_run: Path, one_process_losses: dict[int, float]
) -> None:
    run_dir = tmp_path / "moved"
    copy_checkpoint(one_process_run, 10, run_dir)
    code, out = _run(_tp(sequence_parallel=False), run_dir, cache_dir)
    assert code == 0, out
    assert _resumed_from(run_dir) == [10]
    assert _statuses(run_dir)[0]["info"]["mesh"] == {"dp": 1, "tp": 2}
    assert_same_losses(_losses(run_dir), one_process_losses, SECOND_HALF)


@pytest.mark.slow
def test_tp_2_by_fsdp_2_on_four_processes_resumes_one_process_with_the_same_losses(
    tmp_path: Path, cache_dir: Path, one_process_run: Path, one_process_losses: dict[int, float]
) -> None:
    # (dp 2, tp 2): each FSDP rank draws half the global batch, with activation checkpointing;
    # steps 11-20 from one process's checkpoint, each of its tensors split two ways.
    cfg = _config(
        {
            "train": {**STEPS["train"], "micro_batch_size": 2},
            "parallel": {
                "num_processes": 4,
                "tensor_parallel": 2,
                "strategy": "fsdp",
                "activation_checkpointing": True,
            },
        },
        SMALL,
    )
    assert cfg.tokens_per_step() == _one().tokens_per_step()
    run_dir = tmp_path / "tp-fsdp"
    copy_checkpoint(one_process_run, 10, run_dir)
    code, out = _run(cfg, run_dir, cache_dir)
    assert code == 0, out
    info = _statuses(run_dir)[0]["info"]
    assert info["mesh"] == {"dp": 2, "tp": 2} and info["data_parallel"] == "fsdp"
    assert _resumed_from(run_dir) == [10]
    assert_same_losses(_losses(run_dir), one_process_losses, SECOND_HALF)
    assert set(written_by_file(run_dir / "checkpoints" / "step_000020")) == {
        f"__{r}_0.distcp" for r in range(4)
    }
