"""Every status change of a run, and the worker side's other writes: progress, logs, checkpoints.

The web and the workers change a run concurrently (the web sets
``cancel_requested``, a supervisor moves the status, the sweep marks runs
lost). Each status change here is one move of ``RUN_STATES`` (the table of
allowed changes, next to the model): a conditional UPDATE (``WHERE status IN
(...) AND attempt = ...``), never a read-modify-write, so two writers cannot
overwrite each other: the one that loses sees 0 rows and knows it lost.

``attempt`` identifies one launch of a run: a supervisor only writes while the
run is still its own attempt and still active.

Times that other hosts compare (heartbeats, the sweep's cutoff, start and end)
come from the database's clock (``Now()`` in the UPDATE), never the writer's: a
worker whose clock runs a minute behind must not look dead to the sweep.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Manager, Model, Q, Value
from django.db.models.functions import Coalesce, Now
from django.dispatch import Signal

from webapp import live, requeue
from webapp.alerts.services import check_status
from webapp.runs.models import (
    RESUMABLE_STATUSES,
    RUN_STATES,
    SUPERVISED_STATUSES,
    AttemptKind,
    Checkpoint,
    Run,
    RunAttempt,
    RunLog,
    RunSample,
    RunSource,
    RunStatus,
)

# Sent after commit when a run logged progress or reached a final status (``run_id``): the
# sweeps app listens (it launches a sweep's next runs and halves it) without runs importing it.
run_changed = Signal()


def tell_run_changed(run_id: int, **facts: Any) -> None:
    """Send ``run_changed`` once the caller's transaction commits (at once outside one).

    ``facts`` go with it: what the sender knows of the run already (``sweep_id``), so that a
    receiver need not read it.
    """
    transaction.on_commit(lambda: run_changed.send_robust(sender=Run, run_id=run_id, **facts))


FINAL_FROM_SUPERVISOR = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.LOST)


def queued_config(run_id: int) -> dict | None:
    """The stored config of a queued run (what a worker checks before claiming it); None if not queued."""
    return Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).values_list("config", flat=True).first()


def claim_for_launch(run_id: int, worker: str) -> Run | None:
    """Move a queued run to ``starting`` for this worker; None if it was not queued.

    This is what makes the launch task idempotent: of two deliveries of the same
    task, only one UPDATE matches the queued row.
    """
    with transaction.atomic():
        claimed = RUN_STATES.move(
            Run.objects.filter(pk=run_id),
            RunStatus.STARTING,
            attempt=F("attempt") + 1,
            worker=worker[:200],
            pid=None,
            error="",
            started_at=Coalesce(F("started_at"), Now()),
            finished_at=None,
            heartbeat_at=Now(),
        )
        if not claimed:
            return None
        run = Run.objects.get(pk=run_id)
        _start_attempt(run)
        live.announce_run_change(run_id)  # the runs list: queued -> starting
    return run


def _start_attempt(run: Run) -> None:
    """The claimed attempt's row: how it was started, from which checkpoint, on the database's clock."""
    resumes = run.start_kind in (AttemptKind.RESUME, AttemptKind.RECOVERY)
    latest = run.checkpoints.order_by("-step").values_list("step", flat=True).first() if resumes else None
    RunAttempt.objects.update_or_create(
        run=run,
        number=run.attempt,
        defaults={
            "kind": run.start_kind,
            "from_step": latest,
            "worker": run.worker,
            "started_at": run.heartbeat_at,  # written with Now() by the claim
            "ended_at": None,
            "status": "",
            "reason": "",
        },
    )


def record_attempt_checkpoint(run_id: int, attempt: int, step: int | None) -> None:
    """The step of the checkpoint this attempt's trainer starts from (None: from scratch)."""
    RunAttempt.objects.filter(run_id=run_id, number=attempt).update(from_step=step)


def _end_attempt(run_id: int, attempt: int, status: str, reason: str, ended_at: Any) -> None:
    """Record how an attempt ended (the sweep's ``lost`` is overwritten by its supervisor's word)."""
    RunAttempt.objects.filter(run_id=run_id, number=attempt).update(
        status=status, reason=reason, ended_at=ended_at
    )


def _own(run_id: int, attempt: int):
    return Run.objects.filter(pk=run_id, attempt=attempt, status__in=SUPERVISED_STATUSES)


def record_process(run_id: int, attempt: int, pid: int) -> bool:
    """Remember the launcher's process group so an operator can find it."""
    return _own(run_id, attempt).update(pid=pid, heartbeat_at=Now()) == 1


