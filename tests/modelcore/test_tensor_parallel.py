"""Tensor and sequence parallel on 2 CPU processes (gloo); on a GPU host the same code runs on NCCL.

- one step of a TP model against the same model whole: equal loss, every parameter's
  gradient equal (``tp_worker.py`` under torchrun), with and without sequence parallel,
  key/value heads split or replicated;
- the real trainer (``launch_command``, as a worker starts it): TP=2 on 2 processes trains
  the same 20 losses as 1 process; a run moved from TP=2 to 1 process and from 1 process to
  TP=2 by resuming from its checkpoints continues the same losses; a TP checkpoint loads
  whole and exports to transformers with the same logits;
- TP=2 x FSDP=2 on 4 processes (with activation checkpointing) against 1 process, 10 steps;
- the (dp, tp) mesh of 4 ranks, on torch's fake process group;
- config errors for every impossible layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_training import SMALL, _config, _losses, _run, _statuses
from torch.distributed.tensor import DTensor

from modelcore.checkpoint import load_checkpoint
from modelcore.config import ConfigError, resolve
from modelcore.export import export_checkpoint
from modelcore.launch import free_port

REPO = Path(__file__).resolve().parents[2]
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
        (
            {"parallel": {"tensor_parallel": 2}, "train": {"sample_every": 10}},
            "train.sample_every",
            "must be 0",
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

_MESH_SCRIPT = """
import json, sys
import torch.distributed as dist
from torch.testing._internal.distributed.fake_pg import FakeStore
from modelcore.parallelize import build_mesh
out = {}
for rank in range(4):
    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=4)
    mesh = build_mesh("cpu", 4, 2)
    out[rank] = {
        "shape": list(mesh.shape),
        "names": list(mesh.mesh_dim_names),
        "tp": mesh["tp"].mesh.tolist(),
        "dp": mesh["dp"].mesh.tolist(),
        "coords": mesh.get_coordinate(),
    }
    dist.destroy_process_group()
