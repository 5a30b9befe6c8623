"""The sweep page follows its SSE stream: the sweep's whole state each time one of its runs (or the
sweep itself) changes, pushed over Redis from the writes or read from the database without Redis,
then ``end`` once the sweep is over; the polled JSON stays the fallback the client chooses."""

from __future__ import annotations

import asyncio
import gc
import json
import time

import pytest
import redis
from django.conf import settings
from django.db import connection

from webapp import live
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from webapp.sweeps.models import Sweep
from webapp.sweeps.services import cancel_sweep, create_sweep
from webapp.sweeps.stream import sweep_events

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")


def spec(**fields):
    grid = {"optim.lr": {"values": [1e-3, 3e-3, 1e-2]}}
    return {"preset": "tiny-cpu", "method": "grid", "parameters": grid, "concurrency": 1, **fields}


def runs_of(sweep: Sweep) -> list[Run]:
    return list(Run.objects.filter(sweep=sweep).order_by("id"))


def events(chunks: list[str]) -> list[tuple[str, dict]]:
    out = []
    for chunk in chunks:
        for kind in ("update", "end"):
            if f"event: {kind}\n" in chunk:
                out.append((kind, json.loads(chunk.split("data: ", 1)[1])))
    return out


def follow(sweep: Sweep, changes: list, **options) -> list[tuple[str, dict]]:
    """The stream's events while ``changes[i]()`` runs (in a thread) after the i-th update; until its end."""

    async def consume() -> list[tuple[str, dict]]:
        chunks: list[str] = []
        stream = sweep_events(sweep.id, sweep.project_id, **options)
        try:
            async for chunk in stream:
                chunks.append(chunk)
                if "event: update" in chunk:
                    done = len([e for e in events(chunks) if e[0] == "update"])
                    if done <= len(changes):
                        await asyncio.to_thread(in_thread, changes[done - 1])
        finally:
            await stream.aclose()
        return events(chunks)

    try:
        return asyncio.run(asyncio.wait_for(consume(), timeout=30))
    finally:
        gc.collect()  # the stream's reader threads are gone: their database connections close with them


def in_thread(change) -> None:
    try:
        change()
    finally:
        connection.close()


def start(run: Run) -> int:
    claimed = transitions.claim_for_launch(run.id, "worker-1")
    assert claimed is not None
    return claimed.attempt


def progress(run: Run, attempt: int, step: int) -> None:
    transitions.record_progress(run.id, attempt, transitions.Progress(offset=step, step=step, running=True))


@pytest.mark.django_db(transaction=True)
def test_without_redis_each_change_of_a_trial_is_read_and_the_end_closes_the_stream(
    alice, project, settings, sent_tasks
):
    settings.REDIS_URL = ""
    sweep = create_sweep(user=alice, project=project, spec=spec())
    (first,) = runs_of(sweep)
    attempt = start(first)
    got = follow(
        sweep,
        [
            lambda: progress(first, attempt, 3),  # a step further
            lambda: transitions.finish(first.id, attempt, RunStatus.COMPLETED),  # its end: the next launches
            lambda: cancel_sweep(user=alice, sweep=sweep),  # the sweep is over
        ],
        poll_seconds=0.05,
        min_interval=0.0,
    )
    kinds = [kind for kind, _ in got]
    assert kinds[-1] == "end" and got[-1][1]["status"] == "cancelled"
    updates = [state for kind, state in got if kind == "update"]
    assert updates[0]["trials"][0]["status"] == "starting" and updates[0]["trials"][1]["status"] == "pending"
    assert any(u["trials"][0]["step"] == 3 for u in updates)
    assert any(u["trials"][0]["status"] == "completed" and u["trials"][1]["run_id"] for u in updates)
    # Nothing is sent twice: each update differs from the one before.
    assert all(a != b for a, b in zip(updates, updates[1:], strict=False))


@pytest.mark.django_db(transaction=True)
def test_without_redis_nothing_is_sent_while_nothing_changes(alice, project, settings, sent_tasks):
    settings.REDIS_URL = ""
    sweep = create_sweep(user=alice, project=project, spec=spec())

    async def consume() -> list[str]:
        stream = sweep_events(
            sweep.id, sweep.project_id, poll_seconds=0.05, keepalive_seconds=0.3, max_seconds=1
        )
        return [chunk async for chunk in stream]

    try:
        chunks = asyncio.run(asyncio.wait_for(consume(), timeout=10))
    finally:
        gc.collect()
    assert [kind for kind, _ in events(chunks)] == ["update"] and ": keepalive\n\n" in chunks


def subscribed(project_id: int) -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        name = live.project_channel(project_id)
        return dict(client.pubsub_numsub(name)).get(name.encode(), 0) > 0
    finally:
        client.close()


def when_subscribed(project_id: int, change):
    def run() -> None:
        deadline = time.monotonic() + 10
        while not subscribed(project_id):
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.02)
        change()

    return run


@needs_redis
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_each_change_is_pushed_and_other_runs_of_the_project_are_ignored(
    alice, project, sent_tasks
):
    """The stream's idle read is a minute away: each change arrives because its writer announced it."""
    sweep = create_sweep(user=alice, project=project, spec=spec())
    (first,) = runs_of(sweep)
    attempt = start(first)
    stranger = Run.objects.create(project=project, name="not in the sweep", config=first.config)

    def stranger_then_trial() -> None:
        # An announcement of a run outside the sweep is not read; the trial's progress is.
        live.publish(stranger.id, {"run_id": stranger.id})
        progress(first, attempt, 5)
        live.publish(first.id, {"run_id": first.id})

    started = time.monotonic()
    got = follow(
        sweep,
        [
            when_subscribed(project.id, stranger_then_trial),
            lambda: transitions.finish(first.id, attempt, RunStatus.COMPLETED),  # announced after commit
            lambda: cancel_sweep(user=alice, sweep=sweep),  # the sweep's own announcement
        ],
        idle_seconds=60,
        min_interval=0.0,
    )
    assert time.monotonic() - started < 30
    updates = [state for kind, state in got if kind == "update"]
    assert updates[1]["trials"][0]["step"] == 5
    assert updates[2]["trials"][0]["status"] == "completed"
    assert got[-1][0] == "end" and got[-1][1]["status"] == "cancelled"


@pytest.mark.django_db
def test_the_sweep_page_names_its_stream_and_strangers_cannot_open_it(
    client, alice, charlie, project, sent_tasks
):
    sweep = create_sweep(user=alice, project=project, spec=spec())
    url = f"/sweeps/{sweep.id}/stream"
    assert client.get(url).status_code == 401
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    client.force_login(alice)
    page = client.get(f"/sweeps/{sweep.id}/").content.decode()
    assert f'data-stream-url="{url}"' in page and f'data-poll-url="/sweeps/{sweep.id}/data"' in page
