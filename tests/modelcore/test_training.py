"""Real multi-process training through launch_command: learning, cancel, crash, resume, DDP.

Each test starts `accelerate launch` (CPU processes on gloo) or a single trainer
process exactly as the worker does, in its own session, and reads events.jsonl.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from modelcore.checkpoint import list_checkpoints, load_checkpoint
from modelcore.config import RunConfig, resolve
from modelcore.events import EVENTS_FILE, read_events
from modelcore.launch import launch_command

pytestmark = pytest.mark.slow

SMALL = {"data": {"max_corpus_mb": 0.3}, "train": {"log_every": 1, "eval_every": 0}}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


def _config(overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> RunConfig:
    cfg = resolve("tiny-cpu", base)
    return RunConfig.from_dict(overrides or {}, base=cfg)


def _start(
    cfg: RunConfig, run_dir: Path, cache_dir: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    argv, env = launch_command(cfg, run_dir, gpus_available=0)
    env = {**os.environ, **env, "RUNWRIGHT_CACHE_DIR": str(cache_dir), **(extra_env or {})}
    return subprocess.Popen(
        argv, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _run(
    cfg: RunConfig,
    run_dir: Path,
    cache_dir: Path,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, str]:
    proc = _start(cfg, run_dir, cache_dir, extra_env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return read_events(run_dir / EVENTS_FILE).events


def _losses(run_dir: Path) -> dict[int, float]:
    """train/loss by step; a step logged again after a resume replaces the earlier point."""
    return {
        e["step"]: e["values"]["train/loss"]
        for e in _events(run_dir)
        if e["type"] == "metric" and "train/loss" in e["values"]
    }


def _statuses(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in _events(run_dir) if e["type"] == "status"]


def test_tiny_cpu_preset_trains_on_two_processes(tmp_path: Path, cache_dir: Path) -> None:
    cfg = resolve("tiny-cpu")
    started = time.monotonic()
    code, out = _run(cfg, tmp_path / "run", cache_dir)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert elapsed < 60, f"tiny-cpu took {elapsed:.0f}s"
    statuses = _statuses(tmp_path / "run")
    assert [s["status"] for s in statuses] == ["running", "completed"]
    info = statuses[0]["info"]
    assert info["config"] == cfg.to_dict() and info["hardware"]["num_processes"] == 2
    assert info["num_params"] == cfg.model.num_params() and "torch" in info["versions"]
    metrics = [e for e in _events(tmp_path / "run") if e["type"] == "metric"]
    train = [e for e in metrics if "train/loss" in e["values"]]
    assert [e["step"] for e in train] == list(range(2, 61, 2))
    assert {"train/lr", "train/grad_norm", "perf/tokens_per_s", "perf/step_time_s", "perf/mem_gb"} <= set(
        train[0]["values"]
    )
    assert "perf/mfu" not in train[0]["values"]  # no known peak for a CPU
    # Every rank's figures, gathered to rank 0 (the first logging step; the next wait 30 s).
    system = [e["values"] for e in _events(tmp_path / "run") if e["type"] == "system"]
    assert system and {f"system/{m}/rank{r}" for m in ("cpu_util", "ram_gb") for r in (0, 1)} <= set(
        system[0]
    )
    assert 0 <= system[0]["system/host_cpu_util/rank1"] <= 1
    first = sum(e["values"]["train/loss"] for e in train[:3]) / 3
    last = sum(e["values"]["train/loss"] for e in train[-3:]) / 3
    assert last < first - 1.0, (first, last)
    val = [e["values"]["val/loss"] for e in metrics if "val/loss" in e["values"]]
    assert len(val) == 3 and val[-1] < val[0]
    assert [e["step"] for e in _events(tmp_path / "run") if e["type"] == "checkpoint"] == [60]
    model, loaded_cfg, tok = load_checkpoint(tmp_path / "run")
    assert loaded_cfg == cfg and tok.vocab_size == 260
    assert model(__import__("torch").tensor([tok.encode("import os")])).shape == (1, 9, 260)


def test_sigterm_to_the_process_group_cancels_with_a_checkpoint(tmp_path: Path, cache_dir: Path) -> None:
    import psutil

    cfg = _config({"train": {"max_steps": 100_000}}, SMALL)
    run_dir = tmp_path / "run"
    proc = _start(cfg, run_dir, cache_dir)
    deadline = time.monotonic() + 60
    while not any(e["type"] == "metric" for e in _events(run_dir)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) == 2  # the two ranks under the launcher
    os.killpg(proc.pid, signal.SIGTERM)
    sent = time.monotonic()
    proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert took < 10, f"took {took:.1f}s to stop"
    statuses = _statuses(run_dir)
    assert statuses[-1]["status"] == "cancelled"
    ((step, path),) = list_checkpoints(run_dir)
    assert path.name == f"step_{step:06d}" and step >= 1
    assert json.loads((path / "sampler.json").read_text())["step"] == step
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_a_crash_is_reported_as_failed_with_the_traceback(tmp_path: Path, cache_dir: Path) -> None:
    cfg = _config({"train": {"max_steps": 20}}, SMALL)
    code, out = _run(cfg, tmp_path / "run", cache_dir, {"RUNWRIGHT_FAIL_AT_STEP": "3"})
    assert code != 0
    final = _statuses(tmp_path / "run")[-1]
    assert final["status"] == "failed"
    assert "Traceback" in final["error"] and "injected failure at step 3" in final["error"]


def test_single_process_run_with_a_bpe_tokenizer_trained_on_the_corpus(
    tmp_path: Path, cache_dir: Path
) -> None:
    cfg = _config(
        {
            "model": {"vocab_size": 512},
            "data": {"tokenizer": "bpe", "bpe_vocab_size": 512},
            "parallel": {"num_processes": 1},
            "train": {"max_steps": 4},
            "optim": {"warmup_steps": 1},
        },
        SMALL,
    )
    code, out = _run(cfg, tmp_path / "run", cache_dir)
    assert code == 0, out
    assert _statuses(tmp_path / "run")[-1]["status"] == "completed"
    model, _, tok = load_checkpoint(tmp_path / "run")
    assert tok.vocab_size == 512 and tok.decode(tok.encode("import sys\n")) == "import sys\n"


def test_moe_run_logs_router_losses_and_expert_utilisation(tmp_path: Path, cache_dir: Path) -> None:
    overrides = {**SMALL, "train": {**SMALL["train"], "max_steps": 6}, "optim": {"warmup_steps": 2}}
    cfg = RunConfig.from_dict(overrides, base=resolve("tiny-moe-cpu"))
    code, out = _run(cfg, tmp_path / "run", cache_dir)
    assert code == 0, out
    values = [e["values"] for e in _events(tmp_path / "run") if e["type"] == "metric"][-1]
    assert values["moe/aux_loss"] >= 1.0 - 1e-4 and values["moe/z_loss"] > 0
    for layer in range(cfg.model.n_layers):
        shares = [values[f"moe/expert_util/layer{layer}/expert{e}"] for e in range(cfg.model.n_experts)]
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)


def test_a_hung_rank_fails_the_run_after_the_rank_timeout(tmp_path: Path, cache_dir: Path) -> None:
    cfg = _config({"train": {"max_steps": 20, "rank_timeout_s": 10}}, SMALL)
    started = time.monotonic()
    code, out = _run(cfg, tmp_path / "run", cache_dir, {"RUNWRIGHT_HANG_AT_STEP": "3"}, timeout=90)
    assert code != 0
    assert time.monotonic() - started < 60
    final = _statuses(tmp_path / "run")[-1]
    assert final["status"] == "failed" and "train.rank_timeout_s (10 s)" in final["error"], final["error"]


def test_an_invalid_config_json_is_reported_as_failed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"model": {"n_heads": 5}}')
    cfg = _config({"parallel": {"num_processes": 1}})
    argv, env = launch_command(cfg, run_dir, gpus_available=0)
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    final = _statuses(run_dir)[-1]
    assert final["status"] == "failed"
    assert "ConfigError" in final["error"] and "model.n_heads: must divide model.d_model" in final["error"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_resume_continues_exactly(tmp_path: Path, cache_dir: Path, strategy: str) -> None:
    cfg = _config({"train": {"max_steps": 16}, "parallel": {"strategy": strategy}}, SMALL)
    code, out = _run(cfg, tmp_path / "straight", cache_dir)
    assert code == 0, out
    code, out = _run(cfg, tmp_path / "resumed", cache_dir, {"RUNWRIGHT_STOP_AT_STEP": "8"})
    assert code in (0, 1), out  # the launcher itself may exit 1 after its ranks were cancelled
    assert _statuses(tmp_path / "resumed")[-1]["status"] == "cancelled"
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [8]
    torn = tmp_path / "resumed" / "checkpoints" / "step_000012.tmp"  # as a kill mid-save leaves
    torn.mkdir()
    code, out = _run(cfg, tmp_path / "resumed", cache_dir)
    assert code == 0, out
    assert not torn.exists()
    assert [s["status"] for s in _statuses(tmp_path / "resumed")] == [
        "running",
        "cancelled",
        "running",
        "completed",
    ]
    straight, resumed = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(straight) == sorted(resumed) == list(range(1, 17))
    assert _statuses(tmp_path / "resumed")[-2]["info"]["data_parallel"] == strategy
    for step in straight:
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process_with_the_same_global_batch(
    tmp_path: Path, cache_dir: Path, strategy: str
) -> None:
    two = _config(
        {
            "train": {"max_steps": 10, "micro_batch_size": 4},
            "parallel": {"num_processes": 2, "strategy": strategy},
        },
        SMALL,
    )
    one = _config(
        {"train": {"max_steps": 10, "micro_batch_size": 8}, "parallel": {"num_processes": 1}}, SMALL
    )
    for cfg, name in ((two, "two"), (one, "one")):
        code, out = _run(cfg, tmp_path / name, cache_dir)
        assert code == 0, out
    a, b = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4), step
