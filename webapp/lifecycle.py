"""The allowed status changes of one kind of job, and the one way to make them.

Each kind of job (a training run, an eval job) declares its table next to its model
(``RUN_STATES`` in ``webapp/runs/models.py``, ``EVAL_STATES`` in ``webapp/evals/models.py``).
Every status write goes through ``JobStateMachine.move``: one conditional UPDATE
(``WHERE status IN (sources)`` plus whatever the caller's queryset already says, such as
the attempt), never a read-modify-write. So two writers (the web cancelling, a worker
finishing, the sweep marking a run lost) cannot overwrite each other: the one that loses
updates 0 rows and knows it lost. A move the table does not allow is a programming error
and raises before anything is written.

A job is created in one of its table's ``initial`` states through ``create``; the two
moves every kind of job makes before a worker claims it (``fail_queued``, ``cancel_queued``)
are written here once. Every kind names those states alike: ``queued``, ``failed``,
``cancelled``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import DateTimeField, ExpressionWrapper, Manager, Model, QuerySet, Value
from django.db.models.functions import Now

QUEUED, RUNNING, FAILED, CANCELLED = "queued", "running", "failed", "cancelled"
SILENT_WORKER_ERROR = "The worker running this job stopped responding (killed or lost). Start the job again."


class ProcessJob(models.Model):
    """The columns every kind of job has (a run, an eval job, a sampling or export job).

    What the moves below and ``webapp.process_jobs`` write: who runs it and since when, its
    heartbeat (the sweep of silent workers reads it on the database's clock), its cancel
    flag, and its error. Each kind adds its ``status`` (with its choices) and its own columns.
    """

    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=200, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # While queued: when its task message was last known sent (webapp.requeue re-sends lost ones).
    dispatched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class IllegalTransition(ValueError):
    """A status change the job's table does not allow (a bug in the caller, not user input)."""


class JobStateMachine:
    """A job's states and its allowed moves: ``{from_state: {to_state, ...}}``.

    A state with no outgoing move is final. A move to the same state (a supervisor's
    ``lost`` over the sweep's ``lost``) is allowed only where the table lists it.
    """

    def __init__(self, initial: Iterable[str], moves: Mapping[str, Iterable[str]], *, field: str = "status"):
        self.field = field
        self.initial = frozenset(initial)
        self.moves = {str(source): frozenset(str(t) for t in targets) for source, targets in moves.items()}
        unknown = self.initial - set(self.moves)
        for targets in self.moves.values():
            unknown |= targets - set(self.moves)
        if unknown:
            raise ValueError(f"states used but not declared as keys of the table: {sorted(unknown)}")

    @property
    def states(self) -> tuple[str, ...]:
        return tuple(self.moves)

    @property
    def final(self) -> tuple[str, ...]:
        return tuple(state for state, targets in self.moves.items() if not targets)

    def sources_of(self, target: str) -> tuple[str, ...]:
        """Every state from which ``target`` may be reached."""
        return tuple(state for state, targets in self.moves.items() if target in targets)

    def create(self, manager: Manager, status: str, **fields: Any) -> Model:
        """Create a job in ``status``, which must be one of the table's initial states."""
        if status not in self.initial:
            raise IllegalTransition(
                f"{self.field}: a job cannot start {status!r} (it starts {' or '.join(sorted(self.initial))})"
            )
        return manager.create(**{self.field: status}, **fields)

    def fail_queued(self, queryset: QuerySet, error: str) -> bool:
        """A queued job that cannot run (its task could not be sent, it names what does not exist)."""
        return self.move(queryset, FAILED, sources=[QUEUED], error=error, finished_at=Now()) == 1

    def cancel_queued(self, queryset: QuerySet) -> bool:
        """Cancel a job no worker has claimed yet; False once one has (its runner stops it)."""
        fields = {"cancel_requested": True, "finished_at": Now()}
        return self.move(queryset, CANCELLED, sources=[QUEUED], **fields) == 1

    def fail_silent(self, queryset: QuerySet, older_than_seconds: float) -> list[int]:
        """Fail the running jobs of ``queryset`` whose worker stopped heartbeating; returns their ids.

        The database's clock decides, so hosts whose clocks disagree agree on who is silent.
        """
        cutoff = ExpressionWrapper(
            Now() - Value(dt.timedelta(seconds=older_than_seconds)), output_field=DateTimeField()
        )
        silent = queryset.filter(**{self.field: RUNNING}, heartbeat_at__lt=cutoff)
        stale = list(silent.values_list("pk", flat=True))
        if stale:
            self.move(
                silent.filter(pk__in=stale),
                FAILED,
                sources=[RUNNING],
                error=SILENT_WORKER_ERROR,
                finished_at=Now(),
                pid=None,
            )
        return stale

    def move(
        self, queryset: QuerySet, target: str, *, sources: Iterable[str] | None = None, **fields: Any
    ) -> int:
        """Move the rows of ``queryset`` that are in ``sources`` to ``target``; returns how many moved.

        ``sources`` defaults to every state the table allows into ``target``; naming a source
        the table does not allow raises ``IllegalTransition`` and writes nothing. ``fields``
        are written in the same UPDATE (use ``Now()`` for times other hosts compare).
        """
        allowed = self.sources_of(target)
        chosen = tuple(sources) if sources is not None else allowed
        illegal = [source for source in chosen if source not in allowed]
        if illegal or not chosen:
            raise IllegalTransition(f"{self.field}: no move from {illegal or list(chosen)} to {target!r}")
        return queryset.filter(**{f"{self.field}__in": chosen}).update(**{self.field: target}, **fields)
