"""What the pages' one live mechanism (static/js/live.js) reads: the run stream's polling form, the runs table's rows."""

from __future__ import annotations

import re

import pytest

from webapp.metrics.models import MetricPoint
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunLog, RunStatus

# transaction=True: the stream reads in the thread pool, on its own connection (it sees only commits).
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_stream_polled_gives_updates_with_their_cursor_and_goes_on_from_it(client_for, alice, make_run):
    run = make_run(status=RunStatus.RUNNING, step=2)
    upsert_points(run.id, [Point("train/loss", s, 1.0 / s, 0.0) for s in (1, 2)])
    RunLog.objects.create(run=run, seq=1, time=1.0, message="hello")
    client = client_for(alice)
    first = client.get(f"/runs/{run.id}/stream?poll=1&after=-1&log_after=-1").json()
    assert first["end"] is None
    [update] = first["updates"]
    assert update["data"]["points"] == {"train/loss": [[1, 1.0], [2, 0.5]]}
    assert [entry["message"] for entry in update["data"]["logs"]] == ["hello"]
    last_seq = MetricPoint.objects.filter(run=run).order_by("-seq").first().seq
    assert update["id"] == f"{last_seq}:{RunLog.objects.get(run=run).id}"

    upsert_points(run.id, [Point("val/loss", 2, 0.7, 0.0)])  # a late key for a step already sent
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    # The page sends back the last id it got: only what came after, then the end.
    second = client.get(f"/runs/{run.id}/stream?poll=1&after=-1&cursor={update['id']}").json()
    assert [u["data"]["points"] for u in second["updates"]] == [{"val/loss": [[2, 0.7]]}]
    assert second["end"] == {"status": "completed"}


def test_a_garbled_poll_cursor_reads_from_the_page_start_not_a_500(client_for, alice, make_run):
    run = make_run(status=RunStatus.COMPLETED)
    upsert_points(run.id, [Point("train/loss", 1, 1.0, 0.0)])
    body = client_for(alice).get(f"/runs/{run.id}/stream?poll=1&cursor=abc:def").json()
    assert body["updates"][0]["data"]["points"] == {"train/loss": [[1, 1.0]]}


def test_another_teams_run_is_not_polled(client_for, charlie, make_run):
    run = make_run(status=RunStatus.RUNNING)
    assert client_for(charlie).get(f"/runs/{run.id}/stream?poll=1").status_code == 404


def rows_of(html: str) -> str:
    """The runs table's body as the page renders it."""
    return re.search(r"<tbody>(.*)</tbody>", html, re.S).group(1).strip()


def test_the_runs_table_refresh_brings_the_rows_the_page_renders(client_for, bob, project, make_run):
    make_run(status=RunStatus.RUNNING, name="alpha", step=12, last_loss=3.25)
    client = client_for(bob)
    page = client.get(f"/projects/{project.id}/").content.decode()
    rows = client.get(f"/projects/{project.id}/runs.json").json()["rows"]
    assert rows.strip() == rows_of(page)  # one template: the refresh and the first view agree
    assert "alpha</a>" in rows and "status-running" in rows and "3.2500" in rows

    Run.objects.filter(name="alpha").update(status=RunStatus.COMPLETED)
    assert "status-completed" in client.get(f"/projects/{project.id}/runs.json").json()["rows"]


def test_an_empty_runs_table_refreshes_to_its_empty_row(client_for, alice, project):
    rows = client_for(alice).get(f"/projects/{project.id}/runs.json").json()["rows"]
    assert "No runs yet." in rows and "Start one" in rows  # Alice may launch
