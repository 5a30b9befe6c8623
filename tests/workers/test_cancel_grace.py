"""Cancel waits for the trainer's checkpoint, up to train.cancel_grace_s, before it kills."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from modelcore.config import RunConfig, preset
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from workers.supervisor import cancel_grace_seconds, supervise


def _config(**train) -> dict:
    data = preset("tiny-cpu").to_dict()
    data["train"].update(train)
    return RunConfig.from_dict(data).to_dict()


def test_the_default_grace_grows_with_the_checkpoint():
    tiny = RunConfig.from_dict(_config())
    big = preset("llama-1b")
    assert 30 <= cancel_grace_seconds(tiny) < 31  # a tiny model writes its checkpoint at once
    # About 1.2e9 parameters * 12 bytes at 100 MB/s: minutes, not the 7 s it used to get.
    assert 120 < cancel_grace_seconds(big) < 600
    assert cancel_grace_seconds(RunConfig.from_dict(_config(cancel_grace_s=5))) == 5


def test_cancel_grace_is_validated_like_every_field():
    from modelcore.config import ConfigError

    with pytest.raises(ConfigError, match="train.cancel_grace_s"):
        RunConfig.from_dict(_config(cancel_grace_s=-1))


def _cancel_after_start(run: Run, **options) -> tuple[str, float]:
    """Supervise in a thread, request a cancel once the trainer runs; (status, seconds to stop)."""
    import threading

    result: dict = {}

    def target():
        try:
            result["status"] = supervise(run, poll_seconds=0.1, **options)
        finally:
            result["done"] = time.monotonic()
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not Run.objects.filter(pk=run.id, step__gte=2).exists():
        assert time.monotonic() < deadline, "the fake trainer never logged a step"
        time.sleep(0.05)
    requested = time.monotonic()
    Run.objects.filter(pk=run.id).update(cancel_requested=True)
    thread.join(timeout=60)
    assert not thread.is_alive()
    return result["status"], result["done"] - requested


@pytest.mark.django_db(transaction=True)
def test_cancel_waits_for_a_slow_checkpoint_within_the_grace(make_run, fake_command):
    run = transitions.claim_for_launch(make_run(config=_config(cancel_grace_s=8)).id, "w")
    # Longer than the 7 s the supervisor used to give before SIGKILL.
    status, took = _cancel_after_start(run, command=fake_command("slow-save", 20, "--save-seconds", "7.5"))
    run.refresh_from_db()
    assert status == RunStatus.CANCELLED == run.status
    assert run.error == ""
    assert run.checkpoints.exists()  # written after the slow save: the trainer was not killed
    assert 7.5 <= took < 8.5 + 3
    saving = run.logs.filter(message__contains="saving checkpoint")
    assert saving.exists()  # what the run page's log shows while it waits


@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_slower_than_the_grace_is_killed_with_a_hint(make_run, fake_command):
    run = transitions.claim_for_launch(make_run(config=_config(cancel_grace_s=1)).id, "w")
    status, took = _cancel_after_start(run, command=fake_command("slow-save", 20, "--save-seconds", "30"))
    run.refresh_from_db()
    assert status == RunStatus.CANCELLED == run.status
    assert took < 6
    assert "did not stop within 1 s" in run.error and "train.cancel_grace_s" in run.error
    assert not run.checkpoints.exists()
