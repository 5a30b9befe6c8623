"""create_run and request_cancel: validation, enqueue after commit, cancel semantics."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from modelcore.config import ConfigError
from webapp import enqueue
from webapp.runs.models import Run, RunStatus
from webapp.runs.services import create_run, enqueue_launch, request_cancel


def test_create_run_stores_full_config_and_enqueues_after_commit(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run = create_run(
            user=alice, project=project, name="", preset="tiny-cpu", overrides={"train": {"seed": 7}}
        )
    assert len(callbacks) == 1 and sent_tasks == [("workers.tasks.launch_run", (run.id,), None)]
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.name == "tiny-cpu #1"
    assert run.config["train"]["seed"] == 7 and set(run.config) == {
        "model",
        "data",
        "optim",
        "parallel",
        "train",
        "eval",
        "launcher",
        "resources",
    }


def test_nothing_is_enqueued_before_commit(alice, project, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        create_run(user=alice, project=project, preset="tiny-cpu")
    assert len(callbacks) == 1 and sent_tasks == []


def test_invalid_config_stores_nothing(alice, project):
    with pytest.raises(ConfigError) as info:
        create_run(user=alice, project=project, preset="tiny-cpu", overrides={"data": {"seq_len": 4096}})
    assert info.value.errors == {"data.seq_len": "must be at most model.max_seq_len (128)"}
    assert not Run.objects.exists()


def test_viewer_cannot_create_run(bob, project):
    with pytest.raises(PermissionDenied):
        create_run(user=bob, project=project, preset="tiny-cpu")


def test_broker_failure_marks_the_run_failed(run, monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(enqueue.app, "send_task", unreachable)
    enqueue_launch(run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "broker unreachable" in run.error


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RunStatus.QUEUED, RunStatus.CANCELLED),
        (RunStatus.STARTING, RunStatus.STARTING),
        (RunStatus.RUNNING, RunStatus.RUNNING),
        (RunStatus.COMPLETED, RunStatus.COMPLETED),
    ],
)
def test_request_cancel(alice, make_run, status, expected):
    run = request_cancel(user=alice, run=make_run(status=status))
    assert run.status == expected
    assert run.cancel_requested is (status != RunStatus.COMPLETED)


def test_viewer_cannot_cancel(bob, run):
    with pytest.raises(PermissionDenied):
        request_cancel(user=bob, run=run)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and not run.cancel_requested
