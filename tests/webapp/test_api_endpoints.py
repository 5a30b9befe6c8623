"""The minimal API: bearer tokens, JSON errors keyed by field path, never a 500."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from webapp.accounts.models import ApiToken
from webapp.accounts.services import create_api_token
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus


def test_token_is_stored_hashed(alice):
    secret = create_api_token(alice)
    token = ApiToken.objects.get(user=alice)
    assert secret not in (token.token_hash, token.prefix) and token.token_hash == ApiToken.hash(secret)


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic YWxpY2U6eA==", "Bearer "])
def test_missing_or_invalid_token_is_401_json(client, alice, project, header):
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.post("/api/v1/projects", {"name": "x"}, content_type="application/json", **headers)
    assert response.status_code == 401
    assert "error" in response.json() and response["WWW-Authenticate"].startswith("Bearer")


def test_session_cookie_does_not_authenticate_writes(client_for, alice, project):
    response = client_for(alice).post(
        f"/api/v1/projects/{project.id}/runs", {}, content_type="application/json"
    )
    assert response.status_code == 401


def test_create_project_returns_201_with_id(api, alice, team):
    response = api(alice, "POST", "/api/v1/projects", {"name": "new one"})
    assert response.status_code == 201
    project = Project.objects.get(pk=response.json()["id"])
    assert project.team == team and project.name == "new one"


def test_user_without_team_gets_a_personal_team(api, db):
    dora = get_user_model().objects.create_user(username="dora", password="dora-password-1")
    response = api(dora, "POST", "/api/v1/projects", {"name": "mine"})
    assert response.status_code == 201
    assert Project.objects.get(pk=response.json()["id"]).team.memberships.get().user == dora


def test_duplicate_or_empty_project_name_is_400(api, alice, project):
    assert (
        api(alice, "POST", "/api/v1/projects", {"name": "llm"}).json()["errors"]["name"].startswith("team ml")
    )
    assert api(alice, "POST", "/api/v1/projects", {"name": "  "}).status_code == 400


def test_create_run_lays_config_over_preset(api, alice, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api(
            alice,
            "POST",
            f"/api/v1/projects/{project.id}/runs",
            {"name": "api run", "preset": "tiny-cpu", "config": {"train": {"max_steps": 12}}},
        )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    run = Run.objects.get(pk=body["id"])
    assert run.config["train"]["max_steps"] == 12 and run.config["model"]["d_model"] == 64
    assert len(callbacks) == 1


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {"preset": "tiny-cpu", "config": {"model": {"n_heads": 5, "n_kv_heads": 0}}},
            {"model.n_heads": "must divide model.d_model (64)"},
        ),
        (
            {"config": {"model": {"n_heads": 5, "d_model": 512}}},
            {"model.n_heads": "must divide model.d_model (512)"},
        ),
        ({"config": {"model": {"bogus": 1}}}, {"model.bogus": "unknown field"}),
        ({"config": {"train": {"max_steps": "ten"}}}, {"train.max_steps": "must be a whole number"}),
        (
            {"config": {"train": {"max_steps": 0}, "optim": {"warmup_steps": 0}}},
            {"train.max_steps": "must be at least 1 (got 0)"},
        ),
        ({"preset": "nope"}, None),
        ({"config": [1, 2]}, None),
        ({"name": 5}, {"name": "must be a string"}),
        ({"extra": 1}, {"extra": "unknown field; expected name, preset, config, source, tags"}),
    ],
)
def test_bad_run_config_is_400_keyed_by_field(api, alice, project, body, errors):
    response = api(alice, "POST", f"/api/v1/projects/{project.id}/runs", body)
    assert response.status_code == 400
    if errors is not None:
        assert response.json()["errors"] == errors
    else:
        assert response.json()["errors"]
    assert not Run.objects.exists()


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'{"config": {"optim": {"lr": NaN}}}', b"\xff\xfe"])
def test_malformed_json_is_400(api, alice, project, raw):
    response = api(alice, "POST", f"/api/v1/projects/{project.id}/runs", raw=raw)
    assert response.status_code == 400 and "error" in response.json()


def test_viewer_cannot_launch_or_cancel(api, bob, project, run):
    assert api(bob, "POST", f"/api/v1/projects/{project.id}/runs", {"preset": "tiny-cpu"}).status_code == 403
    assert api(bob, "POST", f"/api/v1/runs/{run.id}/cancel").status_code == 403
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and not run.cancel_requested
    assert api(bob, "GET", f"/api/v1/runs/{run.id}").status_code == 200


def test_other_team_gets_404_everywhere(api, charlie, project, run):
    for method, path in [
        ("GET", f"/api/v1/projects/{project.id}/runs"),
        ("POST", f"/api/v1/projects/{project.id}/runs"),
        ("GET", f"/api/v1/runs/{run.id}"),
        ("GET", f"/api/v1/runs/{run.id}/metrics?key=train/loss"),
        ("POST", f"/api/v1/runs/{run.id}/cancel"),
    ]:
        response = api(charlie, method, path, {"preset": "tiny-cpu"} if method == "POST" else None)
        assert response.status_code == 404, path
        assert response.json() == {"error": "not found"}


def test_get_run_and_list(api, alice, project, run):
    body = api(alice, "GET", f"/api/v1/runs/{run.id}").json()
    assert {"id", "name", "status", "step", "config", "created_at"} <= set(body)
    assert body["id"] == run.id and body["config"]["model"]["d_model"] == 64
    listed = api(alice, "GET", f"/api/v1/projects/{project.id}/runs").json()["runs"]
    assert [r["id"] for r in listed] == [run.id]
    projects = api(alice, "GET", "/api/v1/projects").json()["projects"]
    assert [p["id"] for p in projects] == [project.id]


def test_cancel_queued_run_cancels_at_once(api, alice, run):
    response = api(alice, "POST", f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.cancel_requested and run.finished_at


def test_cancel_running_run_only_requests_it(api, alice, make_run):
    running = make_run(status=RunStatus.RUNNING)
    response = api(alice, "POST", f"/api/v1/runs/{running.id}/cancel")
    assert response.json() == {"id": running.id, "status": "running", "cancel_requested": True}


def test_wrong_method_and_unknown_path_are_json(api, alice, run):
    assert api(alice, "PUT", f"/api/v1/runs/{run.id}").status_code == 405
    # DELETE is a run's (admins, ended runs): an active one is refused with the reason.
    refused = api(alice, "DELETE", f"/api/v1/runs/{run.id}")
    assert refused.status_code == 400 and "cancel it" in refused.json()["errors"]["status"]
    response = api(alice, "GET", "/api/v1/nothing-here")
    assert response.status_code == 404 and response.json()["error"]


def test_metrics_endpoint_returns_series(api, alice, run):
    from webapp.metrics.services import Point, upsert_points

    upsert_points(run.id, [Point("train/loss", s, 5.0 - s / 10, 0.0) for s in range(1, 6)])
    body = api(alice, "GET", f"/api/v1/runs/{run.id}/metrics", {"key": "train/loss"}).json()
    assert body["key"] == "train/loss" and body["steps"] == [1, 2, 3, 4, 5]
    assert body["values"] == pytest.approx([4.9, 4.8, 4.7, 4.6, 4.5])
    assert api(alice, "GET", f"/api/v1/runs/{run.id}/metrics").status_code == 400
