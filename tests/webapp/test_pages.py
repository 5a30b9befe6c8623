"""Login, projects, the runs list, the run page and the error pages."""

from __future__ import annotations

import gzip

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory

from webapp.accounts.models import Role
from webapp.errors import server_error
from webapp.projects.models import Project
from webapp.runs.models import RunLog, RunStatus


def test_login_page_and_login_flow(client, alice):
    assert b"Log in" in client.get("/login/").content
    bad = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert bad.status_code == 200 and b"Please enter a correct username and password" in bad.content
    response = client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302 and response["Location"] == "/projects/"
    assert client.get("/login/").status_code == 302  # already logged in
    client.post("/logout/")
    assert client.get("/projects/").status_code == 302


def test_projects_page_lists_only_visible_projects(client_for, alice, charlie, project, other_team):
    Project.objects.create(team=other_team, name="secret")
    html = client_for(alice).get("/projects/").content.decode()
    assert "llm" in html and "secret" not in html


def test_create_project_from_the_page(client_for, alice, team):
    response = client_for(alice).post("/projects/", {"name": "fresh", "team": team.id, "description": "d"})
    project = Project.objects.get(name="fresh")
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.id}/"
    assert project.team == team and project.created_by == alice


def test_duplicate_project_name_shows_error_next_to_name(client_for, alice, team, project):
    html = client_for(alice).post("/projects/", {"name": "llm", "team": team.id}).content.decode()
    assert "already has a project named" in html


def test_user_without_a_team_gets_a_personal_team(client, db):
    dora = get_user_model().objects.create_user(username="dora", password="dora-password-1")
    client.force_login(dora)
    assert b"a personal team will be created" in client.get("/projects/").content
    client.post("/projects/", {"name": "first"})
    project = Project.objects.get(name="first")
    assert project.team.memberships.get(user=dora).role == Role.ADMIN


def test_viewer_project_goes_to_a_personal_team_not_the_viewed_one(client_for, bob, team):
    client_for(bob).post("/projects/", {"name": "mine", "team": team.id})
    project = Project.objects.get(name="mine")
    assert project.team != team and project.team.memberships.get(user=bob).role == Role.ADMIN


def test_runs_list_page_and_its_polling_json(client_for, bob, project, make_run):
    make_run(status=RunStatus.RUNNING, name="alpha", step=12, last_loss=3.25)
    html = client_for(bob).get(f"/projects/{project.id}/").content.decode()
    assert "alpha" in html and "status-running" in html and "3.2500" in html
    assert "New run" not in html  # viewers cannot launch
    runs = client_for(bob).get(f"/projects/{project.id}/runs.json").json()["runs"]
    assert runs[0]["name"] == "alpha" and runs[0]["step"] == 12 and runs[0]["last_loss"] == 3.25
    assert runs[0]["max_steps"] == 60 and runs[0]["url"].endswith(f"/runs/{runs[0]['id']}/")


def test_run_page_shows_status_config_logs_and_traceback(client_for, alice, make_run):
    failed = make_run(
        status=RunStatus.FAILED, error="Traceback (most recent call last):\n  ValueError: <boom>"
    )
    RunLog.objects.create(run=failed, seq=1, time=1.0, level="info", message="tokenized corpus")
    html = client_for(alice).get(f"/runs/{failed.id}/").content.decode()
    assert 'class="badge status-failed"' in html
    assert "The run failed" in html and "ValueError: &lt;boom&gt;" in html  # escaped, in a <pre>
    assert "tokenized corpus" in html
    assert "model.d_model" in html and 'id="cancel-button"' not in html  # final runs cannot be cancelled
    assert "/vendor/plotly-basic.min.js?v=" in html  # lines only: the partial bundle


def test_cancel_button_on_an_active_run(client_for, alice, make_run):
    running = make_run(status=RunStatus.RUNNING)
    client = client_for(alice)
    assert 'id="cancel-button"' in client.get(f"/runs/{running.id}/").content.decode()
    response = client.post(f"/runs/{running.id}/cancel", follow=True)
    assert b"Cancel requested" in response.content
    running.refresh_from_db()
    assert running.cancel_requested and running.status == RunStatus.RUNNING
    # The trainer now saves its checkpoint before it stops; the page says so rather than "cancelled".
    assert "Saving checkpoint…" in response.content.decode()


@pytest.mark.parametrize("encoding", ["gzip, deflate", ""])
@pytest.mark.parametrize(
    ("path", "header"), [("plotly.min.js", b"plotly.js v"), ("plotly-basic.min.js", b"(basic")]
)
def test_plotly_is_served_locally(client, encoding, path, header):
    response = client.get(f"/vendor/{path}?v=1", HTTP_ACCEPT_ENCODING=encoding)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/javascript")
    body = gzip.decompress(response.content) if encoding else response.content
    assert len(body) > 1_000_000 and header in body[:300]
    assert client.get(f"/vendor/{path}", HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304


def test_404_page_is_friendly(client_for, alice):
    response = client_for(alice).get("/runs/999999/")
    assert response.status_code == 404
    assert b"There is nothing here" in response.content and b"Traceback" not in response.content


def test_500_page_has_no_traceback(db):
    request = RequestFactory().get("/runs/1/")
    response = server_error(request)
    assert response.status_code == 500 and b"Something went wrong" in response.content
    api = server_error(RequestFactory().get("/api/v1/runs/1"))
    assert api.status_code == 500 and api["Content-Type"] == "application/json"


def test_unhandled_exception_renders_the_500_page(client_for, alice, run, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("webapp.runs.views.log_tail", explode)
    client = client_for(alice)
    client.raise_request_exception = False
    response = client.get(f"/runs/{run.id}/")
    assert response.status_code == 500
    assert b"Something went wrong" in response.content and b"secret internals" not in response.content
