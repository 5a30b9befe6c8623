"""Writes for runs: creating (and queueing) one, and asking one to stop."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from modelcore.config import ConfigError, resolve
from webapp import enqueue, live
from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.projects.models import Project
from webapp.runs import config_paths, transitions
from webapp.runs.limits import compute_errors
from webapp.runs.models import ACTIVE_STATUSES, Run, RunStatus

log = logging.getLogger(__name__)


def create_run(
    *,
    user: AbstractBaseUser,
    project: Project,
    name: str = "",
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Run:
    """Validate the config (preset, then overrides), store a queued Run and enqueue its launch.

    Path fields may name only what the user's team may read (``config_paths``); they are
    stored as the real paths the trainer reads. Raises ``ConfigError`` keyed by field
    path; nothing is stored then.
    """
    require_role(user, project.team_id, Role.MEMBER)
    config = resolve(preset or None, overrides)  # raises ConfigError
    errors = compute_errors(config)
    name = (name or "").strip()
    if len(name) > 200:
        errors["name"] = "must be at most 200 characters"
    try:
        config = config_paths.check_submitted(config, user)
    except ConfigError as exc:
        errors.update(exc.errors)
    if errors:
        raise ConfigError(errors)
    with transaction.atomic():
        run = Run.objects.create(
            project=project,
            name=name or _default_name(project, preset),
            preset=preset or "",
            config=config.to_dict(),
            status=RunStatus.QUEUED,
            created_by=user,
        )
        enqueue.send_on_commit(enqueue.LAUNCH_RUN, run.id, on_failure=_launch_not_sent)
    return run


def enqueue_launch(run_id: int) -> None:
    """Send the launch task now (beat re-sends lost ones); a broker failure marks the run failed."""
    enqueue.send(enqueue.LAUNCH_RUN, run_id, on_failure=_launch_not_sent)


def _launch_not_sent(run_id: int, reason: str) -> None:
    transitions.fail_queued(run_id, f"Could not queue the run: {reason}")


def request_cancel(*, user: AbstractBaseUser, run: Run) -> Run:
    """Ask the run to stop: a queued run is cancelled at once, a started one by its supervisor.

    Conditional UPDATEs (not read-modify-write) so a worker changing the status
    at the same moment cannot be overwritten. Cancelling a finished run is a no-op.
    """
    require_role(user, run.project.team_id, Role.MEMBER)
    with transaction.atomic():
        cancelled_now = transitions.cancel_queued(run.pk)
        if not cancelled_now:
            Run.objects.filter(pk=run.pk, status__in=ACTIVE_STATUSES).update(cancel_requested=True)
        run.refresh_from_db()
        # A cancel asked of a running run is news too: every viewer's button says "Cancelling…".
        transaction.on_commit(lambda: _announce(run))
    return run


def _announce(run: Run) -> None:
    """Tell live pages about a change the web made itself (the workers announce theirs)."""
    if not live.enabled():
        return
    try:
        live.publish(run.id, live.run_message(run, live.run_update(run)))
    except Exception:
        # Live pages also re-read the status from the database; a lost notice only delays them.
        log.warning("could not publish the status of run %s", run.id, exc_info=True)


def _default_name(project: Project, preset: str | None) -> str:
    return f"{preset or 'custom'} #{project.runs.count() + 1}"
