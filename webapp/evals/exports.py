"""A report as files: CSV and JSON of every score, and a self-contained HTML page.

The HTML export inlines Plotly.js (the basic bundle: its charts are bars and lines), the
stylesheet and the chart script, so it opens offline and can be mailed or archived.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone

from webapp.evals.comparison import PairResult, ReportData, scores_of
from webapp.evals.models import EvalJob, Report

STATIC_ROOTS = ("css/runwright.css", "evals/evals.css")
CHART_SCRIPTS = ("js/charts.js", "evals/report.js")  # the report's charts share the run pages' look


def _static(relative: str) -> str:
    for root in settings.STATICFILES_DIRS:
        path = Path(root) / relative
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(relative)


def report_rows(jobs: list[EvalJob], data: ReportData) -> list[dict[str, Any]]:
    """One row per model, task and metric (every metric, not only the table's)."""
    primary = {row.task: row for row in data.tasks}
    by_id = {m["id"]: i for i, m in enumerate(data.models)}
    rows = []
    for job in jobs:
        if job.id not in by_id:
            continue
        col = by_id[job.id]
        n_shot = (job.results or {}).get("n-shot") or {}
        n_samples = (job.results or {}).get("n-samples") or {}
        for task, metrics in scores_of(job).items():
            for metric, (value, stderr) in metrics.items():
                row = primary.get(task)
                rows.append(
                    {
                        "model": job.model_label,
                        "eval_job": job.id,
                        "run_id": job.run_id or "",
                        "step": job.checkpoint_step if job.checkpoint_step is not None else "",
                        "task": task,
                        "metric": metric,
                        "value": value,
                        "stderr": "" if stderr is None else stderr,
                        "n_shot": n_shot.get(task, ""),
                        "n_samples": (n_samples.get(task) or {}).get("effective", ""),
                        "best": bool(row and row.metric == metric and row.cells[col].best),
                    }
                )
    return rows


def report_csv(jobs: list[EvalJob], data: ReportData) -> str:
    out = io.StringIO()
    fields = [
        "model",
        "eval_job",
        "run_id",
        "step",
        "task",
        "metric",
        "value",
        "stderr",
        "n_shot",
        "n_samples",
        "best",
    ]
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for row in report_rows(jobs, data):
        writer.writerow(row)
    return out.getvalue()


def report_json(
    report: Report,
    jobs: list[EvalJob],
    data: ReportData,
    pair: list[PairResult] | None,
    pair_ids: tuple[int, int] | None,
) -> str:
    payload = {
        "report": {
            "id": report.id,
            "name": report.name,
            "project": report.project.name,
            "exported_at": timezone.now().isoformat(),
        },
        "models": data.models,
        "table": [
            {
                "task": row.task,
                "metric": row.metric,
                "higher_is_better": row.higher_is_better,
                "scores": [
                    {
                        "eval_job": m["id"],
                        "model": m["label"],
                        "value": c.value,
                        "stderr": c.stderr,
                        "best": c.best,
                    }
                    for m, c in zip(data.models, row.cells, strict=True)
                ],
            }
            for row in data.tasks
        ],
        "scores": report_rows(jobs, data),
        "score_vs_step": data.step_series,
        "significance": (
            {"a": pair_ids[0], "b": pair_ids[1], "tasks": [p.as_dict() for p in pair]}
            if pair and pair_ids
            else None
        ),
        "results": {str(j.id): j.results for j in jobs if j.results},
    }
    return json.dumps(payload, indent=2, default=str)


def report_html(context: dict[str, Any]) -> str:
    """The report page as one file: inline CSS, Plotly.js, chart script and data."""
    from webapp.runs.assets import plotly_js_path

    return render_to_string(
        "evals/report_export.html",
        {
            **context,
            "export": True,
            "inline_css": _inline("\n".join(_static(p) for p in STATIC_ROOTS), "style"),
            "inline_plotly": _inline(plotly_js_path("basic").read_text(encoding="utf-8"), "script"),
            "inline_script": _inline("\n".join(_static(p) for p in CHART_SCRIPTS), "script"),
        },
    )


def _inline(text: str, tag: str) -> str:
    """Text safe inside <script>/<style>: a closing tag in it would end the element early."""
    return text.replace(f"</{tag}", f"<\\/{tag}")
