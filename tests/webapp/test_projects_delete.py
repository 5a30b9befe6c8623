"""Team admins delete a project: confirmed first, refused while a run is active, folders gone after commit."""

from __future__ import annotations

import pytest

from webapp.audit.models import Action, AuditEvent
from webapp.evals.models import EvalJob, EvalStatus
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"
    return settings.DATA_DIR


def _with_folder(run: Run) -> Run:
    (run.run_dir / "checkpoints").mkdir(parents=True)
    (run.run_dir / "events.jsonl").write_text("{}\n")
    return run


def test_admin_confirms_then_the_project_its_runs_and_their_folders_are_gone(
    client_for, alice, project, make_run, data_dir, django_capture_on_commit_callbacks
):
    runs = [_with_folder(make_run(RunStatus.COMPLETED, name=n)) for n in ("a", "b")]
    job = EvalJob.objects.create(
        project=project,
        source="checkpoint",
        run=runs[0],
        checkpoint_step=1,
        tasks=["t"],
        status=EvalStatus.COMPLETED,
    )
    job.job_dir.mkdir(parents=True)
    confirm = client_for(alice).get(f"/projects/{project.id}/delete/")
    assert (
        confirm.status_code == 200
        and b"2 runs" in confirm.content
        and b'id="confirm-delete"' in confirm.content
    )
    assert all(r.run_dir.exists() for r in runs)  # the GET only asks
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(f"/projects/{project.id}/delete/")
    assert response.status_code == 302 and response["Location"] == "/projects/"
    assert not Project.objects.filter(pk=project.pk).exists() and not Run.objects.exists()
    assert not EvalJob.objects.exists()
    assert not any(r.run_dir.exists() for r in runs) and not job.job_dir.exists()
    event = AuditEvent.objects.get(action=Action.PROJECT_DELETED)
    assert event.team_id == project.team_id and event.target_label == "llm" and event.details["runs"] == 2


def test_folders_stay_when_the_delete_does_not_commit(alice, project, make_run, data_dir):
    from django.db import transaction

    from webapp.projects.services import delete_project

    run = _with_folder(make_run(RunStatus.FAILED))
    with pytest.raises(RuntimeError), transaction.atomic():
        delete_project(user=alice, project=project)
        raise RuntimeError("rolled back")
    assert run.run_dir.exists() and Project.objects.filter(pk=project.pk).exists()


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING])
def test_a_project_with_an_active_run_is_refused_naming_the_run(
    api, client_for, alice, project, make_run, data_dir, status
):
    run = _with_folder(make_run(status, name="busy"))
    make_run(RunStatus.COMPLETED, name="done")
    response = api(alice, "DELETE", f"/api/v1/projects/{project.id}")
    assert response.status_code == 400 and f"busy ({status})" in response.json()["errors"]["project"]
    page = client_for(alice).get(f"/projects/{project.id}/delete/")
    assert b"busy" in page.content and b'id="confirm-delete"' not in page.content
    refused = client_for(alice).post(f"/projects/{project.id}/delete/")
    assert refused.status_code == 400 and b"cancel them" in refused.content
    assert Run.objects.count() == 2 and run.run_dir.exists()
    assert not AuditEvent.objects.filter(action=Action.PROJECT_DELETED).exists()


def test_an_active_eval_job_also_refuses_the_delete(api, alice, project, make_run, data_dir):
    run = make_run(RunStatus.COMPLETED)
    EvalJob.objects.create(
        project=project,
        source="checkpoint",
        run=run,
        checkpoint_step=1,
        tasks=["t"],
        status=EvalStatus.RUNNING,
    )
    response = api(alice, "DELETE", f"/api/v1/projects/{project.id}")
    assert response.status_code == 400 and "evaluation jobs" in response.json()["errors"]["project"]


def test_only_admins_delete_and_another_teams_project_is_404(
    api, client_for, alice, bob, charlie, project, data_dir
):
    assert api(bob, "DELETE", f"/api/v1/projects/{project.id}").status_code == 403
    assert client_for(bob).post(f"/projects/{project.id}/delete/").status_code == 403
    assert api(charlie, "DELETE", f"/api/v1/projects/{project.id}").status_code == 404
    assert Project.objects.filter(pk=project.pk).exists()
    assert b"project-delete" not in client_for(bob).get(f"/projects/{project.id}/").content
    assert b"project-delete" in client_for(alice).get(f"/projects/{project.id}/").content


def test_api_delete_answers_204_then_the_project_is_404(api, alice, project, data_dir):
    assert api(alice, "GET", f"/api/v1/projects/{project.id}").json()["name"] == "llm"
    assert api(alice, "DELETE", f"/api/v1/projects/{project.id}").status_code == 204
    assert api(alice, "GET", f"/api/v1/projects/{project.id}").status_code == 404
