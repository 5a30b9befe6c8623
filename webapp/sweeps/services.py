"""Writes for sweeps: create one (every trial validated first), launch runs as slots free up,
halve at the checkpoint step, cancel.

``advance_sweep`` is the one place that launches a sweep's runs. It is idempotent and
race-safe: it locks the sweep row (``select_for_update``; SQLite serialises writers anyway),
counts the sweep's active runs under that lock and launches at most ``concurrency`` minus
that many, so two advances at once (two runs ending together on two workers) launch each
trial once and never exceed the limit. It runs after commit whenever a run of a sweep logs
progress or ends (``webapp.runs.transitions.run_changed``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models.functions import Now

from modelcore.config import ConfigError, RunConfig, resolve
from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.audit.models import Action
from webapp.audit.services import record_action
from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.runs import config_paths
from webapp.runs import services as run_services
from webapp.runs.limits import compute_errors
from webapp.runs.models import ACTIVE_STATUSES, Run
from webapp.sweeps import search
from webapp.sweeps.models import RungResult, Sweep, SweepStatus
from webapp.sweeps.stream import announce_sweep_change

log = logging.getLogger(__name__)

SPEC_FIELDS = (
    "name",
    "preset",
    "config",
    "method",
    "parameters",
    "budget",
    "concurrency",
    "seed",
    "metric",
    "goal",
    "halving_step",
    "halving_eta",
)


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError({field: f"must be a whole number from {low} to {high}"})
    return value


def create_sweep(*, user: AbstractBaseUser, project: Project, spec: Mapping[str, Any]) -> Sweep:
    """Validate the spec and every trial's config, store the sweep, launch its first runs.

    Raises ``ConfigError`` keyed by field (``parameters.optim.lr``, ``budget``, ...); nothing is
    stored or launched then.
    """
    require_role(user, project.team_id, Role.MEMBER)
    unknown = set(spec) - set(SPEC_FIELDS)
    if unknown:
        raise ConfigError({str(sorted(map(str, unknown))[0])[:80]: "unknown field"})
    name = spec.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        raise ConfigError({"name": "must be a string of at most 200 characters"})
    preset = spec.get("preset") or ""
    if not isinstance(preset, str):
        raise ConfigError({"preset": "must be a preset name"})
    base = spec.get("config") or {}
    try:
        resolve(preset or None, base)
    except ConfigError as exc:
        raise ConfigError({f"config.{k}" if k != "preset" else k: v for k, v in exc.errors.items()}) from None
    except KeyError:
        raise ConfigError({"preset": f"unknown preset {preset[:50]!r}"}) from None
    parsed = search.parse_spec(
        spec.get("method"), spec.get("parameters"), spec.get("budget"), spec.get("seed", 0)
    )
    concurrency = _whole(spec.get("concurrency", 1), "concurrency", 1, 64)
    metric = spec.get("metric", "val/loss")
    if not isinstance(metric, str) or not 0 < len(metric) <= 200 or not metric.isprintable():
        raise ConfigError({"metric": "must be a metric key, e.g. val/loss"})
    goal = spec.get("goal", "min")
    if goal not in search.GOALS:
        raise ConfigError({"goal": "must be min or max"})
    halving_step, halving_eta = spec.get("halving_step"), spec.get("halving_eta")
    if halving_step is not None:
        halving_step = _whole(halving_step, "halving_step", 1, 10**9)
        halving_eta = _whole(2 if halving_eta is None else halving_eta, "halving_eta", 2, 100)
    elif halving_eta is not None:
        raise ConfigError({"halving_step": "needed with halving_eta: the step at which to compare runs"})
    trials = search.expand(parsed)

    def check(config: RunConfig) -> None:  # what create_run checks beyond the schema, per trial
        errors = compute_errors(config)
        if errors:
            raise ConfigError(errors)
        config_paths.check_submitted(config, user)

    search.check_trials(preset, base, trials, check)
    with transaction.atomic():
        sweep = Sweep.objects.create(
            project=project,
            name=name.strip() or f"sweep {Sweep.objects.filter(project=project).count() + 1}",
            created_by=user,
            preset=preset,
            base=base,
            method=parsed.method,
            parameters=parsed.parameters,
            trials=trials,
            concurrency=concurrency,
            metric=metric,
            goal=goal,
            halving_step=halving_step,
            halving_eta=halving_eta,
        )
        record_action(
            team=project.team_id,
            actor=user,
            action=Action.SWEEP_CREATED,
            target=sweep,
            details={"project": project.name, "method": sweep.method, "budget": sweep.budget},
        )
        advance_sweep(sweep.pk)
    sweep.refresh_from_db()
    return sweep


def advance_sweep(sweep_id: int) -> list[int]:
    """Halve what reached the rung, launch trials into free slots, end a finished sweep.

    Returns the ids of the runs launched now. Safe to call any number of times, from anywhere.
    """
    launched: list[int] = []
    with transaction.atomic():
        sweep = Sweep.objects.select_for_update().filter(pk=sweep_id, status=SweepStatus.RUNNING).first()
        if sweep is None:
            return launched
        if sweep.halving_step and _judge_rung(sweep):
            announce_sweep_change(sweep.pk, sweep.project_id)
        active = Run.objects.filter(sweep=sweep, status__in=ACTIVE_STATUSES).count()
        while sweep.launched < sweep.budget and active < sweep.concurrency:
            index = sweep.launched
            trial = sweep.trials[index]
            try:
                run = run_services.create_run(
                    user=sweep.created_by,
                    project=sweep.project,
                    name=f"{sweep.name} #{index + 1}"[:200],
                    preset=sweep.preset or None,
                    overrides=search.overrides_for(sweep.base, trial),
                )
            except (ConfigError, PermissionDenied) as exc:
                reason = exc.errors if isinstance(exc, ConfigError) else str(exc)
                Sweep.objects.filter(pk=sweep.pk).update(
                    status=SweepStatus.FAILED,
                    error=f"Trial {index + 1} could not start: {reason}",
                    finished_at=Now(),
                )
                announce_sweep_change(sweep.pk, sweep.project_id)
                return launched
            Run.objects.filter(pk=run.pk).update(sweep=sweep)
            sweep.launched = index + 1
            sweep.run_ids = [*sweep.run_ids, run.pk]
            Sweep.objects.filter(pk=sweep.pk).update(launched=sweep.launched, run_ids=sweep.run_ids)
            launched.append(run.pk)
            active += 1
        if launched:
            announce_sweep_change(sweep.pk, sweep.project_id)
        if sweep.launched >= sweep.budget and active == 0:
            # No one completes a sweep: its last run ending does (the actor is left blank).
            _end(sweep, SweepStatus.COMPLETED, None, Action.SWEEP_COMPLETED, {"runs": sweep.launched})
    return launched


def _end(
    sweep: Sweep, status: str, actor: AbstractBaseUser | None, action: str, details: dict[str, Any]
) -> bool:
    """End a running sweep (one conditional UPDATE: it ends once), announce it and audit it.

    Returns whether this call ended it; an ended sweep is left as it is.
    """
    ended = Sweep.objects.filter(pk=sweep.pk, status=SweepStatus.RUNNING).update(
        status=status, finished_at=Now()
    )
    if ended:
        announce_sweep_change(sweep.pk, sweep.project_id)
        details = {"project": sweep.project.name, **details}
        record_action(team=sweep.project.team_id, actor=actor, action=action, target=sweep, details=details)
    return bool(ended)


def rung_value(run: Run, key: str, step: int) -> float | None:
    """The run's metric at the rung: its last value logged at or before ``step``, else (a metric
    logged less often than the rung, ``val/loss`` every ``eval_every`` steps) its first one after."""
    points = MetricPoint.objects.filter(run=run, key=key, value__isnull=False)
    before = points.filter(step__lte=step).order_by("-step").values_list("value", flat=True).first()
    if before is not None:
        return before
    return points.filter(step__gt=step).order_by("step").values_list("value", flat=True).first()


def kept_at_rung(values: list[float], value: float, eta: int, goal: str) -> bool:
    """Asynchronous successive halving: kept when within the best ceil(k / eta) of the k recorded.

    ``values`` holds every run recorded at the rung so far, this one included; the first
    run to reach the rung is always kept, and every later one must beat the rung's top 1/eta.
    """
    ordered = sorted(values, reverse=goal == "max")
    keep = math.ceil(len(ordered) / eta)
    return ordered.index(value) < keep


def _judge_rung(sweep: Sweep) -> int:
    """Record each run that passed the halving step once; cancel those outside the top 1/eta.

    Returns how many runs were judged now.
    """
    judged = 0
    waiting = Run.objects.filter(
        sweep=sweep, status__in=ACTIVE_STATUSES, step__gte=sweep.halving_step, rung_result__isnull=True
    )
    for run in waiting:
        value = rung_value(run, sweep.metric, sweep.halving_step)
        if value is None:
            continue  # the metric is not logged yet at the rung: judged at its next change
        values = [*RungResult.objects.filter(sweep=sweep).values_list("value", flat=True), value]
        kept = kept_at_rung(values, value, sweep.halving_eta, sweep.goal)
        RungResult.objects.create(sweep=sweep, run=run, value=value, kept=kept)
        judged += 1
        if not kept:
            try:
                run_services.request_cancel(user=sweep.created_by, run=run)
            except PermissionDenied:
                log.warning("sweep %s: cannot cancel run %s (its creator lost the right)", sweep.pk, run.pk)
    return judged


def cancel_sweep(*, user: AbstractBaseUser, sweep: Sweep) -> Sweep:
    """Stop launching and cancel the sweep's active runs; cancelling an ended sweep is a no-op."""
    require_role(user, sweep.project.team_id, Role.MEMBER)
    with transaction.atomic():
        details = {"launched": sweep.launched, "budget": sweep.budget}
        if _end(sweep, SweepStatus.CANCELLED, user, Action.SWEEP_CANCELLED, details):
            for run in Run.objects.filter(sweep=sweep, status__in=ACTIVE_STATUSES).select_related("project"):
                run_services.request_cancel(user=user, run=run)
    sweep.refresh_from_db()
    return sweep


