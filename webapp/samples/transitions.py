"""Every status change of a sampling or export job, and the worker side's other writes to it.

The shared writes (claim, heartbeat, finish, cancel, the sweep of silent workers, the re-send
of lost messages) are ``webapp.process_jobs.ProcessJobRows``'s, on ``SAMPLE_STATES``. What is
this kind's own: its channel ``sample:<id>``, a claim clears the text, and the text so far is
what each heartbeat stores (the run page's stream shows it as it grows).
"""

from __future__ import annotations

from webapp import enqueue
from webapp.process_jobs import ProcessJobRows
from webapp.samples.models import SAMPLE_STATES, SampleJob
from webapp.samples.presenters import job_state


def channel(job_id: int) -> str:
    return f"sample:{job_id}"


JOBS = ProcessJobRows(
    SampleJob,
    SAMPLE_STATES,
    noun="sample job",
    task=enqueue.RUN_SAMPLE_JOB,
    channel=channel,
    state=job_state,
    claim_resets={"text": ""},
    related=("run",),
)


def record_text(job_id: int, text: str) -> bool:
    """Store the text so far and refresh the heartbeat; returns whether a cancel was requested."""
    return JOBS.heartbeat(job_id, text=text)


def finish(job_id: int, status: str, *, error: str = "", text: str | None = None) -> bool:
    """Write the final state of a running job (with the whole text of a sample); False when it was not running."""
    return JOBS.finish(job_id, status, error=error, **({"text": text} if text is not None else {}))