print(json.dumps(out))
"""


def test_mesh_of_tp_2_by_dp_2_groups_neighbouring_ranks_for_tensor_parallel() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _MESH_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    meshes = {int(k): v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
    assert all(m["shape"] == [2, 2] and m["names"] == ["dp", "tp"] for m in meshes.values())
    # Tensor-parallel groups are neighbours (one node's NVLink); data parallel runs across them.
    assert [meshes[r]["tp"] for r in range(4)] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert [meshes[r]["dp"] for r in range(4)] == [[0, 2], [1, 3], [0, 2], [1, 3]]
    # The trainer's data-parallel rank is rank // tp: the first mesh coordinate.
    assert [meshes[r]["coords"] for r in range(4)] == [[0, 0], [0, 1], [1, 0], [1, 1]]


# --- one step against the whole model ----------------------------------------


def _torchrun_step(tmp_path: Path, model: dict[str, Any], sequence_parallel: bool) -> dict[str, Any]:
    out = tmp_path / "step.json"
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(REPO / "tests" / "modelcore" / "tp_worker.py"),
        json.dumps(model),
        "sp" if sequence_parallel else "no-sp",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "sequence_parallel"),
    [
        (TINY_MODEL, False),
        (TINY_MODEL, True),
        # One key/value head for two ranks (replicated), an untied head, a vocabulary that
        # does not split evenly.
        ({**TINY_MODEL, "vocab_size": 261, "n_kv_heads": 1, "tie_embeddings": False}, True),
    ],
    ids=["tp", "tp-sp", "tp-sp-replicated-kv-untied"],
)
def test_tp_step_gives_the_loss_and_every_gradient_of_the_whole_model(
    tmp_path: Path, model: dict[str, Any], sequence_parallel: bool
) -> None:
    result = _torchrun_step(tmp_path, model, sequence_parallel)
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

STEPS = {"train": {"max_steps": 20, "micro_batch_size": 4, "checkpoint_every": 0}}


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
    run_dir = tmp_path_factory.mktemp("one")
    code, out = _run(_one(), run_dir, cache_dir)
    assert code == 0, out
    return run_dir


@pytest.fixture(scope="module")
def one_process_losses(one_process_run: Path) -> dict[int, float]:
    return _losses(one_process_run)


@pytest.mark.slow
@pytest.mark.parametrize("sequence_parallel", [True, False], ids=["sp", "no-sp"])
def test_tp_2_trains_the_same_losses_as_one_process(
    tmp_path: Path, cache_dir: Path, one_process_losses: dict[int, float], sequence_parallel: bool
) -> None:
    code, out = _run(_tp(sequence_parallel), tmp_path / "tp", cache_dir)
    assert code == 0, out
    info = _statuses(tmp_path / "tp")[0]["info"]
    assert info["mesh"] == {"dp": 1, "tp": 2} and info["tokens_per_step"] == _one().tokens_per_step()
    losses = _losses(tmp_path / "tp")
    assert sorted(losses) == sorted(one_process_losses) == list(range(1, 21))
    for step, loss in losses.items():
        assert loss == pytest.approx(one_process_losses[step], abs=1e-4), step
    assert losses[20] < losses[1] - 0.5  # it learns


@pytest.mark.slow
def test_a_one_process_run_resumes_at_tp_2_and_its_checkpoint_exports_to_transformers(
    tmp_path: Path, cache_dir: Path, one_process_losses: dict[int, float]
) -> None:
    transformers = pytest.importorskip("transformers")
    run_dir = tmp_path / "run"
    # Steps 1-3 on one process, 4-6 at TP=2; each part stopped as a cancel does (with a checkpoint).
    for cfg, stop_at in ((_one(), "3"), (_tp(), "6")):
        code, out = _run(cfg, run_dir, cache_dir, {"RUNWRIGHT_STOP_AT_STEP": stop_at})
        assert code in (0, 1), out  # the launcher itself may exit 1 after its ranks were cancelled
    assert [s["status"] for s in _statuses(run_dir)] == ["running", "cancelled"] * 2
    losses = _losses(run_dir)
    assert sorted(losses) == list(range(1, 7))
    for step, loss in losses.items():
        assert loss == pytest.approx(one_process_losses[step], abs=1e-4), step
    # The TP=2 checkpoint loads as a plain model, and exports with the same logits.
    model, loaded_cfg, _ = load_checkpoint(run_dir)
    assert loaded_cfg.parallel.tensor_parallel == 2
    assert not any(isinstance(p, DTensor) for p in model.parameters())
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        export_checkpoint(run_dir, tmp_path / "hf"), torch_dtype=torch.float32
    ).eval()
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_tp_2_run_resumes_on_one_process_with_the_same_losses(
    tmp_path: Path, cache_dir: Path, one_process_losses: dict[int, float]
) -> None:
    run_dir = tmp_path / "moved"
    # Steps 1-10 at TP=2 (stopped as a cancel does, with a checkpoint), 11-20 on one process.
    for cfg, stop_at in ((_tp(), "10"), (_one(), "")):
        code, out = _run(cfg, run_dir, cache_dir, {"RUNWRIGHT_STOP_AT_STEP": stop_at})
        assert code in (0, 1), out  # the launcher itself may exit 1 after its ranks were cancelled
    assert [s["status"] for s in _statuses(run_dir)] == ["running", "cancelled", "running", "completed"]
    resumed = [s["info"]["resumed_from_step"] for s in _statuses(run_dir) if s["status"] == "running"]
    assert resumed == [None, 10]
    losses = _losses(run_dir)
    assert sorted(losses) == list(range(1, 21))
    for step, loss in losses.items():
        assert loss == pytest.approx(one_process_losses[step], abs=1e-4), step


@pytest.mark.slow
def test_tp_2_by_fsdp_2_on_four_processes_trains_the_same_losses_as_one_process(
    tmp_path: Path, cache_dir: Path, one_process_losses: dict[int, float]
) -> None:
    # (dp 2, tp 2): each FSDP rank draws half the global batch, with activation checkpointing.
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
    # Half the run (4 ranks share 2 cores here): stopped as a cancel would, after step 10.
    code, out = _run(cfg, tmp_path / "tp-fsdp", cache_dir, {"RUNWRIGHT_STOP_AT_STEP": "10"})
    assert code in (0, 1), out
    info = _statuses(tmp_path / "tp-fsdp")[0]["info"]
    assert info["mesh"] == {"dp": 2, "tp": 2} and info["data_parallel"] == "fsdp"
    losses = _losses(tmp_path / "tp-fsdp")
    assert sorted(losses) == list(range(1, 11))
    for step, loss in losses.items():
        assert loss == pytest.approx(one_process_losses[step], abs=1e-4), step
