"""The home page: what runs now across a person's teams, and what ended since their last visit."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from webapp.home.models import LastVisit
from webapp.home.services import VISIT_GAP, record_visit
from webapp.runs.models import Run, RunStatus


def ended(make_run, name: str, status: str, ago: dt.timedelta) -> Run:
    run = make_run(status=status, name=name)
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - ago)
    return run


def test_anonymous_visitors_are_sent_to_log_in(client, db):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_running_runs_of_every_team_of_mine_and_none_of_others(client_for, bob, make_run, charlie):
    make_run(status=RunStatus.RUNNING, name="training-now")
    make_run(status=RunStatus.QUEUED, name="waiting-now")
    make_run(status=RunStatus.COMPLETED, name="old-news")
    html = client_for(bob).get("/").content.decode()
    assert "training-now" in html and "waiting-now" in html and "Running now (2)" in html
    other = client_for(charlie).get("/").content.decode()
    assert "training-now" not in other and "Nothing is running in your teams." in other


def test_what_ended_since_the_last_visit_by_how_it_ended(client_for, bob, make_run):
    client = client_for(bob)
    ended(make_run, "finished-last-month", RunStatus.FAILED, dt.timedelta(days=30))
    client.get("/")  # the first visit
    # The first visit ended two hours ago; these ended after it.
    LastVisit.objects.filter(user=bob).update(seen_at=timezone.now() - dt.timedelta(hours=2))
    ended(make_run, "blew-up", RunStatus.FAILED, dt.timedelta(hours=1))
    ended(make_run, "vanished", RunStatus.LOST, dt.timedelta(minutes=30))
    ended(make_run, "done-fine", RunStatus.COMPLETED, dt.timedelta(minutes=5))
    ended(make_run, "before-my-visit", RunStatus.COMPLETED, dt.timedelta(hours=3))
    html = client.get("/").content.decode()
    failed = html.split('id="home-failed"')[1].split("</section>")[0]
    lost = html.split('id="home-lost"')[1].split("</section>")[0]
    completed = html.split('id="home-completed"')[1].split("</section>")[0]
    assert "blew-up" in failed and "vanished" not in failed
    assert "vanished" in lost
    assert "done-fine" in completed and "before-my-visit" not in completed
    assert "finished-last-month" not in html
    # A reload within the same visit shows the same news.
    assert "blew-up" in client.get("/").content.decode()


def test_a_first_visit_shows_the_last_week(client_for, alice, make_run):
    ended(make_run, "this-week", RunStatus.LOST, dt.timedelta(days=2))
    ended(make_run, "long-ago", RunStatus.LOST, dt.timedelta(days=9))
    html = client_for(alice).get("/").content.decode()
    assert "Your first visit" in html and "this-week" in html and "long-ago" not in html


def test_the_last_visit_is_stored_per_person(alice, bob):
    now = timezone.now()
    assert record_visit(alice, now=now) is None
    assert record_visit(alice, now=now + dt.timedelta(minutes=5)) is None  # the same visit
    later = now + dt.timedelta(minutes=5) + VISIT_GAP + dt.timedelta(seconds=1)
    assert record_visit(alice, now=later) == now + dt.timedelta(minutes=5)  # a new one: since the last
    assert record_visit(bob, now=later) is None
    assert LastVisit.objects.get(user=alice).seen_at == later


def test_alerts_raised_since_the_last_visit_are_listed(client_for, bob, project, make_run):
    from webapp.alerts.models import AlertKind, AlertRule
    from webapp.runs import transitions

    AlertRule.objects.create(project=project, kind=AlertKind.FAILED)
    run = make_run(status=RunStatus.RUNNING, name="crashed", attempt=1)
    transitions.finish(run.id, 1, RunStatus.FAILED, error="RuntimeError: boom")
    html = client_for(bob).get("/").content.decode()
    alerts = html.split('id="home-alerts"')[1].split("</section>")[0]
    assert "crashed" in alerts and "the run failed: RuntimeError: boom" in alerts
