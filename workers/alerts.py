"""Sends an alert's webhook: Slack-compatible JSON ``{"text": ...}`` POSTed to the rule's URL.

Sent by name from ``webapp.alerts.services`` after the firing commits. The task re-reads the
firing, sends only one not yet delivered, and records the outcome on the row (shown on the
project's alerts page). A receiver that fails is retried a few times with growing waits; a URL
refused by ``webapp.alerts.egress`` (a private address, a redirect) is not retried.
"""

from __future__ import annotations

import json
import logging

from celery import shared_task

from webapp.alerts import egress
from webapp.alerts.models import AlertFiring
from webapp.alerts.services import clean_webhook_url, record_notified, record_notify_failure

log = logging.getLogger(__name__)

RETRIES = 3


def alert_text(firing: AlertFiring) -> str:
    run = firing.run
    return f"Runwright alert in {run.project.name}: run {run.name} (#{run.id}): {firing.message}"


@shared_task(
    bind=True,
    name="workers.alerts.notify_alert",
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
    max_retries=RETRIES,
)
def notify_alert(self, firing_id: int) -> None:
    firing = AlertFiring.objects.select_related("rule", "run", "run__project").filter(pk=firing_id).first()
    if firing is None or firing.notified_at is not None:
        return  # the rule or run was deleted, or a first delivery of this task already sent it
    try:
        # Its form was checked when saved; where it points is checked again as it is sent.
        url = clean_webhook_url(firing.rule.webhook_url, check_address=False)
    except ValueError as exc:
        record_notify_failure(firing_id, f"bad webhook URL: {exc}")
        return
    if not url:
        return
    body = json.dumps({"text": alert_text(firing)}).encode()
    try:
        egress.post_json(url, body)
    except egress.WebhookRefused as exc:
        record_notify_failure(firing_id, f"webhook refused: {exc}")  # sending again would not change it
        log.warning("alert %s: webhook refused: %s", firing_id, exc)
        return
    except egress.WebhookFailed as exc:
        reason = f"webhook failed: {exc}"
        record_notify_failure(firing_id, reason)
        if self.request.retries < RETRIES:
            raise self.retry(countdown=5 * 2**self.request.retries) from exc
        log.warning("alert %s: %s (gave up)", firing_id, reason)
        return
    record_notified(firing_id)
