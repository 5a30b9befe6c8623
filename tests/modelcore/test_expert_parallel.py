"""Expert parallel on 2 CPU processes (gloo); on a GPU host the same code runs on NCCL.

- one step of an EP model against the same model whole (``ep_worker.py``; one torchrun
  launch runs every TP and EP case): equal loss, logits and per-expert load, every parameter's gradient
  equal on the rank that holds it (router, experts, the rest), dropless and with capacity routing;
- the real trainer (``launch_command``, as a worker starts it): EP=2 on 2 processes trains
  the same losses as 1 process, dropless and with capacity routing, and logs the same
  per-expert load and samples (``train.sample_every``, the experts gathered whole); each rank writes its own experts into the sharded checkpoint; EP=2 beside
  DP=2 on 4 processes, resumed from EP=2's checkpoint, trains the losses of 1 process with the
  same global batch, and so does EP=2 beside FSDP2 over dp=2, whose checkpoint loads in one
  process's layout as the one-process run's; a checkpoint saved under EP=2 resumes
  under EP=1, and one saved on 1 process resumes under EP=2, with the losses of the
  uninterrupted run, and loads whole (every expert) as a plain model;
- the (dp, ep) mesh and config errors for every impossible expert layout.

As in test_tensor_parallel.py, the 12-step runs are module fixtures and a resume starts from
a copy of one of their checkpoints of step 6.
"""

from __future__ import annotations

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

from modelcore.checkpoint import list_checkpoints, load_checkpoint, load_state
from modelcore.config import ConfigError, resolve
from modelcore.model import Transformer
from webapp.runs.estimates import estimate

