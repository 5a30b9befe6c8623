"""Writes for runs: creating (and queueing) one, asking one to stop, starting an ended one again,
archiving and deleting."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from modelcore.config import ConfigError, RunConfig, resolve
from webapp import enqueue, live
from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.audit.models import Action
from webapp.audit.services import record_action
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.runs import config_paths, transitions
from webapp.runs.limits import compute_errors
from webapp.runs.models import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    RUN_STATES,
    AttemptKind,
    Run,
    RunSource,
    RunStatus,
)

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
        run = RUN_STATES.create(
            Run.objects,
            RunStatus.QUEUED,
            project=project,
            name=name or _default_name(project, preset),
            preset=preset or "",
            config=config.to_dict(),
            created_by=user,
        )
        record_action(
            team=project.team_id,
            actor=user,
            action=Action.RUN_LAUNCHED,
            target=run,
            details={"project": project.name, "preset": run.preset},
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
        asked = 0
        if not cancelled_now:
            asked = Run.objects.filter(pk=run.pk, status__in=ACTIVE_STATUSES, cancel_requested=False).update(
                cancel_requested=True
            )
        run.refresh_from_db()
        if cancelled_now or asked:
            record_action(
                team=run.project.team_id,
                actor=user,
                action=Action.RUN_CANCELLED,
                target=run,
                details={"project": run.project.name, "status": run.status},
            )
        # A cancel asked of a running run is news too: every viewer's button says "Cancelling…".
        transaction.on_commit(lambda: _announce(run))
    return run


def resume_run(*, user: AbstractBaseUser, run: Run) -> Run:
    """Start a new attempt of a failed, cancelled or lost run from its latest checkpoint.

    The same run (same directory, same charts): the trainer finds the checkpoint in the run
    directory (``Trainer.resume``) and logs on from its step; points re-logged for steps
    after it replace the old ones (the metrics upsert). The launch goes the way a new
    run's does (``launch_run``); the claim numbers the attempt. Of two resumes at once one
    moves the run and the other gets the InputError of a run that is not ended any more.
    """
    require_role(user, run.project.team_id, Role.MEMBER)
    _check_ended(run, "resumed")
    latest = run.checkpoints.order_by("-step").values_list("step", flat=True).first()
    if latest is None:
        raise InputError(
            {
                "checkpoint": "This run has no checkpoint to resume from (it stopped before its first "
                "save). Restart it to train it again from step 0."
            }
        )
    _queue_again(run, AttemptKind.RESUME, user, {"from_step": latest})
    run.refresh_from_db()
    return run


def restart_run(*, user: AbstractBaseUser, run: Run) -> Run:
    """Train an ended run without a checkpoint again from step 0, as a new attempt of the same run.

    Why the same run and not a copy: the button is on the run's page, about that run; the
    person wants it trained, not a second entry in the list to tell apart from the first.
    Its attempts list shows both starts, and the points of the new attempt replace those
    of the first step by step (the same steps are logged again). A run that has a
    checkpoint is resumed instead (its trainer would start from that checkpoint anyway),
    so a restart never throws work away; "New run from this one" gives a fresh run.
    """
    require_role(user, run.project.team_id, Role.MEMBER)
    _check_ended(run, "restarted")
    latest = run.checkpoints.order_by("-step").values_list("step", flat=True).first()
    if latest is not None:
        raise InputError(
            {"checkpoint": f"This run has a checkpoint (step {latest}); resume it instead of restarting."}
        )
    _queue_again(run, AttemptKind.RESTART, user, {"from_step": None})
    run.refresh_from_db()
    return run


def _check_ended(run: Run, verb: str) -> None:
    if run.source != RunSource.MANAGED:
        raise InputError(
            {
                "source": f"This run trains outside Runwright (its own script reports it); it cannot be {verb} here."
            }
        )
    if run.status not in RESUMABLE_STATUSES:
        raise InputError(
            {"status": f"Only a failed, cancelled or lost run can be {verb}; this one is {run.status}."}
        )


def _queue_again(run: Run, kind: str, user: AbstractBaseUser | None, details: dict[str, Any]) -> None:
    with transaction.atomic():
        if not transitions.queue_again(run.pk, kind):
            run.refresh_from_db(fields=["status"])
            raise InputError(
                {
                    "status": f"The run is {run.status} now (resumed or changed meanwhile); "
                    "only a failed, cancelled or lost run can start again."
                }
            )
        record_action(
            team=run.project.team_id,
            actor=user,
            action=Action.RUN_RESUMED,
            target=run,
            details={"project": run.project.name, "how": kind, "was": run.status, **details},
        )
        enqueue.send_on_commit(enqueue.LAUNCH_RUN, run.pk, on_failure=_launch_not_sent)
        transaction.on_commit(lambda: _announce(Run.objects.get(pk=run.pk)))


def recover_lost_run(run_id: int) -> bool:
    """Resume a lost run on its own, up to ``train.max_restarts`` times; whether it was resumed.

    Called by the sweep for the runs it marks lost and by a supervisor whose worker shuts
    down. Only a run with a checkpoint is resumed (without one a new attempt would train
    from step 0, which a person should decide). Two callers at once resume it once: the
    move from ``lost`` is conditional.
    """
    run = Run.objects.filter(pk=run_id, status=RunStatus.LOST, source=RunSource.MANAGED).first()
    if run is None or not run.checkpoints.exists():
        return False
    try:
        allowed = RunConfig.from_dict(run.config).train.max_restarts
    except ConfigError:
        return False  # its launch would fail on the config anyway
    if transitions.recovery_attempts(run.pk) >= allowed:
        return False
    with transaction.atomic():
        if not transitions.queue_again(run.pk, AttemptKind.RECOVERY, sources=[RunStatus.LOST]):
            return False
        # No person did it: the log says so with an empty actor and the rule that allowed it.
        record_action(
            team=run.project.team_id,
            actor=None,
            action=Action.RUN_RESUMED,
            target=run,
            details={"project": run.project.name, "how": AttemptKind.RECOVERY, "max_restarts": allowed},
        )
    log.warning("run %s was lost; resuming it from its last checkpoint (automatic recovery)", run.pk)
    enqueue_launch(run.pk)
    _announce(Run.objects.get(pk=run.pk))
    return True


def set_archived(*, user: AbstractBaseUser, run: Run, archived: bool) -> Run:
    """Archive a run (hidden from the project's default list) or bring it back; members may."""
    require_role(user, run.project.team_id, Role.MEMBER)
    Run.objects.filter(pk=run.pk).update(archived=archived)
    run.archived = archived
    return run


def delete_run(*, user: AbstractBaseUser, run: Run) -> None:
    """Delete an ended run with everything it owns in the database, then its run directory.

    Team admins only. An active run is refused (cancel it first): its worker still writes
    the directory. The row is re-read under a lock in the deleting transaction, so a resume
    at the same moment either happens first (and the delete is refused) or finds no run.
    The files go only once the delete has committed.
    """
    require_role(user, run.project.team_id, Role.ADMIN)
    with transaction.atomic():
        locked = Run.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None:
            return  # deleted meanwhile
        if locked.status in ACTIVE_STATUSES:
            raise InputError(
                {
                    "status": f"The run is {locked.status}; cancel it and wait for it to stop before deleting it."
                }
            )
        run_dir = locked.run_dir
        record_action(
            team=run.project.team_id,
            actor=user,
            action=Action.RUN_DELETED,
            target=locked,
            details={"project": run.project.name, "status": locked.status, "step": locked.step},
        )
        locked.delete()
        transaction.on_commit(lambda: _remove_run_dir(run_dir))


def _remove_run_dir(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        log.exception("could not remove the directory %s of a deleted run", path)


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
