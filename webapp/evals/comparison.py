"""The content of a comparison report, computed from eval jobs (no Django views, no torch).

``build_report`` gives the models x tasks table (score ± stderr, best per task),
the data for the per-task bar charts and the score-vs-step lines of a run's
checkpoints. ``compare_pair`` runs the paired tests between two models on the
samples they share; ``disagreements`` lists those samples where they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelcore.evaluation.metrics import HIGHER_IS_BETTER  # torch-free, like results
from webapp.evals import stats
from webapp.evals.models import EvalJob, EvalStatus, ModelSource

# The metric a report shows first for a task, when the task has several.
PRIMARY_ORDER = (
    "acc",
    "acc_norm",
    "exact_match",
    "bits_per_byte",
    "word_perplexity",
    "byte_perplexity",
    "perplexity",
)
BINARY_METRICS = {"acc", "acc_norm", "exact_match"}
BOOTSTRAP_ITERATIONS = 5000


def scores_of(job: EvalJob) -> dict[str, dict[str, tuple[float, float | None]]]:
    if not job.results:
        return {}
    from modelcore.evaluation.results import task_scores

    try:
        return task_scores(job.results)
    except (KeyError, TypeError, AttributeError):
        return {}


def higher_is_better(job: EvalJob, task: str, metric: str) -> bool:
    table = (job.results or {}).get("higher_is_better") or {}
    value = (table.get(task) or {}).get(metric)
    return bool(value) if isinstance(value, bool) else HIGHER_IS_BETTER.get(metric, True)


def primary_metric(metrics: list[str]) -> str:
    for name in PRIMARY_ORDER:
        if name in metrics:
            return name
    return metrics[0]


@dataclass
class Cell:
    value: float | None
    stderr: float | None
    best: bool = False

    @property
    def text(self) -> str:
        if self.value is None:
            return "–"
        out = f"{self.value:.4f}"
        if self.stderr is not None and math.isfinite(self.stderr):
            out += f" ± {self.stderr:.4f}"
        return out


@dataclass
class TaskRow:
    task: str
    metric: str
    higher_is_better: bool
    cells: list[Cell]
    all_metrics: list[str] = field(default_factory=list)


@dataclass
class ReportData:
    models: list[dict[str, Any]]
    tasks: list[TaskRow]
    step_series: list[dict[str, Any]]
    pending: list[dict[str, Any]]  # jobs without results yet (queued, running, failed)

    def chart_payload(self) -> dict[str, Any]:
        """What report.js draws: one bar chart per task, one line chart per run and task."""
        labels = [m["label"] for m in self.models]
        return {
            "bars": [
                {
                    "task": row.task,
                    "metric": row.metric,
                    "higher_is_better": row.higher_is_better,
                    "labels": [labels[i] for i, c in enumerate(row.cells) if c.value is not None],
                    "values": [c.value for c in row.cells if c.value is not None],
                    "stderrs": [c.stderr for c in row.cells if c.value is not None],
                    "best": [c.best for c in row.cells if c.value is not None],
                }
                for row in self.tasks
            ],
            "steps": self.step_series,
        }


def model_entry(job: EvalJob) -> dict[str, Any]:
    n_shot = (job.results or {}).get("n-shot") or {}
    shots = sorted({v for v in n_shot.values() if isinstance(v, int)})
    return {
        "id": job.id,
        "label": job.model_label,
        "source": job.source,
        "run_id": job.run_id,
        "step": job.checkpoint_step,
        "status": job.status,
        "n_shot": shots[0] if len(shots) == 1 else shots,
        "limit": job.limit,
        "has_samples": job.has_samples,
    }


def build_report(jobs: list[EvalJob]) -> ReportData:
    done = [j for j in jobs if j.status == EvalStatus.COMPLETED and j.results]
    pending = [model_entry(j) for j in jobs if j not in done]
    scores = {j.id: scores_of(j) for j in done}
    task_names: list[str] = []
    for j in done:
        for task in scores[j.id]:
            if task not in task_names:
                task_names.append(task)
    rows = []
    for task in task_names:
        metrics: list[str] = []
        for j in done:
            for m in scores[j.id].get(task, {}):
                if m not in metrics and not m.endswith("_stderr"):
                    metrics.append(m)
        if not metrics:
            continue
        metric = primary_metric(metrics)
        owner = next(j for j in done if metric in scores[j.id].get(task, {}))
        hib = higher_is_better(owner, task, metric)
        cells = []
        for j in done:
            value, stderr = scores[j.id].get(task, {}).get(metric, (None, None))
            cells.append(Cell(value, stderr))
        for i in stats.best_indices([c.value for c in cells], hib):
            if sum(c.value is not None for c in cells) > 1:
                cells[i].best = True
        rows.append(TaskRow(task, metric, hib, cells, metrics))
    return ReportData([model_entry(j) for j in done], rows, _step_series(done, scores, rows), pending)


def _step_series(done: list[EvalJob], scores: dict, rows: list[TaskRow]) -> list[dict[str, Any]]:
    """Score vs training step for every run with two or more evaluated checkpoints."""
    by_run: dict[int, dict[int, EvalJob]] = {}
    for j in done:
        if j.source == ModelSource.CHECKPOINT and j.run_id is not None and j.checkpoint_step is not None:
            by_run.setdefault(j.run_id, {})[j.checkpoint_step] = j  # the later job for a step wins
    series = []
    for run_id, jobs_by_step in by_run.items():
        if len(jobs_by_step) < 2:
            continue
        steps = sorted(jobs_by_step)
        run_name = jobs_by_step[steps[0]].run.name
        for row in rows:
            points = [
                (s, *scores[jobs_by_step[s].id].get(row.task, {}).get(row.metric, (None, None)))
                for s in steps
            ]
            points = [p for p in points if p[1] is not None]
            if len(points) < 2:
                continue
            series.append(
                {
                    "run_id": run_id,
                    "run": run_name,
                    "task": row.task,
                    "metric": row.metric,
                    "steps": [p[0] for p in points],
                    "values": [p[1] for p in points],
                    "stderrs": [p[2] for p in points],
                }
            )
    return series


# --- paired comparison -----------------------------------------------------------


@dataclass
class PairResult:
    task: str
    metric: str
    n: int
    score_a: float | None = None
    score_b: float | None = None
    bootstrap: stats.BootstrapResult | None = None
    mcnemar: stats.McNemarResult | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "metric": self.metric,
            "n": self.n,
            "score_a": self.score_a,
            "score_b": self.score_b,
            "note": self.note,
        }
        if self.bootstrap:
            out["paired_bootstrap"] = self.bootstrap.__dict__
        if self.mcnemar:
            out["mcnemar"] = self.mcnemar.__dict__
        return out


def _aligned(samples_a: list[dict], samples_b: list[dict]) -> list[tuple[dict, dict]]:
    by_doc = {s.get("doc_id"): s for s in samples_b}
    return [(s, by_doc[s.get("doc_id")]) for s in samples_a if s.get("doc_id") in by_doc]


def _statistic(metric: str, values: list[Any]) -> stats.Statistic | None:
    """How a corpus-level score is computed from per-sample values (as lm-eval aggregates them)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) or all(
        isinstance(v, bool) for v in values
    ):
        nums = [float(v) for v in values]
        if metric == "perplexity":  # per-sample loglikelihoods; score exp(-mean)
            return stats.ratio_statistic(nums, [1.0] * len(nums), lambda r: _exp(-r))
        return stats.mean_statistic(nums)
    if all(isinstance(v, list) and len(v) == 2 for v in values):
        ll = [float(v[0]) for v in values]
        den = [float(v[1]) for v in values]
        if metric == "bits_per_byte":
            return stats.ratio_statistic(ll, den, lambda r: -r / math.log(2))
        return stats.ratio_statistic(ll, den, lambda r: _exp(-r))
    return None


