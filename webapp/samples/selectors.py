"""Reads of sampling and export jobs, filtered to what the user may see (another team's: 404)."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.runs.models import Run
from webapp.runs.selectors import contained, runs_visible_to
from webapp.samples.models import SampleJob, SampleKind, SampleStatus

HISTORY_LIMIT = 20  # the newest jobs of each kind the run page lists


def sample_job_for(user: AbstractBaseUser | AnonymousUser, job_id: int) -> SampleJob:
    """The job, when its run is one the user may see; 404 otherwise."""
    job = SampleJob.objects.select_related("run").filter(pk=job_id, run__in=runs_visible_to(user)).first()
    if job is None:
        raise Http404("No such job.")
    return job


def jobs_of_run(run: Run, kind: str) -> QuerySet[SampleJob]:
    """The run's newest jobs of ``kind`` (the caller has already read the run through ``run_for``)."""
    return SampleJob.objects.filter(run=run, kind=kind).select_related("created_by")[:HISTORY_LIMIT]


def latest_exports(run: Run) -> dict[int, SampleJob]:
    """The newest export job of each checkpoint step of the run."""
    out: dict[int, SampleJob] = {}
    for job in SampleJob.objects.filter(run=run, kind=SampleKind.EXPORT).order_by("-created_at", "-id"):
        out.setdefault(job.checkpoint_step, job)
    return out


def export_archive_dir(job: SampleJob) -> Path | None:
    """The Hugging Face folder a completed export made, contained in its run's directory; or None."""
    if job.kind != SampleKind.EXPORT or job.status != SampleStatus.COMPLETED:
        return None
    path = contained(job.run, f"{job.relative_dir}/hf")
    return path if path is not None and path.is_dir() else None
