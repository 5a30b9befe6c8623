"""Visibility (404 for another team) and roles (viewers read, members launch and cancel).

Every route against every person is in test_route_permissions.py; these are the readable cases.
"""

from __future__ import annotations

import pytest

from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import RunStatus
from webapp.runs.selectors import runs_visible_to


def test_selectors_show_only_own_teams_objects(alice, bob, charlie, project, run):
    assert list(projects_visible_to(alice)) == [project]
    assert list(projects_visible_to(bob)) == [project]
    assert list(projects_visible_to(charlie)) == []
    assert list(runs_visible_to(bob)) == [run]
    assert list(runs_visible_to(charlie)) == []


@pytest.mark.parametrize(
    "url",
    [
        "/projects/{p}/",
        "/projects/{p}/runs.json",
        "/projects/{p}/runs/new",
        "/runs/{r}/",
        "/runs/{r}/series",
        "/runs/{r}/stream",
    ],
)
def test_charlie_gets_404_for_another_teams_pages(client_for, charlie, project, run, url):
    response = client_for(charlie).get(url.format(p=project.id, r=run.id))
    assert response.status_code == 404
    assert b"Traceback" not in response.content


def test_charlie_cannot_cancel_another_teams_run(client_for, charlie, run):
    response = client_for(charlie).post(f"/runs/{run.id}/cancel")
    assert response.status_code == 404
    run.refresh_from_db()
    assert not run.cancel_requested and run.status == RunStatus.QUEUED


def test_viewer_can_read_run_page_but_sees_no_cancel_button(client_for, bob, run):
    response = client_for(bob).get(f"/runs/{run.id}/")
    assert response.status_code == 200
    assert b"cancel-button" not in response.content


def test_viewer_cannot_cancel_run(client_for, bob, run):
    response = client_for(bob).post(f"/runs/{run.id}/cancel")
    assert response.status_code == 403 and b"You need the member role" in response.content
    run.refresh_from_db()
    assert not run.cancel_requested and run.status == RunStatus.QUEUED


def test_viewer_cannot_open_new_run_form(client_for, bob, project):
    response = client_for(bob).get(f"/projects/{project.id}/runs/new")
    assert response.status_code == 403
    assert b"member role" in response.content


def test_anonymous_is_sent_to_login(client, project, run):
    response = client.get(f"/runs/{run.id}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.get(f"/runs/{run.id}/stream").status_code == 401
