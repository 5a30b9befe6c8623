"""Samples during training: prompts continued from the current weights, logged as sample events."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from modelcore.config import ConfigError, resolve
from modelcore.events import EVENTS_FILE, EventWriter, read_events
from modelcore.launch import launch_command
from modelcore.model import Transformer
from modelcore.sampling import generate_samples, sample_due
from modelcore.tokenizer import ByteTokenizer


def _train_config(**train):
    return resolve("tiny-cpu", {"train": {"sample_every": 10, "sample_prompts": "def |import ", **train}})


def test_each_prompt_is_continued_the_same_way_on_every_rank_and_differently_each_step() -> None:
    cfg = _train_config(sample_max_tokens=12)
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    first = generate_samples(model, ByteTokenizer(), cfg.train, step=10)
    assert [p for p, _ in first] == ["def ", "import "]
    assert all(0 < len(text.encode()) <= 12 * 4 for _, text in first)
    assert generate_samples(model, ByteTokenizer(), cfg.train, step=10) == first  # what another rank gets
    assert generate_samples(model, ByteTokenizer(), cfg.train, step=20) != first
    assert model.training  # handed back as it was


def test_sample_steps_are_every_n_and_the_last() -> None:
    t = _train_config(max_steps=25).train
    assert [s for s in range(1, 26) if sample_due(s, t)] == [10, 20, 25]
    assert not any(sample_due(s, resolve("tiny-cpu").train) for s in range(1, 100))


def test_sampling_needs_a_prompt_and_at_most_eight() -> None:
    with pytest.raises(ConfigError) as err:
        _train_config(sample_prompts=" | ")
    assert "train.sample_prompts" in err.value.errors
    with pytest.raises(ConfigError) as err:
        _train_config(sample_prompts="|".join("abcdefghi"))
    assert "at most 8" in err.value.errors["train.sample_prompts"]


def test_sample_events_are_written_and_read_back_and_a_bad_one_is_a_bad_line(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as events:
        events.sample(10, [("def ", "main():\x00")])
    with open(tmp_path / EVENTS_FILE, "a") as f:
        f.write('{"seq": 2, "time": 1.0, "type": "sample", "step": 11, "samples": [{"prompt": 1}]}\n')
    read = read_events(tmp_path / EVENTS_FILE)
    assert [e["samples"] for e in read.events] == [[{"prompt": "def ", "text": "main():\ufffd"}]]
    assert "samples[0]" in read.bad_lines[0].reason


def test_two_process_run_logs_samples_at_its_sample_steps(tmp_path: Path) -> None:
    cfg = _train_config(max_steps=20, eval_every=0, checkpoint_every=0, sample_max_tokens=8)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(cfg.to_json())
    argv, env = launch_command(cfg, run_dir, gpus_available=0)
    env = {**os.environ, **env, "RUNWRIGHT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    samples = [e for e in read_events(run_dir / EVENTS_FILE).events if e["type"] == "sample"]
    assert [e["step"] for e in samples] == [10, 20]
    assert [row["prompt"] for row in samples[0]["samples"]] == ["def ", "import "]
