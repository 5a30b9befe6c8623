"""Eval jobs, reports and evaluable checkpoints as one user may see them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.evals.models import EvalJob, Report
from webapp.projects.models import Project
from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import Checkpoint, Run

User = AbstractBaseUser | AnonymousUser


def eval_jobs_visible_to(user: User) -> QuerySet[EvalJob]:
    return EvalJob.objects.filter(project__in=projects_visible_to(user)).select_related(
        "project", "project__team", "run", "created_by"
    )


def eval_job_for(user: User, job_id: int) -> EvalJob:
    """The job if ``user`` may see it; another team's job raises Http404."""
    job = eval_jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise Http404("No such eval job.")
    return job


def eval_jobs_of_project(user: User, project: Project, limit: int = 300) -> list[EvalJob]:
    return list(eval_jobs_visible_to(user).filter(project=project).order_by("-created_at", "-id")[:limit])


def reportable_jobs(user: User, project: Project) -> list[EvalJob]:
    """The project's jobs that have results, i.e. what a report can compare."""
    return [job for job in eval_jobs_of_project(user, project) if job.results]


def eval_jobs_of_run(user: User, run: Run, limit: int = 100) -> list[EvalJob]:
    return list(eval_jobs_visible_to(user).filter(run=run).order_by("-checkpoint_step", "-id")[:limit])


def reports_visible_to(user: User) -> QuerySet[Report]:
    return Report.objects.filter(project__in=projects_visible_to(user)).select_related(
        "project", "project__team"
    )


def report_for(user: User, report_id: int) -> Report:
    report = reports_visible_to(user).filter(pk=report_id).first()
    if report is None:
        raise Http404("No such report.")
    return report


def reports_of_project(user: User, project: Project) -> list[Report]:
    return list(reports_visible_to(user).filter(project=project).order_by("-updated_at", "-id"))


def report_jobs(report: Report) -> list[EvalJob]:
    """The report's jobs in a stable order: runs' checkpoints by step, then the others by creation."""
    return list(report.jobs.select_related("run", "project").order_by("created_at", "id"))


def checkpoints_of_project(user: User, project: Project, limit: int = 500) -> list[Checkpoint]:
    """Checkpoints of the project's runs that the user may evaluate, newest runs first."""
    return list(
        Checkpoint.objects.filter(run__project__in=projects_visible_to(user), run__project=project)
        .select_related("run")
        .order_by("-run__created_at", "-run_id", "step")[:limit]
    )


def job_samples(job: EvalJob) -> dict[str, list[dict[str, Any]]]:
    """Per-sample records by task from the job's results file ({} when there are none)."""
    path = job.results_file
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return {}
    return _read_samples(str(path), mtime)


@lru_cache(maxsize=4)  # results files can be tens of MB
def _read_samples(path: str, mtime: int) -> dict[str, list[dict[str, Any]]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    samples = data.get("samples") if isinstance(data, dict) else None
    return {k: v for k, v in samples.items() if isinstance(v, list)} if isinstance(samples, dict) else {}
