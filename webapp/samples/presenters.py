"""Plain-data views of sampling and export jobs: what the run page polls and its stream sends."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from webapp.samples.models import SampleJob, SampleKind, SampleStatus


def job_state(job: SampleJob) -> dict[str, Any]:
    """What changes while a job runs (the stream compares these to decide what to send)."""
    done_export = job.kind == SampleKind.EXPORT and job.status == SampleStatus.COMPLETED
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "text": job.text,
        "error": job.error,
        "is_active": job.is_active,
        "archive_url": reverse("runs:sample_archive", args=[job.id]) if done_export else "",
    }


def job_row(job: SampleJob) -> dict[str, Any]:
    """A job of the run's history: its settings and its state."""
    return {
        **job_state(job),
        "step": job.checkpoint_step,
        "prompt": job.prompt,
        "temperature": job.temperature,
        "top_p": job.top_p,
        "max_tokens": job.max_tokens,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "created_by": job.created_by.get_username() if job.created_by_id else "",
    }
