"""Which queued jobs to send to the broker again: a lost message must not leave a job queued forever.

A job (a run, an eval job) is sent once when it is created. The message can be lost: a
broker restarted without persistence, a worker killed while it held the message. Beat
asks here, every minute, which queued jobs are due for another send; claiming is
idempotent, so a duplicate message finds the job claimed and does nothing.

A job can also wait queued for a long time with its message alive (every worker busy
with a days-long run). So the wait between sends doubles (``after``, then 2x, 4x...,
up to ``MAX_RESEND_GAP``): a job queued for three days is sent a few dozen times, not
once every three minutes. A run waiting for free GPUs marks itself alive
(``dispatched_at``) each time it retries, and is not re-sent at all.

All times are the database's (``created_at`` aside, written by the web on creation).
"""

from __future__ import annotations

import datetime as dt

from django.db.models import DateTimeField, ExpressionWrapper, QuerySet, Value
from django.db.models.functions import Coalesce, Now

MAX_RESEND_GAP = dt.timedelta(hours=1)


def due_for_resend(queued: QuerySet, after: dt.timedelta, limit: int = 500) -> list[int]:
    """Ids of ``queued`` rows due for another send; each is marked sent (``dispatched_at``) here.

    The model needs ``created_at`` and ``dispatched_at``. Two beats at once cannot both
    claim one row: the mark is a compare-and-set on the ``dispatched_at`` that was read.
    """
    cutoff = ExpressionWrapper(Now() - Value(after), output_field=DateTimeField())
    rows = list(
        queued.annotate(last_sent=Coalesce("dispatched_at", "created_at"), db_now=Now())
        .filter(last_sent__lt=cutoff)
        .order_by("last_sent")
        .values("pk", "created_at", "dispatched_at", "last_sent", "db_now")[:limit]
    )
    due = []
    for row in rows:
        # The wait grows with how long the job had already waited at its last send.
        gap = max(after, min(row["last_sent"] - row["created_at"], MAX_RESEND_GAP))
        if row["db_now"] - row["last_sent"] < gap:
            continue
        if queued.filter(pk=row["pk"], dispatched_at=row["dispatched_at"]).update(dispatched_at=Now()) == 1:
            due.append(row["pk"])
    return due