def _exp(x):
    import numpy as np

    return np.exp(x)


def compare_pair(
    job_a: EvalJob,
    job_b: EvalJob,
    samples_a: dict[str, list],
    samples_b: dict[str, list],
    rows: list[TaskRow],
    iterations: int = BOOTSTRAP_ITERATIONS,
) -> list[PairResult]:
    """Paired bootstrap (every metric) and McNemar (0/1 metrics) per task, on the samples both have."""
    out = []
    for row in rows:
        a, b = samples_a.get(row.task), samples_b.get(row.task)
        if not a or not b:
            out.append(
                PairResult(row.task, row.metric, 0, note="per-sample records are missing for one model")
            )
            continue
        pairs = [
            (sa["metrics"][row.metric], sb["metrics"][row.metric])
            for sa, sb in _aligned(a, b)
            if row.metric in (sa.get("metrics") or {}) and row.metric in (sb.get("metrics") or {})
        ]
        if not pairs:
            out.append(PairResult(row.task, row.metric, 0, note="no shared samples with this metric"))
            continue
        va, vb = [p[0] for p in pairs], [p[1] for p in pairs]
        stat_a, stat_b = _statistic(row.metric, va), _statistic(row.metric, vb)
        if stat_a is None or stat_b is None:
            out.append(
                PairResult(row.task, row.metric, len(pairs), note="per-sample values of an unknown form")
            )
            continue
        import numpy as np

        everything = np.arange(len(pairs))
        result = PairResult(
            row.task,
            row.metric,
            len(pairs),
            float(stat_a(everything)),
            float(stat_b(everything)),
            bootstrap=stats.paired_bootstrap(stat_a, stat_b, len(pairs), iterations=iterations),
        )
        if row.metric in BINARY_METRICS:
            result.mcnemar = stats.mcnemar([float(v) for v in va], [float(v) for v in vb])
        shots_a = ((job_a.results or {}).get("n-shot") or {}).get(row.task)
        shots_b = ((job_b.results or {}).get("n-shot") or {}).get(row.task)
        if shots_a != shots_b:
            result.note = f"different few-shot settings ({shots_a} vs {shots_b}): prompts differ"
        elif len(pairs) < min(len(a), len(b)):
            result.note = f"only {len(pairs)} of the samples are shared"
        out.append(result)
    return out