def on_run_changed(sender: Any, run_id: int, **kwargs: Any) -> None:
    """``run_changed`` receiver: advance the run's sweep, if it has one (``sweep_id`` when the sender knew it)."""
    if "sweep_id" in kwargs:
        sweep_id = kwargs["sweep_id"]
    else:
        sweep_id = Run.objects.filter(pk=run_id).values_list("sweep_id", flat=True).first()
    if sweep_id is None:
        return
    try:
        advance_sweep(sweep_id)
    except Exception:
        log.exception("sweep %s: advancing after a change of run %s failed", sweep_id, run_id)
        raise


def advance_running_sweeps() -> list[int]:
    """Advance every running sweep once; returns the ids of the runs launched.

    The catch-up beat runs (``workers.tasks.advance_sweeps``): ``run_changed`` is sent after
    commit by the process that wrote the change, so a worker that dies between its commit and
    the signal leaves a sweep waiting for a trigger that never comes. ``advance_sweep`` is
    idempotent, so advancing a sweep that needed nothing does nothing.
    """
    launched: list[int] = []
    for sweep_id in Sweep.objects.filter(status=SweepStatus.RUNNING).values_list("pk", flat=True):
        try:
            launched += advance_sweep(sweep_id)
        except Exception:
            # One broken sweep must not hold the others back; the next beat tries it again.
            log.exception("sweep %s: catch-up advance failed", sweep_id)
    return launched