def heartbeat(run_id: int, attempt: int) -> bool:
    """Refresh the heartbeat; False when the run is no longer this supervisor's (lost, relaunched)."""
    return _own(run_id, attempt).update(heartbeat_at=Now()) == 1


class _NotGiven:
    pass


NOT_GIVEN = _NotGiven()


@dataclass(frozen=True)
class Progress:
    offset: int  # byte offset in events.jsonl up to which this write covers
    step: int | None = None
    last_loss: float | None = None
    running: bool = False  # the trainer reported that it started training
    # The run's sweep (None: none), when the writer holds the run (a run's sweep is set as it
    # is created): run_changed carries it, so a batch's signal costs no read of the run.
    sweep_id: int | None | _NotGiven = NOT_GIVEN


def record_progress(run_id: int, attempt: int, progress: Progress) -> bool:
    """Store the new event offset with step, loss and ``starting → running``.

    Call it inside the same transaction as the rows the events produced, so the
    offset and the rows commit together: a crash before the commit re-reads the
    same events, and the upserts make the re-read harmless.
    """
    fields: dict = {"events_offset": progress.offset, "heartbeat_at": Now()}
    if progress.step is not None:
        fields["step"] = progress.step
    if progress.last_loss is not None:
        fields["last_loss"] = progress.last_loss
    updated = _own(run_id, attempt).update(**fields) == 1
    if updated and progress.step is not None:
        facts = {} if progress.sweep_id is NOT_GIVEN else {"sweep_id": progress.sweep_id}
        tell_run_changed(run_id, **facts)
    if updated and progress.running:
        RUN_STATES.move(
            Run.objects.filter(pk=run_id, attempt=attempt), RunStatus.RUNNING, sources=[RunStatus.STARTING]
        )
    return updated


def revive(run_id: int, attempt: int) -> bool:
    """Take back a run the sweep marked lost while its supervisor was cut off from the database.

    The supervisor is alive and its trainer still trains: the loss of contact
    was the dashboard's, not the run's (DESIGN: an outage must not kill training).
    A run relaunched since (another attempt) is not taken back.
    """
    fields = {"error": "", "finished_at": None, "heartbeat_at": Now()}
    run = Run.objects.filter(pk=run_id, attempt=attempt)
    with transaction.atomic():
        if RUN_STATES.move(run, RunStatus.RUNNING, sources=[RunStatus.LOST], **fields) != 1:
            return False
        _end_attempt(run_id, attempt, "", "", None)  # it did not end after all
        live.announce_run_change(run_id)
    return True


def finish(run_id: int, attempt: int, status: str, error: str = "") -> bool:
    """Move the run to a final status; False if it was already final or relaunched.

    A run of this attempt marked lost may still be finished: its supervisor knows how it really ended.
    """
    if status not in FINAL_FROM_SUPERVISOR:
        raise ValueError(f"status must be one of {FINAL_FROM_SUPERVISOR}, got {status!r}")
    run = Run.objects.filter(pk=run_id, attempt=attempt)
    sources = (*SUPERVISED_STATUSES, RunStatus.LOST)
    with transaction.atomic():
        if RUN_STATES.move(run, status, sources=sources, error=error, finished_at=Now()) != 1:
            return False
        _end_attempt(run_id, attempt, status, error, Now())
        check_status(run_id, status)  # alert rules on failed/lost runs fire with the status
        live.announce_run_change(run_id)
        tell_run_changed(run_id)
    return True


def external_alive(run_id: int, step: int | None = None, last_loss: float | None = None) -> bool:
    """An external run reported in (points, logs or a heartbeat): refresh its heartbeat.

    Its client plays the supervisor's part, so its silence makes it ``lost`` through the
    same sweep (``mark_lost_runs``), and a report after that takes it back (``lost →
    running``), as a supervisor that was cut off from the database does. ``step`` and
    ``last_loss`` move only forwards: a late batch of older steps leaves the latest.
    Returns False when the run is no longer active (finished): nothing is written then.
    """
    external = Run.objects.filter(pk=run_id, source=RunSource.EXTERNAL)
    RUN_STATES.move(external, RunStatus.RUNNING, sources=[RunStatus.LOST], error="", finished_at=None)
    active = external.filter(status__in=SUPERVISED_STATUSES)
    if active.update(heartbeat_at=Now()) != 1:
        return False
    if step is not None:
        fields: dict = {"step": step}
        if last_loss is not None:
            fields["last_loss"] = last_loss
        active.filter(step__lte=step).update(**fields)
    return True


