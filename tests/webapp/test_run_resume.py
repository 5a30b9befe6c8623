"""Resume, restart, archive and delete of runs: the services, the attempts, the API and the run page.

The worker half (a real worker resuming a real trainer) is in tests/workers/test_resume_worker.py.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models.functions import Now

from modelcore.config import preset
from webapp.accounts.models import Role
from webapp.accounts.services import add_member
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import AttemptKind, Checkpoint, Run, RunAttempt, RunSource, RunStatus
from webapp.runs.selectors import runs_of_project
from webapp.runs.services import delete_run, recover_lost_run, restart_run, resume_run, set_archived

LAUNCH = "workers.tasks.launch_run"


@pytest.fixture
def make_run(project, alice):
    def make(status: str = RunStatus.FAILED, *, checkpoint: int | None = 40, **fields) -> Run:
        run = Run.objects.create(
            project=project,
            name=f"r-{status}",
            preset="tiny-cpu",
            config=fields.pop("config", None) or preset("tiny-cpu").to_dict(),
            status=status,
            created_by=alice,
            **{"attempt": 1, **fields},
        )
        if checkpoint is not None:
            Checkpoint.objects.create(run=run, step=checkpoint, path=f"checkpoints/step_{checkpoint:06d}")
        return run

    return make


@pytest.fixture
def carol(team):
    """A member of team "ml": may launch and resume, not delete."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("carol", password="x" * 12)
    add_member(team, user, Role.MEMBER)
    return user


# --- resume ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.LOST])
def test_an_ended_run_with_a_checkpoint_is_queued_again_and_its_launch_sent_after_commit(
    status, make_run, alice, sent_tasks, django_capture_on_commit_callbacks
):
    run = make_run(status, cancel_requested=status == RunStatus.CANCELLED, error="boom")
    with django_capture_on_commit_callbacks(execute=True):
        resumed = resume_run(user=alice, run=run)
    assert resumed.status == RunStatus.QUEUED and resumed.start_kind == AttemptKind.RESUME
    # A cancelled run's flag would stop the new attempt at once.
    assert resumed.cancel_requested is False and resumed.finished_at is None
    assert resumed.attempt == 1  # the claim numbers the new attempt
    assert sent_tasks == [(LAUNCH, (run.id,), None)]


def test_the_claim_of_a_resumed_run_records_the_attempt_and_the_checkpoint_it_starts_from(
    make_run, alice, sent_tasks
):
    run = make_run(RunStatus.FAILED, checkpoint=40)
    Checkpoint.objects.create(run=run, step=20, path="checkpoints/step_000020")
    resume_run(user=alice, run=run)
    claimed = transitions.claim_for_launch(run.id, "host-b")
    assert claimed.attempt == 2 and claimed.status == RunStatus.STARTING and claimed.error == ""
    attempt = RunAttempt.objects.get(run=run, number=2)
    assert (attempt.kind, attempt.from_step, attempt.worker) == (AttemptKind.RESUME, 40, "host-b")
    assert attempt.started_at is not None and attempt.ended_at is None and attempt.status == ""
    assert transitions.finish(run.id, 2, RunStatus.COMPLETED)
    attempt.refresh_from_db()
    assert attempt.status == RunStatus.COMPLETED and attempt.ended_at >= attempt.started_at


def test_a_run_without_a_checkpoint_is_not_resumed_and_the_message_says_restart(make_run, alice, sent_tasks):
    run = make_run(RunStatus.FAILED, checkpoint=None)
    with pytest.raises(InputError) as caught:
        resume_run(user=alice, run=run)
    assert (
        "no checkpoint" in caught.value.errors["checkpoint"]
        and "Restart" in caught.value.errors["checkpoint"]
    )
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and sent_tasks == []


@pytest.mark.parametrize("status", [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED])
def test_a_run_that_is_not_ended_or_completed_is_not_resumed(status, make_run, alice, sent_tasks):
    run = make_run(status)
    with pytest.raises(InputError) as caught:
        resume_run(user=alice, run=run)
    assert status in caught.value.errors["status"]
    assert Run.objects.get(pk=run.pk).status == status and sent_tasks == []


def test_an_external_run_is_not_resumed(make_run, alice, sent_tasks):
    run = make_run(RunStatus.FAILED, source=RunSource.EXTERNAL)
    with pytest.raises(InputError) as caught:
        resume_run(user=alice, run=run)
    assert "source" in caught.value.errors and sent_tasks == []


