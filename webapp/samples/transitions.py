"""Every status change of a sampling or export job, and the worker side's other writes to it.

Moves of ``SAMPLE_STATES`` (conditional UPDATEs), so the web cancelling and a worker
finishing never overwrite each other and a second delivery of a task finds nothing to
claim. Every change the run page shows (the text as it grows, the end) is published on the
job's live channel after it commits; the page's stream forwards it (``webapp.samples.views``).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.db.models.functions import Now

from webapp import live, requeue
from webapp.samples.models import SAMPLE_STATES, SampleJob, SampleStatus
from webapp.samples.presenters import job_state

log = logging.getLogger(__name__)


def channel(job_id: int) -> str:
    return f"sample:{job_id}"


def announce(job_id: int) -> None:
    """Publish the job's state once the current transaction commits (at once outside one)."""
    if live.enabled():
        transaction.on_commit(lambda: _publish(job_id))


def _publish(job_id: int) -> None:
    try:
        job = SampleJob.objects.filter(pk=job_id).first()
        if job is not None:
            live.publish_to(channel(job_id), job_state(job))
    except Exception:  # a Redis outage only delays the page: its stream re-reads the database
        log.warning("sample job %s: could not publish its state", job_id, exc_info=True)


def claim(job_id: int, worker: str) -> SampleJob | None:
    """Move a queued job to ``running`` for this worker; None when it was not queued."""
    claimed = SAMPLE_STATES.move(
        SampleJob.objects.filter(pk=job_id, cancel_requested=False),
        SampleStatus.RUNNING,
        sources=[SampleStatus.QUEUED],
        worker=worker[:200],
        started_at=Now(),
        heartbeat_at=Now(),
        text="",
        error="",
    )
    if not claimed:
        return None
    announce(job_id)
    return SampleJob.objects.select_related("run").get(pk=job_id)


def record_process(job_id: int, pid: int) -> None:
    SampleJob.objects.filter(pk=job_id, status=SampleStatus.RUNNING).update(pid=pid, heartbeat_at=Now())


def record_text(job_id: int, text: str) -> bool:
    """Store the text so far and refresh the heartbeat; returns whether a cancel was requested."""
    SampleJob.objects.filter(pk=job_id, status=SampleStatus.RUNNING).update(text=text, heartbeat_at=Now())
    announce(job_id)
    return SampleJob.objects.filter(pk=job_id, cancel_requested=True).exists()


def finish(job_id: int, status: str, *, error: str = "", text: str | None = None) -> bool:
    """Write the final state of a running job; False when it was no longer running."""
    fields: dict = {"error": error, "finished_at": Now(), "pid": None}
    if text is not None:
        fields["text"] = text
    done = SAMPLE_STATES.move(
        SampleJob.objects.filter(pk=job_id), status, sources=[SampleStatus.RUNNING], **fields
    )
    if done:
        announce(job_id)
    return done == 1


def fail_queued(job_id: int, error: str) -> bool:
    """A queued job that cannot run (its task could not be sent)."""
    failed = SAMPLE_STATES.fail_queued(SampleJob.objects.filter(pk=job_id), error)
    if failed:
        announce(job_id)
    return failed


def request_cancel(job_id: int) -> bool:
    """Cancel a queued job at once, or ask a running one's runner to stop it; False once it has ended."""
    if SAMPLE_STATES.cancel_queued(SampleJob.objects.filter(pk=job_id)):
        announce(job_id)
        return True
    return bool(
        SampleJob.objects.filter(pk=job_id, status=SampleStatus.RUNNING).update(cancel_requested=True)
    )


def fail_stale_jobs(older_than_seconds: float) -> list[int]:
    """Fail running jobs whose worker stopped heartbeating (killed or lost); the database's clock decides."""
    stale = SAMPLE_STATES.fail_silent(SampleJob.objects.all(), older_than_seconds)
    for job_id in stale:
        announce(job_id)
    return stale


def jobs_to_resend(after: dt.timedelta) -> list[int]:
    """Queued jobs whose task message may be lost (see ``webapp.requeue``); marks them re-sent."""
    return requeue.due_for_resend(SampleJob.objects.filter(status=SampleStatus.QUEUED), after)
