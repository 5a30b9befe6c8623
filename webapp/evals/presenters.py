"""Plain-data views of eval jobs, shared by the job page's polling and the API."""

from __future__ import annotations

from typing import Any

from webapp.evals import comparison
from webapp.evals.models import EvalJob


def job_state(job: EvalJob) -> dict[str, Any]:
    """What changes while a job runs: what the job page polls for its progress bar."""
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "current_task": job.current_task,
        "error": job.error,
        "is_active": job.is_active,
        "cancel_requested": job.cancel_requested,
    }


def job_detail(job: EvalJob) -> dict[str, Any]:
    """Everything the API says about one job: the model, the options, the state and the scores."""
    scores = comparison.scores_of(job)
    return {
        **job_state(job),
        "project": job.project_id,
        "model": {
            "source": job.source,
            "run": job.run_id,
            "checkpoint_step": job.checkpoint_step,
            "hf_path": job.hf_path,
            "label": job.label,
        },
        "tasks": job.tasks,
        "num_fewshot": job.num_fewshot,
        "limit": job.limit,
        "periodic": job.periodic,
        # {task: {metric: {"value", "stderr"}}}, from the stored lm-eval results.
        "scores": {
            task: {metric: {"value": v, "stderr": se} for metric, (v, se) in metrics.items()}
            for task, metrics in scores.items()
        },
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
