"""Helpers shared by the evals tests: users, results in lm-eval's schema, a task folder."""

from __future__ import annotations

import json
from pathlib import Path


def results_payload(
    task_scores: dict[str, dict[str, float]], samples: dict[str, list] | None = None, n_shot: int = 0
) -> dict:
    """A results dict in lm-eval's schema, as our evaluator and lm-eval write it."""
    out = {
        "results": {
            task: {"alias": task, **{f"{k},none": v for k, v in metrics.items()}}
            for task, metrics in task_scores.items()
        },
        "n-shot": {task: n_shot for task in task_scores},
        "higher_is_better": {
            task: {
                k: not k.endswith("perplexity") and k != "bits_per_byte"
                for k in metrics
                if not k.endswith("_stderr")
            }
            for task, metrics in task_scores.items()
        },
        "versions": {task: 1.0 for task in task_scores},
        "config": {"model": "hf"},
    }
    if samples is not None:
        out["samples"] = samples
    return out


def mc_samples(correct: list[int], predictions: list[int] | None = None) -> list[dict]:
    return [
        {
            "doc_id": i,
            "prompt": f"Question {i}?",
            "choices": ["a", "b", "c"],
            "gold": 0,
            "prediction": (predictions[i] if predictions else (0 if c else 1)),
            "metrics": {"acc": float(c), "acc_norm": float(c)},
        }
        for i, c in enumerate(correct)
    ]


def write_results_file(job, payload: dict) -> None:
    job.job_dir.mkdir(parents=True, exist_ok=True)
    Path(job.results_file).write_text(json.dumps(payload))


TASK_YAML = """task: team_trivia
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/test.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{question}}\\nA:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
"""
DOCS = "\n".join(json.dumps({"question": f"q{i}", "choices": ["x", "y"], "label": i % 2}) for i in range(4))
