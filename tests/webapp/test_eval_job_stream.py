"""The eval job page follows its job through the live mechanism of run pages: an SSE stream
(pushed over Redis when there is one, read from the database otherwise), the status JSON
for the polling fallback the client chooses."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from django.conf import settings
from django.db import connection

from webapp import live
from webapp.evals import transitions
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus, ModelSource
from webapp.process_job_stream import job_events

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")


def _job(project) -> EvalJob:
    return EVAL_STATES.create(
        EvalJob.objects, EvalStatus.QUEUED, project=project, source=ModelSource.HF, hf_path="m", tasks=["t"]
    )


def _events(chunks: list[str]) -> list[tuple[str, dict]]:
    out = []
    for chunk in chunks:
        if chunk.startswith("event: "):
            name, data = chunk.split("\n")[:2]
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def _follow(job: EvalJob, change, **options) -> list[tuple[str, dict]]:
    """The stream's events while ``change(step)`` moves the job on after each update it sends."""

    async def consume() -> list[tuple[str, dict]]:
        chunks: list[str] = []
        changes = []  # run beside the stream, which goes on to wait (and subscribe) meanwhile
        async for chunk in job_events(transitions.JOBS, job.id, **options):
            chunks.append(chunk)
            if chunk.startswith("event: update"):
                changes.append(asyncio.create_task(asyncio.to_thread(change, len(_events(chunks)))))
        await asyncio.gather(*changes)
        return _events(chunks)

    return asyncio.run(asyncio.wait_for(consume(), timeout=30))


def _run_job_to_the_end(job: EvalJob, before_each=lambda: None):
    def change(updates: int) -> None:
        if updates > 3:
            return  # the end: nothing more to change
        before_each()
        if updates == 1:
            transitions.JOBS.claim(job.id, "test-worker")
        elif updates == 2:
            transitions.record_progress(job.id, 0.5, "hellaswag")
        elif updates == 3:
            transitions.finish(job.id, EvalStatus.COMPLETED, results={"results": {}})
        connection.close()  # this thread's own connection: the test database is dropped after

    return change


@pytest.mark.django_db(transaction=True)
def test_without_redis_the_stream_reads_each_change_from_the_database(project, settings):
    settings.REDIS_URL = ""
    job = _job(project)
    got = _follow(job, _run_job_to_the_end(job), poll_seconds=0.05)
    states = [data for name, data in got if name == "update"]
    assert [(s["status"], s["progress"]) for s in states] == [
        ("queued", 0.0),
        ("running", 0.0),
        ("running", 0.5),
        ("completed", 1.0),
    ]
    assert states[2]["current_task"] == "hellaswag"
    assert got[-1][0] == "end" and got[-1][1]["status"] == "completed" and not got[-1][1]["is_active"]


def _subscribed(job_id: int) -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return (
            dict(client.pubsub_numsub(live.eval_channel(job_id))).get(live.eval_channel(job_id).encode(), 0)
            > 0
        )
    finally:
        client.close()


@needs_redis
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_each_change_is_pushed_to_the_stream(project):
    """The stream never reads the database after connecting (its idle re-read is far off):
    every change after the first arrives because its writer published it."""
    job = _job(project)

    def wait_for_subscription() -> None:
        deadline = time.monotonic() + 10
        while not _subscribed(job.id):
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.02)

    started = time.monotonic()
    got = _follow(job, _run_job_to_the_end(job, wait_for_subscription), idle_seconds=60)
    assert time.monotonic() - started < 30  # well inside the idle re-read: pushed, not read
    states = [data for name, data in got if name == "update"]
    assert [(s["status"], s["progress"]) for s in states] == [
        ("queued", 0.0),
        ("running", 0.0),
        ("running", 0.5),
        ("completed", 1.0),
    ]
    assert got[-1][0] == "end"


@pytest.mark.django_db
def test_the_job_page_names_its_stream_and_its_status(client, alice, project):
    job = _job(project)
    client.force_login(alice)
    page = client.get(f"/evals/{job.id}/").content.decode()
    assert f'data-stream-url="/evals/{job.id}/stream"' in page
    assert f'data-status-url="/evals/{job.id}/status"' in page


@pytest.mark.django_db
def test_another_teams_job_stream_is_404_and_a_stranger_is_asked_to_log_in(client, charlie, project):
    job = _job(project)
    assert client.get(f"/evals/{job.id}/stream").status_code == 401
    client.force_login(charlie)
    assert client.get(f"/evals/{job.id}/stream").status_code == 404
