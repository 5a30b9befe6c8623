"""Marking runs whose supervisor went silent as lost, and resuming those allowed to (``train.max_restarts``)."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings

from webapp.runs import transitions
from webapp.runs.models import Run
from webapp.runs.services import recover_lost_run
from workers import ingest

log = logging.getLogger(__name__)


def sweep_lost_runs() -> list[int]:
    """Mark supervised runs without a heartbeat for ``LOST_AFTER_SECONDS`` as lost; returns their ids.

    A run lost for one more ``LOST_AFTER_SECONDS`` (its supervisor, if it was only cut off
    from the database, had the time to take it back) with a checkpoint and restarts left
    (``train.max_restarts``) is queued again, as a new attempt that resumes from that
    checkpoint.
    """
    lost_after = dt.timedelta(seconds=settings.LOST_AFTER_SECONDS)
    lost = transitions.mark_lost_runs(lost_after)
    for run in Run.objects.filter(pk__in=lost):
        log.warning("run %s marked lost: %s", run.id, run.error)
        ingest.announce_status(run)
    for run_id in transitions.lost_runs_to_recover(lost_after):
        recover_lost_run(run_id)
    return lost
