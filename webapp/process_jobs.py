"""The row writes of every process job that is not a run (an eval job, a sampling or export job).

Such a job is a row with a status table (``webapp.lifecycle.JobStateMachine``), a task sent
to a worker after commit, a worker that claims it, heartbeats it, stores what it has so far and finishes it, a cancel flag, the
sweep of silent workers and the re-send of lost task messages. ``ProcessJobRows`` writes
those once; each kind declares one (in its ``transitions.py``) with what differs: its model
and table, its live channel and published state, and what a claim resets.

Every status change is a move of the kind's table (a conditional UPDATE), so the web
cancelling and a worker finishing never overwrite each other and a second delivery of a
task finds nothing to claim. Heartbeats and the sweep use the database's clock (``Now()``).
Every change a page shows is published on the job's live channel after it commits.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.db.models.functions import Now

from webapp import enqueue, live, requeue
from webapp.lifecycle import QUEUED, RUNNING, JobStateMachine

log = logging.getLogger(__name__)


class ProcessJobRows:
    """The writes a worker and the web make to one kind of process job's rows."""

    def __init__(
        self,
        model: type[Model],
        states: JobStateMachine,
        *,
        noun: str,
        task: str,
        channel: Callable[[int], str],
        state: Callable[[Any], dict[str, Any]],
        claim_resets: Mapping[str, Any],
        related: tuple[str, ...] = (),
    ):
        self.model = model
        self.states = states
        self.noun = noun  # "eval job": log lines and errors
        self.task = task  # the worker's task that runs one (``webapp.enqueue``)
        self.channel = channel  # the job's live channel name
        self.state = state  # what the job's page follows (its presenter's ``job_state``)
        self.claim_resets = dict(claim_resets)  # what a new start clears (progress, text)
        self.related = related  # loaded with the claimed job (the runner reads them)

    def rows(self, job_id: int):
        return self.model.objects.filter(pk=job_id)

    def read_state(self, job_id: int) -> dict[str, Any] | None:
        """The job's state as its page follows it, from the database; None once it is deleted."""
        job = self.rows(job_id).first()
        return self.state(job) if job is not None else None

    def announce(self, job_id: int) -> None:
        """Publish the job's state once the current transaction commits (at once outside one)."""
        if live.enabled():
            transaction.on_commit(lambda: self._publish(job_id))

    def _publish(self, job_id: int) -> None:
        try:
            state = self.read_state(job_id)
            if state is not None:
                live.publish_to(self.channel(job_id), state)
        except Exception:  # a Redis outage only delays the page: its stream re-reads the database
            log.warning("%s %s: could not publish its state", self.noun, job_id, exc_info=True)

    def send(self, job_id: int) -> None:
        """Send the job's task now (beat re-sends lost ones); a broker failure marks the job failed."""
        enqueue.send(self.task, job_id, on_failure=self._not_sent)

    def send_on_commit(self, job_id: int) -> None:
        """Send the job's task once the current transaction commits, so the worker finds the row."""
        enqueue.send_on_commit(self.task, job_id, on_failure=self._not_sent)

    def _not_sent(self, job_id: int, reason: str) -> None:
        self.fail_queued(job_id, f"Could not queue the {self.noun}: {reason}")

    def claim(self, job_id: int, worker: str) -> Model | None:
        """Move a queued job to ``running`` for this worker; None when it was not queued."""
        claimed = self.states.move(
            self.rows(job_id).filter(cancel_requested=False),
            RUNNING,
            sources=[QUEUED],
            worker=worker[:200],
            started_at=Now(),
            heartbeat_at=Now(),
            error="",
            **self.claim_resets,
        )
        if not claimed:
            return None
        self.announce(job_id)
        return self.model.objects.select_related(*self.related).get(pk=job_id)

    def record_process(self, job_id: int, pid: int) -> None:
        self.rows(job_id).filter(status=RUNNING).update(pid=pid, heartbeat_at=Now())

    def heartbeat(self, job_id: int, **fields: Any) -> bool:
        """Store what the job has so far with a fresh heartbeat; returns whether a cancel was requested."""
        self.rows(job_id).filter(status=RUNNING).update(**fields, heartbeat_at=Now())
        self.announce(job_id)
        return self.rows(job_id).filter(cancel_requested=True).exists()

    def finish(self, job_id: int, status: str, *, error: str = "", **fields: Any) -> bool:
        """Write the final state of a running job; False when it was no longer running."""
        done = self.states.move(
            self.rows(job_id), status, sources=[RUNNING], error=error, finished_at=Now(), pid=None, **fields
        )
        if done:
            self.announce(job_id)
        return done == 1

    def fail_queued(self, job_id: int, error: str) -> bool:
        """A queued job that cannot run (its task could not be sent, it names what does not exist)."""
        failed = self.states.fail_queued(self.rows(job_id), error)
        if failed:
            self.announce(job_id)
        return failed

    def cancel_queued(self, job_id: int) -> bool:
        """Cancel a job no worker has claimed yet; False once one has (its runner stops it)."""
        cancelled = self.states.cancel_queued(self.rows(job_id))
        if cancelled:
            self.announce(job_id)
        return cancelled

    def request_cancel(self, job_id: int) -> bool:
        """Cancel a queued job at once, or ask a running one's runner to stop it; False once it has ended."""
        if self.cancel_queued(job_id):
            return True
        flagged = bool(self.rows(job_id).filter(status=RUNNING).update(cancel_requested=True))
        if flagged:
            self.announce(job_id)
        return flagged

    def fail_stale_jobs(self, older_than_seconds: float) -> list[int]:
        """Fail running jobs whose worker stopped heartbeating (killed or lost); the database's clock decides."""
        stale = self.states.fail_silent(self.model.objects.all(), older_than_seconds)
        for job_id in stale:
            self.announce(job_id)
        return stale

    def jobs_to_resend(self, after: dt.timedelta) -> list[int]:
        """Queued jobs whose task message may be lost (see ``webapp.requeue``); marks them re-sent."""
        return requeue.due_for_resend(self.model.objects.filter(status=QUEUED), after)