def test_a_viewer_cannot_resume_a_run(make_run, bob, sent_tasks):
    run = make_run(RunStatus.FAILED)
    with pytest.raises(PermissionDenied, match="member role"):
        resume_run(user=bob, run=run)
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED and sent_tasks == []


def test_of_two_resumes_of_one_run_the_second_is_refused_and_one_launch_is_sent(
    make_run, alice, sent_tasks, django_capture_on_commit_callbacks
):
    run = make_run(RunStatus.FAILED)
    first, second = Run.objects.get(pk=run.pk), Run.objects.get(pk=run.pk)  # both read as failed
    with django_capture_on_commit_callbacks(execute=True):
        resume_run(user=alice, run=first)
        with pytest.raises(InputError, match="queued now"):
            resume_run(user=alice, run=second)
    assert sent_tasks == [(LAUNCH, (run.id,), None)]


@pytest.mark.django_db(transaction=True)
def test_two_resumes_at_the_same_moment_start_one_attempt(team, alice, project, sent_tasks):
    """Threads on their own connections (PostgreSQL in CI pass 2): the conditional move lets one through."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race is exercised on PostgreSQL")
    run = Run.objects.create(
        project=project, name="race", config=preset("tiny-cpu").to_dict(), status=RunStatus.FAILED, attempt=1
    )
    Checkpoint.objects.create(run=run, step=10, path="checkpoints/step_000010")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def resume() -> None:
        try:
            barrier.wait()
            resume_run(user=alice, run=Run.objects.get(pk=run.pk))
            outcomes.append("resumed")
        except InputError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=resume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["resumed"]
    assert [name for name, _, _ in sent_tasks] == [LAUNCH]
    assert transitions.claim_for_launch(run.id, "w") is not None
    assert transitions.claim_for_launch(run.id, "w") is None
    assert RunAttempt.objects.filter(run=run).count() == 1


# --- restart ----------------------------------------------------------------------


def test_a_run_without_a_checkpoint_restarts_as_a_new_attempt_from_step_zero(
    make_run, alice, sent_tasks, django_capture_on_commit_callbacks
):
    run = make_run(RunStatus.FAILED, checkpoint=None)
    with django_capture_on_commit_callbacks(execute=True):
        restarted = restart_run(user=alice, run=run)
    assert restarted.status == RunStatus.QUEUED and restarted.start_kind == AttemptKind.RESTART
    claimed = transitions.claim_for_launch(run.id, "w")
    attempt = RunAttempt.objects.get(run=run, number=claimed.attempt)
    assert attempt.kind == AttemptKind.RESTART and attempt.from_step is None
    assert sent_tasks == [(LAUNCH, (run.id,), None)]


def test_a_run_with_a_checkpoint_is_resumed_not_restarted(make_run, alice, sent_tasks):
    run = make_run(RunStatus.CANCELLED, checkpoint=30)
    with pytest.raises(InputError, match="step 30"):
        restart_run(user=alice, run=run)
    assert sent_tasks == []


# --- attempts written by the worker side ---------------------------------------------


def test_the_sweep_ends_the_attempt_as_lost_and_its_supervisor_can_take_it_back(make_run, sent_tasks):
    run = make_run(RunStatus.QUEUED, checkpoint=None, attempt=0)
    transitions.claim_for_launch(run.id, "host-a")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert transitions.mark_lost_runs(dt.timedelta(seconds=60), now=later) == [run.id]
    attempt = RunAttempt.objects.get(run=run, number=1)
    assert attempt.status == RunStatus.LOST and "no heartbeat" in attempt.reason and attempt.ended_at
    assert transitions.revive(run.id, 1)
    attempt.refresh_from_db()
    assert attempt.status == "" and attempt.ended_at is None and attempt.reason == ""


# --- automatic recovery ----------------------------------------------------------------


def _config_with_restarts(n: int) -> dict:
    config = preset("tiny-cpu").to_dict()
    config["train"]["max_restarts"] = n
    return config


def test_a_lost_run_is_resumed_on_its_own_up_to_max_restarts(make_run, sent_tasks):
    run = make_run(RunStatus.LOST, config=_config_with_restarts(2))
    for number in (2, 3):
        assert recover_lost_run(run.id)
        claimed = transitions.claim_for_launch(run.id, "w")
        assert claimed.attempt == number
        assert RunAttempt.objects.get(run=run, number=number).kind == AttemptKind.RECOVERY
        assert transitions.finish(run.id, number, RunStatus.LOST, "lost again")
    assert not recover_lost_run(run.id)  # two automatic restarts used
    assert Run.objects.get(pk=run.pk).status == RunStatus.LOST
    assert [name for name, _, _ in sent_tasks] == [LAUNCH, LAUNCH]


def test_recovery_leaves_runs_without_a_checkpoint_or_restarts_and_other_statuses_alone(make_run, sent_tasks):
    no_checkpoint = make_run(RunStatus.LOST, checkpoint=None, config=_config_with_restarts(2))
    no_restarts = make_run(RunStatus.LOST)  # tiny-cpu: max_restarts 0
    failed = make_run(RunStatus.FAILED, config=_config_with_restarts(2))
    assert not any(recover_lost_run(r.id) for r in (no_checkpoint, no_restarts, failed))
    assert sent_tasks == []


def test_the_sweep_resumes_a_lost_run_only_after_its_supervisor_had_the_time_to_take_it_back(
    make_run, sent_tasks, settings
):
    from workers.sweep import sweep_lost_runs

    settings.LOST_AFTER_SECONDS = 60
    run = make_run(RunStatus.QUEUED, config=_config_with_restarts(1), attempt=0)
    transitions.claim_for_launch(run.id, "host-a")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=Now() - dt.timedelta(seconds=90))
    assert sweep_lost_runs() == [run.id]
    assert Run.objects.get(pk=run.pk).status == RunStatus.LOST and sent_tasks == []  # not yet
    now = dt.datetime.now(dt.UTC)
    lost_after = dt.timedelta(seconds=60)
    assert transitions.lost_runs_to_recover(lost_after, now=now + dt.timedelta(seconds=30)) == []
    assert transitions.lost_runs_to_recover(lost_after, now=now + dt.timedelta(seconds=90)) == [run.id]
    assert (
        transitions.lost_runs_to_recover(lost_after, now=now + dt.timedelta(hours=1)) == []
    )  # left to a person
    Run.objects.filter(pk=run.pk).update(finished_at=Now() - dt.timedelta(seconds=61))
    sweep_lost_runs()
    assert Run.objects.get(pk=run.pk).status == RunStatus.QUEUED
    assert [name for name, _, _ in sent_tasks] == [LAUNCH]


def test_max_restarts_defaults_to_zero_on_cpu_presets_and_two_on_gpu_presets():
    assert preset("tiny-cpu").train.max_restarts == 0
    assert preset("gpt2-small").train.max_restarts == 2
    assert preset("llama-1b").train.max_restarts == 2


# --- archive -----------------------------------------------------------------------


def test_an_archived_run_leaves_the_default_list_and_comes_back_unarchived(make_run, project, carol, bob):
    run = make_run(RunStatus.COMPLETED)
    set_archived(user=carol, run=run, archived=True)
    assert run not in runs_of_project(carol, project)
    with pytest.raises(PermissionDenied):
        set_archived(user=bob, run=run, archived=False)
    set_archived(user=carol, run=run, archived=False)
    assert run in runs_of_project(carol, project)


# --- delete -----------------------------------------------------------------------


def test_an_admin_deletes_an_ended_run_with_its_directory_after_commit(
    make_run, alice, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.RUNS_DIR = tmp_path / "runs"
    run = make_run(RunStatus.FAILED)
    (run.run_dir / "checkpoints").mkdir(parents=True)
    (run.run_dir / "events.jsonl").write_text("{}\n")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        delete_run(user=alice, run=run)
    assert (
        not Run.objects.filter(pk=run.pk).exists() and not Checkpoint.objects.filter(run_id=run.pk).exists()
    )
    assert run.run_dir.exists()  # not before the commit
    for callback in callbacks:
        callback()
    assert not run.run_dir.exists()


def test_a_member_cannot_delete_and_an_active_run_is_refused(make_run, alice, carol):
    ended, active = make_run(RunStatus.FAILED), make_run(RunStatus.RUNNING)
    with pytest.raises(PermissionDenied, match="admin"):
        delete_run(user=carol, run=ended)
    with pytest.raises(InputError, match="cancel it"):
        delete_run(user=alice, run=active)
    assert Run.objects.filter(pk__in=[ended.pk, active.pk]).count() == 2


# --- API ---------------------------------------------------------------------------


def test_api_resume_answers_202_and_the_run_is_queued(
    api, make_run, carol, sent_tasks, django_capture_on_commit_callbacks
):
    run = make_run(RunStatus.LOST)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(carol, "POST", f"/api/v1/runs/{run.id}/resume")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == RunStatus.QUEUED
    assert sent_tasks == [(LAUNCH, (run.id,), None)]


def test_api_resume_without_a_checkpoint_is_a_400_naming_the_checkpoint(api, make_run, alice, sent_tasks):
    run = make_run(RunStatus.FAILED, checkpoint=None)
    response = api(alice, "POST", f"/api/v1/runs/{run.id}/resume")
    assert response.status_code == 400
    assert "checkpoint" in response.json()["errors"]
    assert api(alice, "POST", f"/api/v1/runs/{run.id}/restart").status_code == 202


@pytest.mark.parametrize(
    ("person", "expected"), [("alice", 202), ("carol", 202), ("bob", 403), ("charlie", 404), (None, 401)]
)
def test_api_resume_permission_matrix(api, make_run, person, expected, request, sent_tasks):
    run = make_run(RunStatus.FAILED)
    user = request.getfixturevalue(person) if person else None
    response = api(user, "POST", f"/api/v1/runs/{run.id}/resume")
    assert response.status_code == expected, response.content
    assert Run.objects.get(pk=run.pk).status == (RunStatus.QUEUED if expected == 202 else RunStatus.FAILED)


@pytest.mark.parametrize(
    ("person", "expected"), [("alice", 204), ("carol", 403), ("bob", 403), ("charlie", 404), (None, 401)]
)
def test_api_delete_permission_matrix(api, make_run, person, expected, request):
    run = make_run(RunStatus.FAILED)
    user = request.getfixturevalue(person) if person else None
    response = api(user, "DELETE", f"/api/v1/runs/{run.id}")
    assert response.status_code == expected, response.content
    assert Run.objects.filter(pk=run.pk).exists() == (expected != 204)


def test_api_archive_and_unarchive(api, make_run, carol, bob, project):
    run = make_run(RunStatus.COMPLETED)
    assert api(bob, "POST", f"/api/v1/runs/{run.id}/archive").status_code == 403
    response = api(carol, "POST", f"/api/v1/runs/{run.id}/archive")
    assert response.status_code == 200 and response.json()["archived"] is True
    listed = api(carol, "GET", f"/api/v1/projects/{project.id}/runs").json()["runs"]
    assert run.id not in [r["id"] for r in listed]
    assert api(carol, "POST", f"/api/v1/runs/{run.id}/unarchive").json()["archived"] is False


# --- the run page ------------------------------------------------------------------


def test_the_run_page_offers_resume_with_the_checkpoint_step_and_lists_the_attempts(
    client, make_run, alice, sent_tasks
):
    run = make_run(RunStatus.QUEUED, checkpoint=None, attempt=0)
    transitions.claim_for_launch(run.id, "host-a")
    Checkpoint.objects.create(run=run, step=40, path="checkpoints/step_000040")
    transitions.finish(run.id, 1, RunStatus.FAILED, "Traceback: <script>alert(1)</script>")
    client.force_login(alice)
    page = client.get(f"/runs/{run.id}/").content.decode()
    assert "Resume from step 40" in page and 'id="delete-link"' in page
    assert 'id="attempt-1"' in page and "host-a" in page
    assert "&lt;script&gt;" in page and "<script>alert(1)" not in page
    response = client.post(f"/runs/{run.id}/resume")
    assert response.status_code == 302 and Run.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_the_run_page_offers_restart_without_a_checkpoint_and_nothing_to_a_viewer(
    client, make_run, alice, bob
):
    run = make_run(RunStatus.FAILED, checkpoint=None)
    client.force_login(alice)
    page = client.get(f"/runs/{run.id}/").content.decode()
    assert 'id="restart-button"' in page and 'id="resume-button"' not in page
    client.force_login(bob)
    page = client.get(f"/runs/{run.id}/").content.decode()
    assert 'id="restart-button"' not in page and 'id="delete-link"' not in page
    assert 'id="archive-button"' not in page


def test_deleting_from_the_page_asks_first(client, make_run, alice, settings, tmp_path):
    settings.RUNS_DIR = tmp_path / "runs"
    run = make_run(RunStatus.CANCELLED)
    client.force_login(alice)
    confirm = client.get(f"/runs/{run.id}/delete")
    assert confirm.status_code == 200 and b'id="confirm-delete"' in confirm.content
    assert Run.objects.filter(pk=run.pk).exists()
    done = client.post(f"/runs/{run.id}/delete")
    assert done.status_code == 302 and done["Location"] == f"/projects/{run.project_id}/"
    assert not Run.objects.filter(pk=run.pk).exists()


def test_new_run_from_this_one_fills_the_form_with_the_runs_config(
    client, make_run, alice, charlie, other_team
):
    config = preset("tiny-cpu").to_dict()
    config["train"]["seed"] = 4242
    run = make_run(RunStatus.COMPLETED, config=config)
    client.force_login(alice)
    page = client.get(f"/projects/{run.project_id}/runs/new?from={run.id}").content.decode()
    assert 'name="train.seed"' in page and 'value="4242"' in page
    # Another team's run is not found, even from Alice's own project's form.
    rivals = Project.objects.create(team=other_team, name="rivals", created_by=charlie)
    theirs = Run.objects.create(project=rivals, name="secret", config=config, status=RunStatus.COMPLETED)
    assert client.get(f"/projects/{run.project_id}/runs/new?from={theirs.id}").status_code == 404
    assert client.get(f"/projects/{run.project_id}/runs/new?from=abc").status_code == 404


# --- audit log ---------------------------------------------------------------------


def test_resume_restart_recovery_and_delete_are_in_the_teams_audit_log(make_run, alice, team, sent_tasks):
    from webapp.audit.models import Action, AuditEvent

    resumed = make_run(RunStatus.FAILED, checkpoint=40)
    resume_run(user=alice, run=resumed)
    restarted = make_run(RunStatus.CANCELLED, checkpoint=None)
    restart_run(user=alice, run=restarted)
    recovered = make_run(RunStatus.LOST, config=_config_with_restarts(1))
    assert recover_lost_run(recovered.id)
    deleted = make_run(RunStatus.COMPLETED)
    delete_run(user=alice, run=deleted)

    events = {(e.action, e.target_id): e for e in AuditEvent.objects.filter(team=team, target_type="run")}
    by_alice = events[(Action.RUN_RESUMED, str(resumed.id))]
    assert by_alice.actor == alice and by_alice.details["how"] == "resume"
    assert by_alice.details["from_step"] == 40
    assert events[(Action.RUN_RESUMED, str(restarted.id))].details["how"] == "restart"
    automatic = events[(Action.RUN_RESUMED, str(recovered.id))]
    assert automatic.actor is None and automatic.details["how"] == "recovery"
    gone = events[(Action.RUN_DELETED, str(deleted.id))]
    assert gone.actor == alice and gone.target_label == deleted.name


def test_a_refused_resume_or_delete_leaves_no_audit_entry(make_run, alice, bob, team):
    from webapp.audit.models import AuditEvent

    with pytest.raises(InputError):
        resume_run(user=alice, run=make_run(RunStatus.FAILED, checkpoint=None))
    with pytest.raises(PermissionDenied):
        delete_run(user=bob, run=make_run(RunStatus.FAILED))
    assert not AuditEvent.objects.filter(team=team).exists()


def test_the_api_run_lists_its_attempts(api, make_run, alice, sent_tasks):
    run = make_run(RunStatus.QUEUED, checkpoint=None, attempt=0)
    transitions.claim_for_launch(run.id, "host-a")
    transitions.finish(run.id, 1, RunStatus.FAILED, "out of memory")
    body = api(alice, "GET", f"/api/v1/runs/{run.id}").json()
    assert body["archived"] is False
    [attempt] = body["attempts"]
    assert attempt["number"] == 1 and attempt["kind"] == "launch" and attempt["worker"] == "host-a"
    assert attempt["status"] == "failed" and attempt["reason"] == "out of memory" and attempt["ended_at"]


def test_new_run_from_this_one_names_a_run_it_started_from_by_reference(
    client, make_run, alice, settings, tmp_path
):
    settings.RUNS_DIR = tmp_path / "runs"
    parent = make_run(RunStatus.COMPLETED, checkpoint=20)
    config = preset("tiny-cpu").to_dict()
    config["train"]["init_from"] = str((parent.run_dir / "checkpoints" / "step_000020").resolve())
    child = make_run(RunStatus.COMPLETED, config=config)
    client.force_login(alice)
    page = client.get(f"/projects/{child.project_id}/runs/new?from={child.id}").content.decode()
    assert f"run:{parent.id}:20" in page and str(parent.run_dir) not in page
