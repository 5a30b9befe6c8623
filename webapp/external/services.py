"""Writes for external runs: runs trained outside Runwright that report over the API.

An external run is a ``Run`` with ``source = external``: created ``running`` (nothing
launches it), its points, logs and final status sent by its client (the ``runwright`` SDK,
``runwright sync``, an MLflow client). Its client plays the supervisor's part, through the
supervisor's own writes: points by ``write_points`` (the one bulk, idempotent path, with
its keys and summaries), logs by ``transitions.record_logs``, the live update built by
``webapp.live`` from the rows just written, the status by ``RUN_STATES`` moves, and
silence by the same sweep that marks a launched run ``lost``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Now

from webapp import live
from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.annotations.models import RunTag
from webapp.annotations.services import MAX_TAGS_PER_REQUEST, TAG_PATTERN, add_tags
from webapp.external.batches import MAX_PARAMS, Report, read_params
from webapp.input_errors import InputError
from webapp.metrics.services import Point, upsert_points, write_points
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import RUN_STATES, Run, RunLog, RunSource, RunStatus

log = logging.getLogger(__name__)

NAME_MAX_LENGTH = 200
# An external run's config: its params, flat (``{"params": {"optim.lr": 0.1}}``), and, from an
# MLflow client, its key-value tags (``{"tags": {"mlflow.user": "ana"}}``).
PARAMS_SECTION = "params"
LABELS_SECTION = "tags"


class RunEnded(Exception):
    """The run has ended (completed, failed, cancelled): it takes no more reports. A 409."""

    def __init__(self, run: Run):
        self.run = run
        super().__init__(
            f"run {run.id} has ended ({run.status}); it takes no more points, logs or heartbeats. "
            "Start a new run to log more."
        )


def create_external_run(
    *,
    user: AbstractBaseUser,
    project: Project,
    name: str = "",
    config: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
) -> Run:
    """Store a ``running`` external run with its params (``{"params": {...}}``) and tags; never launched."""
    require_role(user, project.team_id, Role.MEMBER)
    name = (name or "").strip()
    if len(name) > NAME_MAX_LENGTH:
        raise InputError({"name": f"must be at most {NAME_MAX_LENGTH} characters"})
    params = read_params(config if config is not None else {})
    with transaction.atomic():
        run = RUN_STATES.create(
            Run.objects,
            RunStatus.RUNNING,
            project=project,
            name=name or f"external #{project.runs.count() + 1}",
            config={PARAMS_SECTION: params},
            source=RunSource.EXTERNAL,
            created_by=user,
            attempt=1,
            started_at=Now(),
            heartbeat_at=Now(),
        )
        if tags:
            add_tags(user=user, run=run, names=tags)
    run.refresh_from_db()
    return run


def require_writer(user: AbstractBaseUser, run: Run) -> None:
    """The checks every write to an external run starts with: the member role, then the run's source."""
    require_role(user, run.project.team_id, Role.MEMBER)
    require_external(run)


def require_external(run: Run) -> None:
    if run.source != RunSource.EXTERNAL:
        raise InputError(
            {"run": f"run {run.id} is launched by Runwright: its trainer reports its metrics, not the API"}
        )


def record(*, user: AbstractBaseUser, run: Run, report: Report) -> int:
    """Store one request's points, logs, checkpoints and samples (then its final status, if any);
    returns the points written.

    Idempotent per (key, step) for points, per seq for logs, per step for checkpoints and per
    (step, prompt index) for samples, so a client that resends a batch it did not hear back
    about changes nothing. A run the sweep marked ``lost`` is
    taken back; an ended run refuses with ``RunEnded``.
    """
    require_writer(user, run)
    step, loss = report.progress()
    with transaction.atomic():
        if not transitions.external_alive(run.id, step=step, last_loss=loss):
            run.refresh_from_db()
            raise RunEnded(run)
        logs_after = live.last_log_id(run.id) if report.logs else None
        # external_alive's update holds the run's row: the points need not lock it again.
        written = write_points(run.id, report.points, run_locked=True)
        transitions.record_logs(run.id, _numbered(run.id, report.logs))
        transitions.record_checkpoints(run.id, report.checkpoints, external=True)
        transitions.record_samples(run.id, report.samples)
        rows = live.rows_written(run.id, written, logs_after)
        if report.final is not None:
            transitions.finish_external(run.id, *report.final)
        transaction.on_commit(lambda: _announce(run.id, rows))
    return len(written.rows)


def heartbeat(*, user: AbstractBaseUser, run: Run) -> Run:
    """The client is alive (it may have nothing to log for a while); ``RunEnded`` once the run has ended."""
    require_writer(user, run)
    was_lost = run.status == RunStatus.LOST
    if not transitions.external_alive(run.id):
        run.refresh_from_db()
        raise RunEnded(run)
    run.refresh_from_db()
    if was_lost:
        _announce(run.id, None)
    return run


def finish(*, user: AbstractBaseUser, run: Run, status: str, error: str = "") -> Run:
    """The client's final word. Saying it again is a no-op; a different word after the end is ``RunEnded``."""
    require_writer(user, run)
    if status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
        raise InputError({"status": "must be completed, failed or cancelled"})
    if not transitions.finish_external(run.id, status, error[:100_000]):
        run.refresh_from_db()
        if run.status != status:
            raise RunEnded(run)
        return run
    run.refresh_from_db()
    _announce(run.id, None)
    return run


