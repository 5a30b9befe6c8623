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

    A lost run with a checkpoint and restarts left (``train.max_restarts``) is queued again
    at once, as a new attempt that resumes from that checkpoint.
    """
    lost = transitions.mark_lost_runs(dt.timedelta(seconds=settings.LOST_AFTER_SECONDS))
    for run in Run.objects.filter(pk__in=lost):
        log.warning("run %s marked lost: %s", run.id, run.error)
        ingest.announce_status(run)
        recover_lost_run(run.id)
    return lost
