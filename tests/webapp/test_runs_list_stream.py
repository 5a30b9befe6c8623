"""The runs list follows its project's stream: "these runs changed", pushed over Redis from where
runs change (ingested batches, status writes) or read from the database without Redis; the page
then reads its own rows again (the polled JSON stays the fallback the client chooses)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import time

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from modelcore.config import resolve
from webapp import live
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from webapp.runs.project_stream import project_events
from workers.ingest import announce_status

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")


def _run(project: Project, name: str, **fields) -> Run:
    return Run.objects.create(project=project, name=name, config=resolve("tiny-cpu").to_dict(), **fields)


def _updates(chunks: list[str]) -> list[dict]:
    out = []
    for chunk in chunks:
        if "event: update" in chunk:
            out.append(json.loads(chunk.split("data: ", 1)[1]))
    return out


def _follow(project_id: int, changes: list, **options) -> tuple[list[dict], float]:
    """The stream's updates while ``changes[i]()`` runs (in a thread) after the i-th update; stops
    after the update that follows the last change. Also: the seconds the changes took to arrive."""

    async def consume() -> tuple[list[dict], float]:
        chunks: list[str] = []
        stream = project_events(project_id, **options)
        started = 0.0
        try:
            async for chunk in stream:
                chunks.append(chunk)
                got = len(_updates(chunks))
                if "event: update" not in chunk:
                    continue
                if got > len(changes):
                    return _updates(chunks), time.monotonic() - started
                if got == 1:
                    started = time.monotonic()
                await asyncio.to_thread(_in_thread, changes[got - 1])
        finally:
            await stream.aclose()
        raise AssertionError("the stream ended early")

    try:
        return asyncio.run(asyncio.wait_for(consume(), timeout=30))
    finally:
        gc.collect()  # the stream's reader threads are gone: their database connections close with them


def _in_thread(change) -> None:
    try:
        change()
    finally:
        connection.close()  # this thread's own connection: the test database is dropped after


@pytest.mark.django_db(transaction=True)
def test_without_redis_the_stream_reads_each_change_from_the_database(project, settings):
    settings.REDIS_URL = ""
    running = _run(project, "running", status=RunStatus.RUNNING, attempt=1)
    made: list[Run] = []
    got, _ = _follow(
        project.id,
        [
            lambda: made.append(_run(project, "new")),  # a run created
            lambda: Run.objects.filter(pk=running.pk).update(step=120),  # a step further
            lambda: transitions.finish(running.id, 1, RunStatus.FAILED, error="boom"),  # its end
        ],
        poll_seconds=0.05,
        min_interval=0.0,
    )
    assert got == [{"changed": []}] * 4  # the first at connect; read from the database: no run named


@pytest.mark.django_db(transaction=True)
def test_without_redis_nothing_is_sent_while_nothing_changes(project, settings):
    settings.REDIS_URL = ""
    _run(project, "idle", status=RunStatus.COMPLETED)

    async def consume() -> list[str]:
        chunks = []
        stream = project_events(project.id, poll_seconds=0.05, keepalive_seconds=0.3, max_seconds=1.0)
        async for chunk in stream:
            chunks.append(chunk)
        return chunks

    chunks = asyncio.run(asyncio.wait_for(consume(), timeout=10))
    assert len(_updates(chunks)) == 1 and ": keepalive\n\n" in chunks  # ended after max_seconds


def _subscribed(project_id: int) -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        name = live.project_channel(project_id)
        return dict(client.pubsub_numsub(name)).get(name.encode(), 0) > 0
    finally:
        client.close()


def _when_subscribed(project_id: int, change):
    def run() -> None:
        deadline = time.monotonic() + 10
        while not _subscribed(project_id):
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.02)
        change()

    return run


@needs_redis
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_each_change_is_pushed_to_the_stream(project):
    """The stream never reads the database for news after connecting (its idle read is a minute
    away): each change arrives because its writer announced it on the project's channel."""
    an_hour_ago = timezone.now() - dt.timedelta(hours=1)
    a = _run(project, "a", status=RunStatus.RUNNING, attempt=1, heartbeat_at=an_hour_ago)
    b = _run(project, "b", status=RunStatus.RUNNING, attempt=1)

    def ingested() -> None:  # the ingester's live update after a batch or a status change
        announce_status(Run.objects.get(pk=a.pk))

    got, took = _follow(
        project.id,
        [
            _when_subscribed(project.id, ingested),
            lambda: transitions.finish(b.id, 1, RunStatus.COMPLETED),  # a status write, after commit
            lambda: transitions.mark_lost_runs(dt.timedelta(minutes=5)),  # the beat's sweep: a is lost
        ],
        idle_seconds=60,
        min_interval=0.0,
    )
    assert took < 30
    assert got == [{"changed": []}, {"changed": [a.id]}, {"changed": [b.id]}, {"changed": [a.id]}]
    assert Run.objects.get(pk=a.pk).status == RunStatus.LOST


@needs_redis
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_a_busy_project_is_merged_into_one_update_per_interval(project):
    runs = [_run(project, f"r{i}", status=RunStatus.RUNNING) for i in range(3)]

    def busy() -> None:
        for _ in range(5):
            for run in runs:
                live.publish(run.id, {"run_id": run.id})

    got, _ = _follow(project.id, [_when_subscribed(project.id, busy)], idle_seconds=60, min_interval=0.5)
    assert got[1] == {"changed": sorted(r.id for r in runs)}


@pytest.mark.django_db
def test_the_runs_page_names_its_stream_and_strangers_cannot_open_it(client, alice, charlie, project):
    assert client.get(f"/projects/{project.id}/runs/stream").status_code == 401
    client.force_login(charlie)
    assert client.get(f"/projects/{project.id}/runs/stream").status_code == 404
    client.force_login(alice)
    page = client.get(f"/projects/{project.id}/").content.decode()
    assert f'data-stream="/projects/{project.id}/runs/stream"' in page
    assert f'data-source="/projects/{project.id}/runs.json"' in page