def finish_external(run_id: int, status: str, error: str = "") -> bool:
    """An external run's own final word (its client's ``finish``); False when it had already ended."""
    if status not in FINAL_FROM_SUPERVISOR or status == RunStatus.LOST:
        raise ValueError(f"status must be completed, failed or cancelled, got {status!r}")
    run = Run.objects.filter(pk=run_id, source=RunSource.EXTERNAL)
    sources = (*SUPERVISED_STATUSES, RunStatus.LOST)
    with transaction.atomic():
        if RUN_STATES.move(run, status, sources=sources, error=error, finished_at=Now()) != 1:
            return False
        check_status(run_id, status)
        live.announce_run_change(run_id)
    return True


def mark_lost_runs(lost_after: dt.timedelta, *, now: dt.datetime | None = None) -> list[int]:
    """Mark supervised runs whose heartbeat is older than ``lost_after`` as lost; returns their ids.

    Measured on the database's clock, the one every heartbeat was written with;
    ``now`` replaces it (tests that move time forward).
    """
    reference = Value(now, output_field=DateTimeField()) if now is not None else Now()
    cutoff = ExpressionWrapper(reference - Value(lost_after), output_field=DateTimeField())
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    lost: list[int] = []
    for run in Run.objects.filter(stale, status__in=SUPERVISED_STATUSES).only(
        "id", "worker", "heartbeat_at", "attempt", "source"
    ):
        last = run.heartbeat_at.isoformat(timespec="seconds") if run.heartbeat_at else "never"
        if run.source == RunSource.EXTERNAL:
            error = (
                f"Lost: no report from the run's client for more than {int(lost_after.total_seconds())} s "
                f"(last heartbeat: {last}). The training script or its machine probably stopped; "
                "a report from it takes the run back."
            )
        else:
            error = (
                f"Lost: no heartbeat from worker {run.worker or '(unknown)'} for more than "
                f"{int(lost_after.total_seconds())} s (last heartbeat: {last}). The worker or its machine "
                "probably stopped; resume the run from its last checkpoint."
            )
        # The same staleness test again in the UPDATE: a heartbeat that lands
        # between the SELECT and here keeps the run alive.
        still_stale = Run.objects.filter(stale, pk=run.pk, attempt=run.attempt)
        fields = {"error": error, "finished_at": reference}
        with transaction.atomic():
            if RUN_STATES.move(still_stale, RunStatus.LOST, sources=SUPERVISED_STATUSES, **fields) == 1:
                _end_attempt(run.pk, run.attempt, RunStatus.LOST, error, reference)
                check_status(run.pk, RunStatus.LOST)
                live.announce_run_change(run.pk)
                tell_run_changed(run.pk)
                lost.append(run.pk)
    return lost


def queue_again(run_id: int, kind: str, *, sources: Iterable[str] = RESUMABLE_STATUSES) -> bool:
    """Move an ended run back to ``queued`` for a new attempt of ``kind``; False if it was not in ``sources``.

    The one conditional UPDATE that makes a resume race-safe: of two resumes (two
    clicks, a person and the automatic recovery), one moves the row and the other
    finds it queued already and writes nothing. The claim that follows copies
    ``start_kind`` into the attempt's row. The run's last error stays until a
    worker claims it (the claim clears it), so the page still says what happened.
    """
    run = Run.objects.filter(pk=run_id)
    fields = {
        "start_kind": kind,
        "cancel_requested": False,  # a cancelled run's flag would stop the new attempt at once
        "finished_at": None,
        "pid": None,
        "dispatched_at": Now(),  # its launch is sent now; beat re-sends it if that message is lost
    }
    if RUN_STATES.move(run, RunStatus.QUEUED, sources=list(sources), **fields) != 1:
        return False
    live.announce_run_change(run_id)
    return True


def recovery_attempts(run_id: int) -> int:
    """How many attempts of the run the automatic recovery started."""
    return RunAttempt.objects.filter(run_id=run_id, kind=AttemptKind.RECOVERY).count()


# The sweeps look back this many ``lost_after`` periods for lost runs to resume on their own.
RECOVERY_WINDOW_PERIODS = 10


def lost_runs_to_recover(lost_after: dt.timedelta, *, now: dt.datetime | None = None) -> list[int]:
    """Managed runs lost for at least ``lost_after`` (and not for ages) that have a checkpoint.

    The wait leaves a supervisor that was only cut off from the database the time to take
    its run back (``revive``) before a second trainer is started on the same run
    directory. Runs lost longer ago than the window were left to a person (the sweep
    would otherwise re-read every lost run of history each round). Whether restarts are
    left is the caller's question (``recover_lost_run``).
    """
    reference = Value(now, output_field=DateTimeField()) if now is not None else Now()
    due = ExpressionWrapper(reference - Value(lost_after), output_field=DateTimeField())
    oldest = ExpressionWrapper(
        reference - Value(lost_after * RECOVERY_WINDOW_PERIODS), output_field=DateTimeField()
    )
    lost = Run.objects.filter(
        status=RunStatus.LOST, source=RunSource.MANAGED, finished_at__lt=due, finished_at__gte=oldest
    )
    return sorted(set(lost.filter(checkpoints__isnull=False).values_list("pk", flat=True)))


