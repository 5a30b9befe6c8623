"""Alert rules (members manage them) and their firing: once per rule and run, then a webhook.

Where rules are checked:
- metric rules on the points of each write, inside its transaction (``check_points``, called
  by ``webapp.metrics.services.write_points``, the one path every stored point takes);
- status rules where a run's final status is written (``check_status``, called by the
  named writes in ``webapp.runs.transitions``).

A firing is a row (unique per rule and run: a rule fires once per run, however many
batches or writers see the condition); its webhook is sent by a Celery task
(``workers.alerts.notify_alert``) enqueued by name after the transaction commits, so a
slow or dead receiver never holds up ingestion or a request.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from webapp import enqueue
from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.alerts import egress
from webapp.alerts.models import METRIC_KINDS, STATUS_KINDS, AlertFiring, AlertKind, AlertRule
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.runs.models import Run
from webapp.whole_numbers import BIGINT_MAX

log = logging.getLogger(__name__)

MAX_RULES_PER_PROJECT = 50
METRIC_KEY = re.compile(r"[A-Za-z0-9_./,@#%+\-\[\]()]{1,200}")


def clean_webhook_url(value: object, *, check_address: bool = True) -> str:
    """An http(s) URL with a host, or empty (the alert then only shows on the run page).

    ``check_address``: also refuse a host that is, or resolves to, a loopback, private,
    link-local, multicast, reserved or unspecified address (``webapp.alerts.egress``).
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError({"webhook_url": "must be a string"})
    url = value.strip()
    if not url:
        return ""
    if len(url) > 500 or any(c.isspace() or ord(c) < 32 for c in url):
        raise InputError({"webhook_url": "at most 500 characters, without spaces"})
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise InputError({"webhook_url": "not a URL"}) from None
    if parts.scheme not in ("http", "https"):
        raise InputError({"webhook_url": "must start with http:// or https://"})
    if not host:
        raise InputError({"webhook_url": "must name a host, e.g. https://hooks.slack.com/services/..."})
    if parts.username or parts.password:
        raise InputError({"webhook_url": "must not carry a user name or password"})
    if check_address:
        try:
            egress.check_url(url)
        except egress.WebhookRefused as exc:
            raise InputError({"webhook_url": str(exc)}) from None
    return url


def create_rule(
    *,
    user: AbstractBaseUser,
    project: Project,
    kind: object,
    key: object = "",
    threshold: object = None,
    after_step: object = 0,
    webhook_url: object = "",
) -> AlertRule:
    require_role(user, project.team_id, Role.MEMBER)
    errors: dict[str, str] = {}
    if kind not in AlertKind.values:
        raise InputError({"kind": f"one of {', '.join(AlertKind.values)}"})
    rule = AlertRule(project=project, kind=kind, created_by=user)
    if kind in METRIC_KINDS:
        key = key.strip() if isinstance(key, str) else key
        if not isinstance(key, str) or not METRIC_KEY.fullmatch(key):
            errors["key"] = "the metric's key, e.g. val/loss (letters, digits and ./_-,@#%+[]())"
        else:
            rule.key = key
        step = _whole(after_step, "after_step", errors)
        rule.after_step = 0 if step is None else step
    if kind in (AlertKind.ABOVE, AlertKind.BELOW):
        rule.threshold = _finite(threshold, "threshold", errors)
    try:
        rule.webhook_url = clean_webhook_url(webhook_url)
    except InputError as exc:
        errors.update(exc.errors)
    if errors:
        raise InputError(errors)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).values_list("pk").first()
        if AlertRule.objects.filter(project=project).count() >= MAX_RULES_PER_PROJECT:
            raise InputError({"kind": f"a project has at most {MAX_RULES_PER_PROJECT} alert rules"})
        rule.save()
    return rule


def delete_rule(*, user: AbstractBaseUser, rule: AlertRule) -> None:
    require_role(user, rule.project.team_id, Role.MEMBER)
    rule.delete()


def _whole(value: object, field: str, errors: dict[str, str]) -> int | None:
    if value in (None, ""):
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= BIGINT_MAX:
        errors[field] = "a whole number of steps, 0 or more"
        return None
    return value


