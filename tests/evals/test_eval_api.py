"""Eval jobs over the API: create on checkpoints, read with scores, cancel; errors name the field."""

from __future__ import annotations

import pytest
from eval_fixtures import results_payload

from webapp.evals.models import EvalJob, EvalStatus


@pytest.fixture
def evals_url(project) -> str:
    return f"/api/v1/projects/{project.id}/evals"


def test_create_one_job_per_checkpoint_and_read_them_back(api, alice, run, evals_url, data_dir):
    body = {"models": [f"ckpt:{run.id}:20", f"ckpt:{run.id}:40"], "tasks": ["rw_arith"], "num_fewshot": 2}
    response = api(alice, "POST", evals_url, body)
    assert response.status_code == 201, response.content
    jobs = response.json()["jobs"]
    assert [(j["model"]["run"], j["model"]["checkpoint_step"]) for j in jobs] == [(run.id, 20), (run.id, 40)]
    assert all(j["status"] == "queued" and j["tasks"] == ["rw_arith"] and j["num_fewshot"] == 2 for j in jobs)
    listed = api(alice, "GET", evals_url).json()["jobs"]
    assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in jobs)


def test_a_finished_job_reports_its_scores(api, bob, run, project):
    job = EvalJob.objects.create(
        project=project,
        source="checkpoint",
        run=run,
        checkpoint_step=40,
        tasks=["rw_arith"],
        status=EvalStatus.COMPLETED,
        progress=1.0,
        results=results_payload({"rw_arith": {"acc": 0.75, "acc_stderr": 0.05}}),
    )
    body = api(bob, "GET", f"/api/v1/evals/{job.id}").json()  # viewers may read
    assert body["status"] == "completed" and body["progress"] == 1.0
    assert body["scores"] == {"rw_arith": {"acc": {"value": 0.75, "stderr": 0.05}}}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"models": ["ckpt:{run}:20"], "tasks": ["no_such_task"]}, "tasks", "unknown task"),
        ({"models": ["ckpt:{run}:99"], "tasks": ["rw_arith"]}, "models", "no checkpoint at step 99"),
        ({"models": ["bogus"], "tasks": ["rw_arith"]}, "models", "is not a model choice"),
        ({"models": ["ckpt:{run}:20"], "tasks": "rw_arith"}, "tasks", "must be a list of strings"),
        (
            {"models": ["ckpt:{run}:20"], "tasks": ["rw_arith"], "num_fewshot": "two"},
            "num_fewshot",
            "whole number",
        ),
        ({"models": ["ckpt:{run}:20"], "tasks": ["rw_arith"], "shots": 2}, "shots", "unknown field"),
        ({"tasks": ["rw_arith"]}, "models", "choose at least one model"),
    ],
)
def test_bad_requests_name_the_field(api, alice, run, evals_url, data_dir, body, field, message):
    body = {k: [v.format(run=run.id) for v in val] if k == "models" else val for k, val in body.items()}
    response = api(alice, "POST", evals_url, body)
    assert response.status_code == 400
    assert message in response.json()["errors"][field]
    assert not EvalJob.objects.exists()


def test_viewers_cannot_start_or_cancel_and_other_teams_see_nothing(api, bob, charlie, alice, run, evals_url):
    body = {"models": [f"ckpt:{run.id}:20"], "tasks": ["rw_arith"]}
    assert api(bob, "POST", evals_url, body).status_code == 403
    assert api(charlie, "GET", evals_url).status_code == 404
    job_id = api(alice, "POST", evals_url, body).json()["jobs"][0]["id"]
    assert api(charlie, "GET", f"/api/v1/evals/{job_id}").status_code == 404
    assert api(bob, "POST", f"/api/v1/evals/{job_id}/cancel").status_code == 403


def test_cancel_a_queued_job(api, alice, run, evals_url):
    job_id = api(alice, "POST", evals_url, {"models": [f"ckpt:{run.id}:20"], "tasks": ["rw_arith"]}).json()[
        "jobs"
    ][0]["id"]
    body = api(alice, "POST", f"/api/v1/evals/{job_id}/cancel").json()
    assert body["status"] == "cancelled" and body["cancel_requested"] is True
