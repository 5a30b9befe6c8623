"""The results JSON, in lm-evaluation-harness's schema, and reading it back.

Imports no torch: the web app reads results (ours or an lm-eval run's from
elsewhere) through ``read_results``/``task_scores`` to build comparison reports.

Shape (the keys lm-eval writes; ``samples`` is ours, lm-eval writes them to
separate files)::

    {"results": {"rw_arith": {"name": "rw_arith", "alias": "rw_arith", "sample_len": 80, "acc,none": 0.31, "acc_stderr,none": 0.05, ...}},
     "group_subtasks": {},
     "configs": {"rw_arith": {...task config...}},
     "versions": {"rw_arith": 1.0},
     "n-shot": {"rw_arith": 0},
     "higher_is_better": {"rw_arith": {"acc": true, ...}},
     "n-samples": {"rw_arith": {"original": 80, "effective": 80}},
     "config": {"model": "hf", "model_args": "...", "batch_size": 8, ...},
     "date": 1764000000.0, "total_evaluation_time_seconds": "12.3",
     "samples": {"rw_arith": [{"doc_id": 0, "prompt": "...", "choices": [...], "loglikelihoods": [...],
                               "prediction": 2, "gold": 2, "metrics": {"acc": 1.0, ...}}, ...]}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILTER = "none"  # lm-eval's key suffix for unfiltered results: "acc,none"


@dataclass
class TaskResult:
    name: str
    config: dict[str, Any]
    version: Any
    num_fewshot: int
    n_original: int
    metrics: dict[str, tuple[float, float | str]]
    higher_is_better: dict[str, bool]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def result_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "alias": self.name, "sample_len": len(self.samples)}
        for name, (value, stderr) in self.metrics.items():
            entry[f"{name},{FILTER}"] = value
            entry[f"{name}_stderr,{FILTER}"] = stderr
        return entry


def build_results(
    tasks: list[TaskResult],
    config: dict[str, Any],
    started: float,
    finished: float,
    with_samples: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "results": {t.name: t.result_entry() for t in tasks},
        "group_subtasks": {},  # lm-eval lists groups only; these tasks stand alone
        "configs": {t.name: t.config for t in sorted(tasks, key=lambda t: t.name)},
        "versions": {t.name: t.version for t in sorted(tasks, key=lambda t: t.name)},
        "n-shot": {t.name: t.num_fewshot for t in sorted(tasks, key=lambda t: t.name)},
        "higher_is_better": {t.name: t.higher_is_better for t in sorted(tasks, key=lambda t: t.name)},
        "n-samples": {t.name: {"original": t.n_original, "effective": len(t.samples)} for t in tasks},
        "config": config,
        "date": started,
        "total_evaluation_time_seconds": str(finished - started),
    }
    if with_samples:
        out["samples"] = {t.name: t.samples for t in tasks}
    return out


def read_results(path: str | Path) -> dict[str, Any]:
    """A results file written by us or by lm-eval; raises ValueError naming what is missing."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable results JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ValueError(f"{path}: results: missing (not an lm-eval results file)")
    return data


def task_scores(results: dict[str, Any]) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{task: {metric: (value, stderr or None)}} from a results dict, filter suffix dropped."""
    out: dict[str, dict[str, tuple[float, float | None]]] = {}
    for task, entry in results["results"].items():
        scores: dict[str, tuple[float, float | None]] = {}
        for key, value in entry.items():
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            metric, filt = key.split(",", 1)
            stderr = entry.get(f"{metric}_stderr,{filt}")
            scores[metric if filt == FILTER else key] = (
                float(value),
                float(stderr) if isinstance(stderr, int | float) else None,
            )
        out[task] = scores
    return out


def read_lm_eval_samples(path: str | Path, output_type: str) -> list[dict[str, Any]]:
    """Per-sample records from lm-eval's ``samples_<task>_*.jsonl`` (``--log_samples``), in our shape.

    ``output_type`` is the task's (``results["configs"][task]["output_type"]``): lm-eval
    writes responses as strings, so a generation and a rolling loglikelihood look alike.

    Loglikelihood-type responses become ``loglikelihoods``; a generation becomes
    ``prediction``; per-sample metric values (``acc``, ``exact_match``, ...) go to
    ``metrics``, so paired comparisons work across our runs and imported ones.
    """
    records = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON: {exc}") from exc
        args = [list(a.values()) for a in (row.get("arguments") or {}).values()]
        resps = row.get("filtered_resps") or []
        record: dict[str, Any] = {
            "doc_id": row["doc_id"],
            "doc": row.get("doc"),
            "prompt": args[0][0] if args else "",
            "arguments": args,
            "gold": row.get("target"),
            "metrics": {m: row[m] for m in row.get("metrics", []) if m in row},
        }
        if output_type == "generate_until":
            record["prediction"] = resps[0] if resps else ""
        else:
            record["loglikelihoods"] = [float(r[0]) if isinstance(r, list) else float(r) for r in resps]
        records.append(record)
    return sorted(records, key=lambda r: r["doc_id"])