def _finite(value: object, field: str, errors: dict[str, str]) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors[field] = "a finite number, e.g. 2.5"
        return None
    return float(value)


# --- firing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    rule: AlertRule
    message: str
    step: int | None = None
    value: float | None = None


def check_points(run_id: int, written: Mapping[str, Mapping[int, float | None]]) -> int:
    """Fire the run's metric rules that the points just written meet; returns how many fired.

    ``written`` is key -> step -> value (None: NaN/inf), as the metrics writer has it. Call
    it inside the transaction that stores them: the firings commit (or roll back) with the points.
    """
    rules = list(AlertRule.objects.filter(project__runs=run_id, kind__in=METRIC_KINDS, key__in=list(written)))
    if not rules:
        return 0
    triggers = []
    for rule in rules:
        hit = _first_hit(rule, written.get(rule.key, {}))
        if hit is not None:
            step, value = hit
            triggers.append(Trigger(rule, _metric_message(rule, step, value), step, value))
    return _fire(run_id, triggers)


def _first_hit(rule: AlertRule, values: Mapping[int, float | None]) -> tuple[int, float | None] | None:
    for step in sorted(s for s in values if s >= rule.after_step):
        value = values[step]
        if rule.kind == AlertKind.NAN and value is None:
            return step, None
        if value is None or rule.threshold is None:
            continue
        if (rule.kind == AlertKind.ABOVE and value > rule.threshold) or (
            rule.kind == AlertKind.BELOW and value < rule.threshold
        ):
            return step, value
    return None


def _metric_message(rule: AlertRule, step: int, value: float | None) -> str:
    shown = "NaN/inf" if value is None else f"{value:.6g}"
    return f"{rule.key} = {shown} at step {step} (rule: {rule.describe()})"


def check_status(run_id: int, status: str) -> int:
    """Fire the run's status rules for the final ``status`` just written; returns how many fired."""
    if status not in STATUS_KINDS:
        return 0
    rules = list(AlertRule.objects.filter(project__runs=run_id, kind=status))
    error = Run.objects.filter(pk=run_id).values_list("error", flat=True).first() or ""
    first_line = next((line for line in reversed(error.strip().splitlines()) if line.strip()), "")
    message = f"the run {status}" + (f": {first_line[:300]}" if first_line else "")
    return _fire(run_id, [Trigger(rule, message) for rule in rules])


def _fire(run_id: int, triggers: list[Trigger]) -> int:
    if not triggers:
        return 0
    with transaction.atomic():
        ids = [t.rule.id for t in triggers]
        before = set(
            AlertFiring.objects.filter(run_id=run_id, rule_id__in=ids).values_list("rule_id", flat=True)
        )
        fresh = [t for t in triggers if t.rule.id not in before]
        AlertFiring.objects.bulk_create(
            [
                AlertFiring(rule=t.rule, run_id=run_id, message=t.message[:2000], step=t.step, value=t.value)
                for t in fresh
            ],
            ignore_conflicts=True,  # a concurrent writer fired it first: once is enough
        )
        # Ours are those that exist now and did not before (a conflict left its row as it was).
        made = AlertFiring.objects.filter(run_id=run_id, rule_id__in=[t.rule.id for t in fresh]).exclude(
            rule_id__in=before
        )
        notify = [f.id for f in made.select_related("rule") if f.rule.webhook_url]
        for firing_id in notify:
            enqueue.send_on_commit(enqueue.NOTIFY_ALERT, firing_id, on_failure=record_notify_failure)
    return len(fresh)


def record_notify_failure(firing_id: int, reason: str) -> None:
    """The webhook could not be sent (the broker refused the task, or the receiver failed)."""
    AlertFiring.objects.filter(pk=firing_id).update(notify_error=reason[:2000])


def record_notified(firing_id: int) -> bool:
    """The webhook was delivered; False if it had been already (a task run twice sends once more at most)."""
    return (
        AlertFiring.objects.filter(pk=firing_id, notified_at__isnull=True).update(
            notified_at=timezone.now(), notify_error=""
        )
        == 1
    )