TINY_MOE = {
    "vocab_size": 260,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "max_seq_len": 64,
    "n_experts": 4,
    "moe_top_k": 2,
    "d_ff": 128,
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


# --- config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "overrides", "field", "fragment"),
    [
        ("tiny-cpu", {"parallel": {"expert_parallel": 2}}, "parallel.expert_parallel", "dense model"),
        (
            "tiny-moe-cpu",
            {"parallel": {"expert_parallel": 3, "num_processes": 3}},
            "parallel.expert_parallel",
            "must divide model.n_experts (4)",
        ),
        (
            "tiny-moe-cpu",
            {"parallel": {"expert_parallel": 4, "num_processes": 2}},
            "parallel.expert_parallel",
            "must divide parallel.num_processes (2)",
        ),
        (
            "tiny-moe-cpu",
            {"parallel": {"expert_parallel": 2, "tensor_parallel": 2, "num_processes": 4}},
            "parallel.tensor_parallel",
            "mixture-of-experts",
        ),
        (
            "tiny-moe-cpu",
            {"parallel": {"expert_parallel": 2, "mixed_precision": "fp16"}},
            "parallel.mixed_precision",
            "use bf16",
        ),
    ],
)
def test_impossible_expert_layouts_are_field_errors(
    preset: str, overrides: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(preset, overrides)
    assert fragment in caught.value.errors[field], caught.value.errors


def test_expert_parallel_processes_train_one_batch() -> None:
    ep = resolve("tiny-moe-cpu", {"parallel": {"expert_parallel": 2}})
    one = resolve("tiny-moe-cpu", {"parallel": {"num_processes": 1}})
    assert ep.parallel.data_parallel == 1 and ep.tokens_per_step() == one.tokens_per_step()
    beside = resolve("tiny-moe-cpu", {"parallel": {"expert_parallel": 2, "num_processes": 4}})
    assert beside.parallel.data_parallel == 2 and beside.tokens_per_step() == 2 * one.tokens_per_step()


def test_estimate_shows_the_expert_mesh_and_splits_the_experts_weights() -> None:
    ep = resolve("tiny-moe-cpu", {"parallel": {"expert_parallel": 2}})
    one = resolve("tiny-moe-cpu", {"parallel": {"num_processes": 1}})
    est = estimate(ep)
    assert est["display"]["mesh"] == "1 DP × 2 EP" and est["mesh"]["expert_parallel"] == 2
    m = ep.model
    experts = m.n_layers * m.n_experts * 3 * m.d_model * m.ffn_hidden
    assert est["memory_per_gpu"]["weights"] == round(4 * (m.num_params() - experts / 2))
    assert estimate(one)["memory_per_gpu"]["weights"] == 4 * m.num_params()


def test_fsdp_beside_expert_parallel_is_a_layout_the_form_shows() -> None:
    cfg = resolve(
        "tiny-moe-cpu", {"parallel": {"expert_parallel": 2, "num_processes": 4, "strategy": "fsdp"}}
    )
    assert cfg.parallel.data_parallel == 2
    assert estimate(cfg)["display"]["mesh"] == "2 DP (FSDP) × 2 EP"
    # Every weight is split over the four processes (experts by EP, then by FSDP over dp).
    assert estimate(cfg)["memory_per_gpu"]["weights"] == round(4 * cfg.model.num_params() / 4)


def test_mesh_groups_neighbouring_ranks_for_expert_parallel() -> None:
    meshes = fake_meshes()["1x2"]
    assert all(m["names"] == ["dp", "ep"] for m in meshes.values())
    assert [meshes[r]["ep"] for r in range(4)] == [[0, 1], [0, 1], [2, 3], [2, 3]]


# --- one step against the whole model ----------------------------------------

STEP_CASES = {
    "dropless": TINY_MOE,
    "capacity": {**TINY_MOE, "moe_capacity_factor": 1.0},
    "top1-untied": {**TINY_MOE, "moe_top_k": 1, "tie_embeddings": False},
}


register_step_cases("ep", [{"id": case, "model": model} for case, model in STEP_CASES.items()])


@pytest.mark.slow
@pytest.mark.parametrize("case", list(STEP_CASES))
def test_ep_step_gives_the_loss_and_every_gradient_of_the_whole_model(
    case: str,
) -> None:
    result = step_results()["ep"][case]
    whole, split = result["losses"]
    assert split == pytest.approx(whole, abs=1e-6)
    assert result["load"][0] == result["load"][1]
    assert result["logits_diff"] < 1e-6
    rank0, rank1 = (set(diffs) for diffs in result["grad_diffs"])
    # Each rank holds half the experts, and everything else.
    assert "layers.0.mlp.experts.0.down_proj.weight" in rank0 - rank1
    assert "layers.1.mlp.experts.3.gate_proj.weight" in rank1 - rank0
    assert {"layers.0.mlp.gate.weight", "embed_tokens.weight"} <= rank0 & rank1
    for diffs in result["grad_diffs"]:
        worst = max(diffs.items(), key=lambda kv: kv[1])
        assert worst[1] < 1e-6, worst


# --- the real trainer --------------------------------------------------------

SAMPLES = {"sample_every": 6, "sample_prompts": "def |import ", "sample_max_tokens": 8}
STEPS = {"train": {"max_steps": 12, "micro_batch_size": 4, "checkpoint_every": 6, **SAMPLES}}
ALL_STEPS, SECOND_HALF = range(1, 13), range(7, 13)


def _moe(parallel: dict[str, Any], capacity: float = 0.0) -> Any:
    base = resolve("tiny-moe-cpu", SMALL).to_dict()
    cfg = _config({**STEPS, "parallel": parallel, "model": {"moe_capacity_factor": capacity}}, base)
    assert cfg.model.n_experts == 4
    return cfg


def _ep(capacity: float = 0.0) -> Any:
    return _moe({"num_processes": 2, "expert_parallel": 2}, capacity)


def _one(capacity: float = 0.0) -> Any:
    return _moe({"num_processes": 1}, capacity)


def _expert_loads(run_dir: Path) -> dict[int, dict[str, float]]:
    return {
        e["step"]: {k: v for k, v in e["values"].items() if k.startswith("moe/expert_util/")}
        for e in _events(run_dir)
        if e["type"] == "metric" and "train/loss" in e["values"]
    }


def _resumed_from(run_dir: Path) -> list[int | None]:
    return [s["info"]["resumed_from_step"] for s in _statuses(run_dir) if s["status"] == "running"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """12 steps on one process, dropless, checkpoints of steps 6 and 12."""
    run_dir = tmp_path_factory.mktemp("one")
    code, out = _run(_one(), run_dir, cache_dir)
    assert code == 0, out
    return run_dir


@pytest.fixture(scope="module")
def ep_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """12 steps at EP=2, dropless, checkpoints of steps 6 and 12."""
    run_dir = tmp_path_factory.mktemp("ep")
    code, out = _run(_ep(), run_dir, cache_dir)
    assert code == 0, out
    return run_dir


def _assert_same_run(run_dir: Path, reference: Path, steps: range) -> None:
    assert_same_losses(_losses(run_dir), _losses(reference), steps)
    # Per-expert load is logged as one process logs it.
    loads, expected_loads = _expert_loads(run_dir), _expert_loads(reference)
    assert len(loads[steps[0]]) == 2 * 4
    for step, values in loads.items():
        assert values == pytest.approx(expected_loads[step], abs=1e-6), step


@pytest.mark.slow
def test_ep_2_trains_the_same_losses_and_samples_as_one_process(ep_run: Path, one_process_run: Path) -> None:
    info = _statuses(ep_run)[0]["info"]
    assert info["mesh"] == {"dp": 1, "tp": 1, "ep": 2}
    assert info["tokens_per_step"] == _one().tokens_per_step()
    _assert_same_run(ep_run, one_process_run, ALL_STEPS)
    # Samples during training: the experts gathered from their ranks write what one process writes.
    samples = {e["step"]: e["samples"] for e in _events(ep_run) if e["type"] == "sample"}
    assert sorted(samples) == [6, 12]
    assert samples == {e["step"]: e["samples"] for e in _events(one_process_run) if e["type"] == "sample"}


@pytest.mark.slow
def test_ep_2_with_capacity_routing_trains_the_same_losses_as_one_process(
    tmp_path: Path, cache_dir: Path
) -> None:
    # Dropped tokens are decided over all tokens, as one process does. Both stopped after
    # step 6, as a cancel does: two more launches, so half the steps.
    for cfg, name in ((_one(1.0), "one"), (_ep(1.0), "ep")):
        code, out = _run(cfg, tmp_path / name, cache_dir, {"RUNWRIGHT_STOP_AT_STEP": "6"})
        assert code in (0, 1), out  # the launcher itself may exit 1 after its ranks were cancelled
    _assert_same_run(tmp_path / "ep", tmp_path / "one", range(1, 7))


@pytest.mark.slow
def test_each_ep_rank_writes_its_own_experts_into_the_checkpoint(ep_run: Path) -> None:
    files = written_by_file(ep_run / "checkpoints" / "step_000012")
    assert set(files) == {"__0_0.distcp", "__1_0.distcp"}
    # Rank r holds experts [2r, 2r + 2) of every layer, named by their global index.
    for rank, experts in ((0, (0, 1)), (1, (2, 3))):
        mine, other = files[f"__{rank}_0.distcp"], files[f"__{1 - rank}_0.distcp"]
        for e in experts:
            for name in (
                f"model.layers.1.mlp.experts.{e}.up_proj.weight",
                f"optimizer.state.layers.1.mlp.experts.{e}.up_proj.weight.exp_avg_sq",
            ):
                assert name in mine and name not in other, name
    # What both hold (the rest of the model) is written once.
    assert sum("model.embed_tokens.weight" in names for names in files.values()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("order", ["ep-then-one", "one-then-ep"])
def test_a_checkpoint_moved_between_ep_2_and_one_process_keeps_the_losses(
    tmp_path: Path, cache_dir: Path, one_process_run: Path, ep_run: Path, order: str
) -> None:
    # Steps 1-6 in one layout (a fixture's run), 7-12 in the other.
    saved, cfg = (ep_run, _one()) if order == "ep-then-one" else (one_process_run, _ep())
    run_dir = tmp_path / "moved"
    copy_checkpoint(saved, 6, run_dir)
    code, out = _run(cfg, run_dir, cache_dir)
    assert code == 0, out
    assert _resumed_from(run_dir) == [6]
    assert_same_losses(_losses(run_dir), _losses(one_process_run), SECOND_HALF)
    # The final checkpoint loads whole (every expert) as a plain model.
    model, loaded_cfg, _ = load_checkpoint(run_dir)
    assert loaded_cfg.model.n_experts == 4
    assert len(model.layers[0].mlp.experts) == 4


@pytest.mark.slow
def test_ep_2_beside_dp_2_on_four_processes_resumes_ep_2_with_the_losses_of_one_process(
    tmp_path: Path, cache_dir: Path, ep_run: Path, one_process_run: Path
) -> None:
    # (dp 2, ep 2): each data-parallel group of two EP ranks draws half the global batch of
    # one process, and the gradients are averaged over dp as DDP would; steps 7-12 from
    # EP=2's checkpoint, whose experts two ranks now hold each.
    cfg = _moe({"num_processes": 4, "expert_parallel": 2})
    cfg = _config({"train": {"micro_batch_size": 2}}, cfg.to_dict())
    assert cfg.tokens_per_step() == _one().tokens_per_step()
    run_dir = tmp_path / "ep-dp"
    copy_checkpoint(ep_run, 6, run_dir)
    code, out = _run(cfg, run_dir, cache_dir)
    assert code == 0, out
    info = _statuses(run_dir)[0]["info"]
    assert info["mesh"] == {"dp": 2, "tp": 1, "ep": 2} and info["data_parallel"] == "ddp"
    assert _resumed_from(run_dir) == [6]
    assert_same_losses(_losses(run_dir), _losses(one_process_run), SECOND_HALF)


@pytest.mark.slow
def test_ep_2_beside_fsdp_2_trains_the_losses_of_one_process_and_its_checkpoint_resumes_on_one(
    tmp_path: Path, cache_dir: Path, ep_run: Path, one_process_run: Path
) -> None:
    # (dp 2, ep 2) under FSDP2: each expert sharded over dp, the rest over all four ranks;
    # steps 7-12 from EP=2's checkpoint, as the DDP case above.
    cfg = _moe({"num_processes": 4, "expert_parallel": 2, "strategy": "fsdp"})
    cfg = _config({"train": {"micro_batch_size": 2}}, cfg.to_dict())
    run_dir = tmp_path / "ep-fsdp"
    copy_checkpoint(ep_run, 6, run_dir)
    code, out = _run(cfg, run_dir, cache_dir)
    assert code == 0, out
    info = _statuses(run_dir)[0]["info"]
    assert info["mesh"] == {"dp": 2, "tp": 1, "ep": 2} and info["data_parallel"] == "fsdp"
    assert _resumed_from(run_dir) == [6]
    assert_same_losses(_losses(run_dir), _losses(one_process_run), SECOND_HALF)
    # Every rank wrote its shards; an expert's shards come from the two ranks at its EP coordinate.
    files = written_by_file(run_dir / "checkpoints" / "step_000012")
    assert set(files) == {f"__{r}_0.distcp" for r in range(4)}
    holders = {f for f, names in files.items() if "model.layers.1.mlp.experts.3.up_proj.weight" in names}
    assert holders == {"__1_0.distcp", "__3_0.distcp"}
    # Its checkpoint resumes in one process's layout (weights and AdamW state) as that of the
    # one-process run of the same steps. Relative to each tensor's norm: fp32 sums in another
    # order differ at 1e-6, which Adam's normalised steps and top-k routing grow to ~2e-3 in
    # the weights and ~2e-2 in the moments after six steps; a misplaced expert or a gradient
    # averaged over the wrong ranks (Adam's steps would hide the scale, not its moment) is ~1.
    fsdp_state, one_state = _one_process_state(run_dir), _one_process_state(one_process_run)
    for name, (weight, moment) in one_state.items():
        assert _relative_diff(fsdp_state[name][0], weight) < 1e-2, name
        assert _relative_diff(fsdp_state[name][1], moment) < 5e-2, name


def _relative_diff(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x - reference).norm() / reference.norm())


def _one_process_state(run_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The step-12 checkpoint loaded as a one-process resume does: per parameter, its weight
    and AdamW's first moment."""
    path = dict(list_checkpoints(run_dir))[12]
    model = Transformer(_one().model)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2]}, {"params": [p for p in params if p.dim() < 2]}]
    )
    load_state(path, model, optimizer)
    return {
        name: (p.detach().clone(), optimizer.state[p]["exp_avg"].clone())
        for name, p in model.named_parameters()
    }
