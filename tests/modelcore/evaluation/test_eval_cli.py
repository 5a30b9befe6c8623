"""``python -m modelcore.evaluate``: built-in tasks, both model kinds, progress lines, clear errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from evalhelpers import make_runwright_run

from modelcore.evaluate import main


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelcore.evaluate", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_on_a_hugging_face_model_writes_lm_eval_schema_and_progress(tiny_hf_dir, tmp_path):
    out = tmp_path / "results.json"
    proc = _run(
        ["--model", str(tiny_hf_dir), "--tasks", "rw_arith,rw_facts", "--limit", "12", "--output", str(out)]
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress" and e["task"] == "rw_arith"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 48
    assert events[-1] == {"event": "done", "tasks": ["rw_arith", "rw_facts"]}
    data = json.loads(out.read_text())
    for key in (
        "results",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "n-samples",
        "config",
        "samples",
    ):
        assert key in data
    entry = data["results"]["rw_arith"]
    assert 0.0 <= entry["acc,none"] <= 1.0 and entry["acc_stderr,none"] > 0
    assert data["n-samples"]["rw_arith"] == {"original": 80, "effective": 12}
    sample = data["samples"]["rw_facts"][0]
    assert set(sample) >= {"prompt", "choices", "loglikelihoods", "prediction", "gold", "metrics"}
    assert len(sample["loglikelihoods"]) == len(sample["choices"]) == 4
    assert sample["metrics"]["acc"] == float(sample["prediction"] == sample["gold"])


def test_runwright_run_directory_on_multiple_choice_generation_and_heldout_perplexity(tmp_path, capsys):
    run = make_runwright_run(tmp_path / "run", step=7)
    out = tmp_path / "r.json"
    code = main(
        ["--model", str(run), "--tasks", "rw_facts,rw_arith_gen,rw_heldout_ppl", "--limit", "4",
         "--num-fewshot", "1", "--output", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert data["config"]["model"] == "runwright"
    assert data["n-shot"]["rw_facts"] == 1
    assert data["samples"]["rw_facts"][0]["prompt"].count("\n\n") == 1
    ppl = data["results"]["rw_heldout_ppl"]
    assert ppl["bits_per_byte,none"] > 0 and ppl["bits_per_byte_stderr,none"] == "N/A"
    assert ppl["byte_perplexity,none"] == pytest.approx(2 ** ppl["bits_per_byte,none"])
    assert isinstance(data["samples"]["rw_arith_gen"][0]["prediction"], str)


def test_bad_task_yaml_exits_2_naming_the_key(tiny_hf_dir, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("task: bad\ndataset_path: json\noutput_type: ranking\n")
    code = main(["--model", str(tiny_hf_dir), "--tasks", "bad", "--tasks-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "output_type:" in err and "bad.yaml" in err
    assert main(["--model", str(tmp_path), "--tasks", "rw_arith"]) == 2
    assert "--model:" in capsys.readouterr().err


def test_list_tasks(capsys):
    assert main(["--list-tasks"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert {"rw_arith", "rw_facts", "rw_heldout_ppl"} <= set(names)


def test_user_task_folder_with_relative_data_runs(tiny_hf_dir, tmp_path):
    folder = tmp_path / "mytasks"
    folder.mkdir()
    (folder / "d.jsonl").write_text(json.dumps({"text": "Hello world. " * 5}) + "\n")
    (folder / "mine.yaml").write_text(
        "task: mine\ndataset_path: json\ndataset_kwargs: {data_files: {test: d.jsonl}}\ntest_split: test\n"
        "output_type: loglikelihood_rolling\ndoc_to_target: text\n"
    )
    out = tmp_path / "o.json"
    assert (
        main(
            [
                "--model",
                str(tiny_hf_dir),
                "--tasks",
                "mine",
                "--tasks-dir",
                str(folder),
                "--output",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert Path(out).exists() and json.loads(out.read_text())["results"]["mine"]["word_perplexity,none"] > 1


def test_run_heldout_perplexity_agrees_with_the_trainers_validation_loss(tmp_path):
    """A real (tiny, 30-step) training run: our held-out byte perplexity is its validation loss."""
    run = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "modelcore.train", "--run-dir", str(run), "--preset", "tiny-cpu",
         "--set", "parallel.num_processes=1", "--set", "train.max_steps=30"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    val_loss = [
        e["values"]["val/loss"] for e in events if e["type"] == "metric" and "val/loss" in e["values"]
    ][-1]
    out = tmp_path / "r.json"
    assert main(["--model", str(run), "--tasks", "rw_run_heldout_ppl", "--output", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())["results"]["rw_run_heldout_ppl"]
    # Byte tokenizer: nats per token are nats per byte. Contexts differ (training windows
    # vs rolling windows), so close, not equal.
    assert math.log(result["byte_perplexity,none"]) == pytest.approx(val_loss, abs=0.15)


def test_run_heldout_task_needs_a_runwright_model(tiny_hf_dir, capsys):
    assert main(["--model", str(tiny_hf_dir), "--tasks", "rw_run_heldout_ppl", "--quiet"]) == 2
    assert "dataset_kwargs.corpus: 'run'" in capsys.readouterr().err