def update_params(
    *,
    user: AbstractBaseUser,
    run: Run,
    config: Mapping[str, Any],
    tags: list[str] | None = None,
    immutable: bool = False,
) -> Run:
    """Add or replace params of the run's config (a later value of a name wins), and add tags.

    ``immutable`` (MLflow's rule): a param may be logged again with the same value, never
    another; a change is refused whole with a ``params.<name>`` error, under the run's lock.
    """
    require_writer(user, run)
    params = read_params(config)
    with transaction.atomic():
        merge_config_section(run, PARAMS_SECTION, params, limit=MAX_PARAMS, immutable=immutable)
        if tags:
            add_tags(user=user, run=run, names=tags)
    run.refresh_from_db()
    return run


def rename(*, user: AbstractBaseUser, run: Run, name: str) -> Run:
    """Give an external run another name (an MLflow client's ``mlflow.runName`` tag or update)."""
    require_writer(user, run)
    name = (name or "").strip()
    if not name:
        raise InputError({"name": "must not be empty"})
    if len(name) > NAME_MAX_LENGTH:
        raise InputError({"name": f"must be at most {NAME_MAX_LENGTH} characters"})
    Run.objects.filter(pk=run.pk).update(name=name)
    run.name = name
    return run


def set_labels(*, user: AbstractBaseUser, run: Run, labels: Mapping[str, str]) -> Run:
    """Key-value tags (MLflow's), kept in the config's ``tags`` section; a plain name is also a run tag."""
    require_writer(user, run)
    with transaction.atomic():
        merge_config_section(run, LABELS_SECTION, dict(labels), limit=MAX_PARAMS)
        names = [
            key.lower()
            for key in labels
            if not key.startswith("mlflow.") and TAG_PATTERN.fullmatch(key.lower())
        ]
        if names:
            add_tags(user=user, run=run, names=names[:MAX_TAGS_PER_REQUEST])
    run.refresh_from_db()
    return run


def delete_label(*, user: AbstractBaseUser, run: Run, key: str) -> bool:
    """Remove one key-value tag (MLflow's ``delete_tag``); False when the run has no such tag."""
    require_writer(user, run)
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        config = dict(locked.config or {})
        labels = dict(config.get(LABELS_SECTION) or {})
        if key not in labels:
            return False
        del labels[key]
        config[LABELS_SECTION] = labels
        Run.objects.filter(pk=run.pk).update(config=config)
    run.refresh_from_db()
    return True


def merge_config_section(
    run: Run, section: str, values: Mapping[str, Any], *, limit: int, immutable: bool = False
) -> None:
    """Merge ``values`` into one section of an external run's config, under the run's row lock.

    ``immutable``: a value already there may only be sent again as it is (compared as text, the
    way MLflow keeps params), else the whole merge is refused naming the first changed one.
    """
    locked = Run.objects.select_for_update().get(pk=run.pk)
    config = dict(locked.config or {})
    before = config.get(section, {})
    if immutable:
        for key, value in values.items():
            if key in before and param_text(before[key]) != param_text(value):
                raise InputError(
                    {
                        f"{section}.{key}": f"Changing param values is not allowed. Param with key='{key}' was "
                        f"already logged with value='{param_text(before[key])}' for run ID='{run.pk}'. "
                        f"Attempted logging new value '{param_text(value)}'."
                    }
                )
    merged = {**before, **values}
    if len(merged) > limit:
        raise InputError({section: f"a run has at most {limit} {section}"})
    config[section] = merged
    Run.objects.filter(pk=run.pk).update(config=config)


def param_text(value: Any) -> str:
    """A param's value as MLflow stores it: text (``True``, ``None``, ``0.001``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return "None" if value is None else str(value)


def run_tags(run: Run) -> list[str]:
    return list(RunTag.objects.filter(run=run).values_list("name", flat=True))


def _numbered(run_id: int, logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines sent without a seq get the run's next ones (the run's row is locked by now)."""
    if all(entry["seq"] is not None for entry in logs):
        return logs
    highest = RunLog.objects.filter(run_id=run_id).aggregate(top=Max("seq"))["top"] or 0
    top = max([highest, *(e["seq"] for e in logs if e["seq"] is not None)])
    numbered = []
    for entry in logs:
        if entry["seq"] is None:
            top += 1
            entry = {**entry, "seq": top}
        numbered.append(entry)
    return numbered


def _announce(run_id: int, rows: live.LiveRows | None) -> None:
    """Publish what was stored; a Redis failure only delays live pages (they re-read the database)."""
    if not live.enabled():
        return
    run = Run.objects.get(pk=run_id)
    try:
        live.publish(run.id, live.rows_message(run, rows))
    except Exception:
        log.warning("run %s: could not publish a live update", run.id, exc_info=True)


def import_points(*, user: AbstractBaseUser, run: Run, points: list[Point], chunk: int = 10_000) -> int:
    """Points of a run being imported (``import_mlflow``): the same upsert, whatever the run's status.

    An import may fill a run that has already ended, and may be run twice: points are
    keyed by (key, step), so a second import replaces them with the same values.
    """
    require_writer(user, run)
    written = 0
    for start in range(0, len(points), chunk):
        with transaction.atomic():
            written += upsert_points(run.id, points[start : start + chunk])
    step, loss = Report(points=points).progress()
    if step is not None:
        fields: dict[str, Any] = {"step": step}
        if loss is not None:
            fields["last_loss"] = loss
        Run.objects.filter(pk=run.pk, step__lte=step).update(**fields)
    return written
