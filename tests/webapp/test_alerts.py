"""Alerts: rules on a run's end (failed, lost) and on its metrics (NaN, above or below a bound after
step N), managed by members on the project's alerts page, firing once per run, shown on the run
page, and sent to a webhook by a real Celery worker (received here by a real HTTP server)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest
import service_processes
from django.utils import timezone

from modelcore.config import resolve
from webapp import enqueue
from webapp.accounts.models import Role, Team
from webapp.alerts.models import AlertFiring, AlertKind, AlertRule
from webapp.alerts.services import create_rule
from webapp.metrics.services import Point, upsert_points
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus


def rule(project, kind: str, **fields) -> AlertRule:
    return AlertRule.objects.create(project=project, kind=kind, **fields)


def points(run: Run, key: str, values: dict[int, float]) -> None:
    upsert_points(run.id, [Point(key, step, value, time.time()) for step, value in values.items()])


# --- managing rules ---------------------------------------------------------------


def test_a_member_adds_and_deletes_rules_on_the_alerts_page(client_for, alice, project):
    client = client_for(alice)
    response = client.post(
        f"/projects/{project.id}/alerts",
        {"kind": "above", "key": "val/loss", "threshold": "4.5", "after_step": "100", "webhook_url": ""},
    )
    assert response.status_code == 302
    made = AlertRule.objects.get(project=project)
    assert (made.kind, made.key, made.threshold, made.after_step) == ("above", "val/loss", 4.5, 100)
    page = client.get(f"/projects/{project.id}/alerts").content.decode()
    assert "val/loss &gt; 4.5 after step 100" in page
    assert client.post(f"/alerts/{made.id}/delete").status_code == 302
    assert not AlertRule.objects.exists()


def test_viewers_read_rules_and_other_teams_see_nothing(client_for, bob, charlie, project):
    made = rule(project, AlertKind.FAILED)
    viewer = client_for(bob)
    page = viewer.get(f"/projects/{project.id}/alerts")
    assert page.status_code == 200 and b"run failed" in page.content and b"alert-form" not in page.content
    refused = viewer.post(f"/projects/{project.id}/alerts", {"kind": "failed"})
    assert refused.status_code == 403 and b"member role" in refused.content
    assert viewer.post(f"/alerts/{made.id}/delete").status_code == 403
    other = client_for(charlie)
    assert other.get(f"/projects/{project.id}/alerts").status_code == 404
    assert other.post(f"/alerts/{made.id}/delete").status_code == 404
    assert AlertRule.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "explode"}, "kind"),
        ({"kind": "above", "key": "val/loss", "threshold": "nan"}, "threshold"),
        ({"kind": "below", "key": "val/loss", "threshold": "low"}, "threshold"),
        ({"kind": "nan", "key": "val loss; drop"}, "key"),
        ({"kind": "nan", "key": "val/loss", "after_step": "-3"}, "after_step"),
        ({"kind": "failed", "webhook_url": "javascript:alert(1)"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "file:///etc/passwd"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "https://"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "https://user:pw@example.com/"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "https://example.com:99999/"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "http://127.0.0.1:6379/"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url"),
    ],
)
def test_a_bad_rule_is_a_400_naming_the_field(client_for, alice, project, fields, field):
    response = client_for(alice).post(f"/projects/{project.id}/alerts", fields)
    assert response.status_code == 400
    assert f"<b>{field}</b>" in response.content.decode()
    assert not AlertRule.objects.exists()


# --- the API: the same services as the page --------------------------------------------


def test_a_member_manages_rules_over_the_api_and_a_viewer_reads_them(api, alice, bob, charlie, project):
    made = api(
        alice,
        "POST",
        f"/api/v1/projects/{project.id}/alerts",
        {"kind": "below", "key": "perf/mfu", "threshold": 0.2, "after_step": 50, "webhook_url": ""},
    )
    assert made.status_code == 201
    rule_id = made.json()["id"]
    assert made.json()["description"] == "perf/mfu < 0.2 after step 50"
    listed = api(bob, "GET", f"/api/v1/projects/{project.id}/alerts").json()
    assert [r["id"] for r in listed["rules"]] == [rule_id] and listed["firings"] == []
    refused = api(bob, "POST", f"/api/v1/projects/{project.id}/alerts", {"kind": "failed"})
    assert refused.status_code == 403 and "member" in refused.json()["error"]
    assert api(bob, "DELETE", f"/api/v1/projects/{project.id}/alerts/{rule_id}").status_code == 403
    assert api(charlie, "GET", f"/api/v1/projects/{project.id}/alerts").status_code == 404
    assert api(charlie, "DELETE", f"/api/v1/projects/{project.id}/alerts/{rule_id}").status_code == 404
    assert AlertRule.objects.count() == 1
    assert api(alice, "DELETE", f"/api/v1/projects/{project.id}/alerts/{rule_id}").status_code == 204
    assert api(alice, "DELETE", f"/api/v1/projects/{project.id}/alerts/{rule_id}").status_code == 404
    assert not AlertRule.objects.exists()


def test_a_rule_of_another_project_cannot_be_deleted_through_mine(api, alice, project, team):
    mine_too = Project.objects.create(team=team, name="second", created_by=alice)
    theirs = rule(mine_too, AlertKind.FAILED)
    assert api(alice, "DELETE", f"/api/v1/projects/{project.id}/alerts/{theirs.id}").status_code == 404
    assert AlertRule.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "explode"}, "kind"),
        ({"kind": "above", "key": "val/loss"}, "threshold"),
        ({"kind": "nan", "key": ["val/loss"]}, "key"),
        ({"kind": "nan", "key": "val/loss", "after_step": -1}, "after_step"),
        ({"kind": "failed", "webhook_url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url"),
        ({"kind": "failed", "webhook_url": "http://10.0.0.5:6379/"}, "webhook_url"),
        ({"kind": "failed", "color": "red"}, "color"),
    ],
)
def test_a_bad_rule_over_the_api_is_a_400_naming_the_field(api, alice, project, body, field):
    response = api(alice, "POST", f"/api/v1/projects/{project.id}/alerts", body)
    assert response.status_code == 400 and field in response.json()["errors"], response.json()
    assert not AlertRule.objects.exists()


def test_the_alerts_of_a_run_over_the_api(api, bob, charlie, project, make_run):
    run = make_run(status=RunStatus.RUNNING)
    quiet = make_run(status=RunStatus.RUNNING)
    rule(project, AlertKind.ABOVE, key="val/loss", threshold=1.0)
    points(run, "val/loss", {5: 2.5})
    [alert] = api(bob, "GET", f"/api/v1/runs/{run.id}/alerts").json()["alerts"]
    assert alert["rule"] == "val/loss > 1" and alert["step"] == 5 and alert["notified_at"] is None
    assert api(bob, "GET", f"/api/v1/runs/{quiet.id}/alerts").json()["alerts"] == []
    assert api(charlie, "GET", f"/api/v1/runs/{run.id}/alerts").status_code == 404
    listed = api(bob, "GET", f"/api/v1/projects/{project.id}/alerts").json()
    assert [f["run"]["id"] for f in listed["firings"]] == [run.id]


# --- firing -------------------------------------------------------------------------


def test_a_bound_fires_once_after_step_n(project, make_run):
    run = make_run(status=RunStatus.RUNNING)
    rule(project, AlertKind.ABOVE, key="val/loss", threshold=4.0, after_step=100)
    points(run, "val/loss", {10: 9.0, 50: 6.0})  # above, but before step 100: warm-up
    assert not AlertFiring.objects.exists()
    points(run, "val/loss", {100: 3.5, 110: 4.25, 120: 5.0})
    firing = AlertFiring.objects.get()
    assert (firing.run_id, firing.step, firing.value) == (run.id, 110, 4.25)
    assert "val/loss = 4.25 at step 110" in firing.message
    points(run, "val/loss", {130: 7.0})  # still above: once per run is enough
    assert AlertFiring.objects.count() == 1


def test_below_and_nan_rules_and_other_keys(project, make_run):
    run = make_run(status=RunStatus.RUNNING)
    below = rule(project, AlertKind.BELOW, key="perf/mfu", threshold=0.2)
    nan = rule(project, AlertKind.NAN, key="train/loss")
    points(run, "val/loss", {1: float("nan")})  # a key no rule watches
    points(run, "perf/mfu", {1: 0.4, 2: 0.35})
    assert not AlertFiring.objects.exists()
    points(run, "train/loss", {1: 3.0, 2: float("inf"), 3: float("nan")})
    points(run, "perf/mfu", {3: 0.1})
    fired = {f.rule_id: f for f in AlertFiring.objects.all()}
    assert fired[nan.id].step == 2 and "NaN/inf" in fired[nan.id].message
    assert fired[below.id].step == 3


def test_rules_of_another_project_never_fire_on_my_runs(project, make_run, charlie, other_team):
    theirs = Project.objects.create(team=other_team, name="theirs", created_by=charlie)
    rule(theirs, AlertKind.NAN, key="train/loss")
    points(make_run(status=RunStatus.RUNNING), "train/loss", {1: float("nan")})
    assert not AlertFiring.objects.exists()


def test_status_rules_fire_where_the_final_status_is_written(project, make_run):
    failed = rule(project, AlertKind.FAILED)
    lost = rule(project, AlertKind.LOST)
    run = make_run(status=RunStatus.RUNNING, attempt=1)
    assert transitions.finish(
        run.id, 1, RunStatus.FAILED, error="Traceback...\nRuntimeError: CUDA out of memory"
    )
    firing = AlertFiring.objects.get(rule=failed)
    assert firing.message == "the run failed: RuntimeError: CUDA out of memory"
    completed = make_run(status=RunStatus.RUNNING, attempt=1)
    assert transitions.finish(completed.id, 1, RunStatus.COMPLETED)
    stale = make_run(status=RunStatus.RUNNING, attempt=1)
    Run.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - dt.timedelta(hours=1))
    assert transitions.mark_lost_runs(dt.timedelta(minutes=5)) == [stale.id]
    assert AlertFiring.objects.get(rule=lost).run_id == stale.id
    assert AlertFiring.objects.count() == 2


def test_the_run_page_shows_its_alerts(client_for, bob, project, make_run):
    run = make_run(status=RunStatus.RUNNING)
    rule(project, AlertKind.ABOVE, key="val/loss", threshold=1.0)
    points(run, "val/loss", {5: 2.5})
    html = client_for(bob).get(f"/runs/{run.id}/").content.decode()
    assert 'id="run-alerts"' in html and "val/loss = 2.5 at step 5" in html


# --- the webhook, sent by a real worker to a real HTTP receiver ----------------------------


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/runwright"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_fired_rule_posts_slack_json_to_its_webhook_through_a_worker(
    tmp_path, receiver, monkeypatch, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE = (
        True  # the receiver is on loopback: the operator allows it, here and below
    )
    from tests.people import make_user

    team = Team.objects.create(name="hooks")
    member = make_user("hooker", team, Role.MEMBER)
    project = Project.objects.create(team=team, name="watched", created_by=member)
    run = Run.objects.create(
        project=project, name="diverging", config=resolve("tiny-cpu").to_dict(), status=RunStatus.RUNNING
    )
    create_rule(user=member, project=project, kind="nan", key="train/loss", webhook_url=receiver)
    create_rule(user=member, project=project, kind="failed")  # no webhook: the page only
    with service_processes.celery_worker(
        tmp_path / "worker.log", own_queue=True, RUNWRIGHT_WEBHOOK_ALLOW_PRIVATE="1"
    ) as (queue, _):
        # Only the route differs from production: onto this test's worker, not the shared queue.
        send_task = enqueue.app.send_task
        monkeypatch.setattr(
            enqueue.app, "send_task", lambda name, args, **kw: send_task(name, args, queue=queue)
        )
        points(run, "train/loss", {1: 3.0, 2: float("nan")})
        firing = AlertFiring.objects.get()
        wait_for(lambda: Receiver.received, 60, "the webhook")
        wait_for(lambda: AlertFiring.objects.get(pk=firing.pk).notified_at, 30, "the delivery to be recorded")
    [call] = Receiver.received
    assert call["path"] == "/hooks/runwright" and call["type"] == "application/json"
    text = json.loads(call["body"])["text"]
    assert "diverging" in text and "train/loss = NaN/inf at step 2" in text and "watched" in text
