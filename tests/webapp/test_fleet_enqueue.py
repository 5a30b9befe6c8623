"""With the fleet on, the web's launch of a run goes to the scheduler, on its queue; off, nothing changes."""

from __future__ import annotations

import pytest

from webapp import enqueue


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, tuple, dict]]:
    calls: list[tuple[str, tuple, dict]] = []
    monkeypatch.setattr(
        enqueue.app, "send_task", lambda name, args=None, **options: calls.append((name, args, options))
    )
    return calls


def test_the_scheduler_task_is_registered_under_the_name_the_web_sends():
    import workers
    import workers.scheduler

    assert workers.scheduler.schedule_runs.name == enqueue.SCHEDULE_RUNS
    assert enqueue.SCHEDULE_RUNS in workers.app.tasks
    assert workers.app.conf.beat_schedule["schedule-runs"]["task"] == enqueue.SCHEDULE_RUNS


def test_with_the_fleet_a_launch_goes_to_the_scheduler_queue(settings, sent):
    settings.FLEET_ENABLED = True
    settings.SCHEDULER_QUEUE = "scheduler"
    enqueue.send(enqueue.LAUNCH_RUN, 7, on_failure=lambda *a: pytest.fail("not a failure"))
    enqueue.send(enqueue.RUN_EVAL_JOB, 8, on_failure=lambda *a: pytest.fail("not a failure"))
    assert sent[0] == (enqueue.SCHEDULE_RUNS, (7,), {"queue": "scheduler"})
    assert sent[1][0] == enqueue.RUN_EVAL_JOB  # eval jobs are not scheduled by the fleet


def test_without_the_fleet_a_launch_goes_straight_to_the_workers(settings, sent):
    settings.FLEET_ENABLED = False
    enqueue.send(enqueue.LAUNCH_RUN, 7, on_failure=lambda *a: pytest.fail("not a failure"))
    assert sent == [(enqueue.LAUNCH_RUN, (7,), {})]