def _correct(record: dict, metric: str) -> float | None:
    value = (record.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def disagreements(
    samples_a: dict[str, list], samples_b: dict[str, list], task: str, metric: str, limit: int = 200
) -> tuple[int, int, list[dict[str, Any]]]:
    """(shared samples, samples where A and B differ, the first ``limit`` of those as rows)."""
    pairs = _aligned(samples_a.get(task) or [], samples_b.get(task) or [])
    rows = []
    differing = 0
    for sa, sb in pairs:
        ca, cb = _correct(sa, metric), _correct(sb, metric)
        if ca is not None and cb is not None:
            differs = ca != cb
        else:
            differs = sa.get("prediction") != sb.get("prediction")
        if not differs:
            continue
        differing += 1
        if len(rows) < limit:
            choices = sa.get("choices") or sb.get("choices") or []
            rows.append(
                {
                    "doc_id": sa.get("doc_id"),
                    "prompt": _text(sa.get("prompt") or sb.get("prompt")),
                    "gold": _answer(sa.get("gold"), choices),
                    "a": _answer(sa.get("prediction"), choices),
                    "b": _answer(sb.get("prediction"), choices),
                    "a_score": ca,
                    "b_score": cb,
                }
            )
    return len(pairs), differing, rows


def _text(value: Any, limit: int = 1200) -> str:
    if isinstance(value, list):
        value = "\n---\n".join(str(v) for v in value)
    text = "" if value is None else str(value)
    return text if len(text) <= limit else "…" + text[-limit:]  # the end of a few-shot prompt is the question


def _answer(value: Any, choices: list[str]) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        return f"{value}: {choices[value]}"
    if isinstance(value, list):
        return ", ".join(_answer(v, choices) for v in value)
    return "" if value is None else str(value)[:500]