def runs_to_resend(after: dt.timedelta) -> list[int]:
    """Queued runs whose launch message may be lost (see ``webapp.requeue``); marks them re-sent."""
    return requeue.due_for_resend(Run.objects.filter(status=RunStatus.QUEUED), after)


def fail_queued(run_id: int, error: str) -> bool:
    """A queued run that cannot be launched at all (its launch message could not be sent)."""
    with transaction.atomic():
        if not RUN_STATES.fail_queued(Run.objects.filter(pk=run_id), error):
            return False
        check_status(run_id, RunStatus.FAILED)
        live.announce_run_change(run_id)
        tell_run_changed(run_id)
    return True


def cancel_queued(run_id: int) -> bool:
    """Cancel a run that no worker has claimed yet; False once one has (its supervisor stops it)."""
    if not RUN_STATES.cancel_queued(Run.objects.filter(pk=run_id)):
        return False
    live.announce_run_change(run_id)
    tell_run_changed(run_id)
    return True


def waiting_for_gpus(run_id: int) -> bool:
    """A queued run's launch message is alive (it retries while GPUs are busy): no re-send needed."""
    return Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(dispatched_at=Now()) == 1


def record_logs(run_id: int, logs: Iterable[dict]) -> int:
    """Upsert log lines keyed by the event's seq (re-ingesting a line replaces it)."""
    rows = {
        int(e["seq"]): RunLog(
            run_id=run_id,
            seq=int(e["seq"]),
            time=float(e.get("time") or 0.0),
            level=str(e.get("level") or "info")[:10],
            message=str(e.get("message", "")),
        )
        for e in logs
    }
    return _upsert(RunLog.objects, rows, key=["run", "seq"], fields=["time", "level", "message"])


def record_checkpoints(run_id: int, checkpoints: Iterable[dict], *, external: bool = False) -> int:
    """Upsert checkpoints keyed by step (a resumed attempt that saves the same step replaces it).

    ``external``: reported by an external run's client; the path is on its machine (only shown).
    """
    rows = {
        int(e["step"]): Checkpoint(
            run_id=run_id,
            step=int(e["step"]),
            path=str(e.get("path", ""))[:500],
            pruned_at=None,
            external=external,
        )
        for e in checkpoints
    }
    # A step saved again (a resumed attempt) is on disk again: no longer pruned.
    return _upsert(Checkpoint.every, rows, key=["run", "step"], fields=["path", "pruned_at", "external"])


def record_samples(run_id: int, events: Iterable[dict]) -> int:
    """Upsert the sample events' texts keyed by (step, prompt index): a re-read or a resume replaces."""
    rows = {
        (int(e["step"]), i): RunSample(
            run_id=run_id,
            step=int(e["step"]),
            index=i,
            prompt=row["prompt"],
            text=row["text"],
            time=float(e.get("time") or 0.0),
        )
        for e in events
        for i, row in enumerate(e["samples"])
    }
    return _upsert(RunSample.objects, rows, key=["run", "step", "index"], fields=["prompt", "text", "time"])


def _upsert(manager: Manager[Any], rows: dict[Any, Model], *, key: list[str], fields: list[str]) -> int:
    """Insert ``rows`` in one statement, a row already stored under ``key`` taking the new ``fields``.

    ``rows`` is keyed as the table is, so a batch that names a key twice stores its last row
    (one statement cannot update the same row twice). Returns how many rows were written.
    """
    if rows:
        manager.bulk_create(
            list(rows.values()), update_conflicts=True, unique_fields=key, update_fields=fields
        )
    return len(rows)


def forget_missing_checkpoints(run_id: int, on_disk: set[int]) -> list[int]:
    """Mark the run's checkpoints that are no longer on disk as pruned; returns their steps.

    The trainer deletes all but ``train.keep_last`` checkpoints after each save; the
    supervisor, which sees the run directory, passes the steps still there.
    """
    gone = sorted(
        Checkpoint.objects.filter(run_id=run_id).exclude(step__in=on_disk).values_list("step", flat=True)
    )
    if gone:
        Checkpoint.objects.filter(run_id=run_id, step__in=gone).update(pruned_at=Now())
    return gone
