"""An archived run says so: on its page, and in the runs table when archived runs are listed."""

from __future__ import annotations

import pytest

from webapp.runs.models import RunStatus

pytestmark = pytest.mark.django_db


def test_archived_run_shows_its_badge_on_the_run_page_and_in_the_table(client_for, bob, project, make_run):
    archived = make_run(RunStatus.COMPLETED, name="old", archived=True)
    make_run(RunStatus.COMPLETED, name="kept")
    client = client_for(bob)
    assert 'id="run-archived"' in client.get(f"/runs/{archived.id}/").content.decode()
    default = client.get(f"/projects/{project.id}/").content.decode()
    assert "kept" in default and "badge archived" not in default
    listed = client.get(f"/projects/{project.id}/?archived=1").content.decode()
    assert listed.count("badge archived") == 1
    rows = client.get(f"/projects/{project.id}/runs.json?archived=1").json()
    assert {r["name"]: r["archived"] for r in rows["runs"]} == {"old": True, "kept": False}


def test_a_run_not_archived_has_no_badge(client_for, bob, run):
    assert 'id="run-archived"' not in client_for(bob).get(f"/runs/{run.id}/").content.decode()
