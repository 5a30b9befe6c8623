"""The run page's SSE stream, on the polling path against the real database."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.utils import timezone

from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunLog, RunStatus
from webapp.runs.stream import StreamCursor, read_updates, run_events

pytestmark = pytest.mark.django_db(transaction=True)


def events(chunks: list[str]) -> list[tuple[str, dict]]:
    out = []
    for chunk in chunks:
        chunk = "\n".join(line for line in chunk.split("\n") if not line.startswith("id: "))
        if chunk.startswith("event: "):
            name, data = chunk.split("\n")[:2]
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def add_points(run: Run, key: str, steps: range) -> None:
    upsert_points(run.id, [Point(key, s, 10.0 / s, float(s)) for s in steps])


def test_read_updates_sends_only_new_points_and_logs(run):
    add_points(run, "train/loss", range(1, 4))
    RunLog.objects.create(run=run, seq=1, time=1.0, message="hello")
    cursor = StreamCursor(step=1)
    update = read_updates(run.id, cursor)
    assert update.payload["points"] == {"train/loss": [[2, 5.0], [3, 10.0 / 3]]}
    assert [entry["message"] for entry in update.payload["logs"]] == ["hello"]
    assert update.payload["status"] == "queued" and not update.final and update.caught_up
    assert read_updates(run.id, cursor).payload is None  # nothing new, nothing sent
    add_points(run, "val/loss", range(4, 5))
    assert read_updates(run.id, cursor).payload["points"] == {"val/loss": [[4, 2.5]]}


def test_stream_yields_points_as_they_arrive_and_ends_when_final(run):
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, started_at=timezone.now())
    add_points(run, "train/loss", range(1, 3))

    async def consume() -> list[str]:
        chunks = []
        stream = run_events(run.id, StreamCursor(), poll_seconds=0.05)
        async for chunk in stream:
            chunks.append(chunk)
            got = events(chunks)
            if len(got) == 1:
                # The trainer logs more, then finishes: the stream must pick both up.
                await asyncio.to_thread(add_points, run, "train/loss", range(3, 5))
                await asyncio.to_thread(
                    lambda: Run.objects.filter(pk=run.pk).update(
                        status=RunStatus.COMPLETED, step=4, last_loss=2.5
                    )
                )
        return chunks

    chunks = asyncio.run(asyncio.wait_for(consume(), timeout=20))
    got = events(chunks)
    assert got[0][0] == "update" and got[0][1]["points"]["train/loss"] == [[1, 10.0], [2, 5.0]]
    later = [p for name, data in got[1:] if name == "update" for p in data["points"].get("train/loss", [])]
    assert [p[0] for p in later] == [3, 4]
    assert got[-1] == ("end", {"status": "completed"})
    assert got[-2][1]["status"] == "completed" and got[-2][1]["last_loss"] == 2.5


def test_stream_of_a_finished_run_sends_its_state_and_ends(make_run):
    done = make_run(status=RunStatus.FAILED, error="Traceback (most recent call last):\nBoom")

    async def consume() -> list[str]:
        return [chunk async for chunk in run_events(done.id, StreamCursor(), poll_seconds=0.05)]

    got = events(asyncio.run(asyncio.wait_for(consume(), timeout=10)))
    assert got[0][1]["status"] == "failed" and "Boom" in got[0][1]["error"]
    assert got[-1][0] == "end"


def test_stream_view_answers_event_stream(async_client, alice, make_run):
    done = make_run(status=RunStatus.COMPLETED, step=2, last_loss=1.5)
    add_points(done, "train/loss", range(1, 3))

    async def fetch():
        await async_client.aforce_login(alice)
        response = await async_client.get(f"/runs/{done.id}/stream?since=1")
        return response, b"".join([chunk async for chunk in response.streaming_content]).decode()

    response, body = asyncio.run(fetch())
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    got = events(body.split("\n\n"))
    assert got[0][1]["points"] == {"train/loss": [[2, 5.0]]} and got[-1][0] == "end"
    assert "id: 2:-1\n" in body  # what a reconnecting browser sends back


def test_reconnect_resumes_from_last_event_id(async_client, alice, make_run):
    done = make_run(status=RunStatus.COMPLETED, step=3)
    add_points(done, "train/loss", range(1, 4))

    async def fetch():
        await async_client.aforce_login(alice)
        response = await async_client.get(
            f"/runs/{done.id}/stream?since=-1", headers={"Last-Event-ID": "2:-1"}
        )
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    got = events(asyncio.run(fetch()).split("\n\n"))
    assert got[0][1]["points"] == {"train/loss": [[3, 10.0 / 3]]}


@pytest.mark.services
def test_live_message_wakes_the_stream_before_the_idle_poll(run, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs RUNWRIGHT_REDIS_URL")
    from webapp.live import publish

    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)

    async def consume() -> float:
        loop = asyncio.get_running_loop()
        # The idle poll is a minute away: only the Redis message can bring the new point in time.
        stream = run_events(run.id, StreamCursor(), live_idle_seconds=60)
        assert (await anext(stream)).startswith("retry:")
        first = await anext(stream)  # the initial state
        assert '"status":"running"' in first
        await asyncio.to_thread(add_points, run, "train/loss", range(1, 2))
        waiter = asyncio.ensure_future(anext(stream))
        start = loop.time()
        while not waiter.done():  # the subscription is asynchronous: publish until it is heard
            await asyncio.to_thread(publish, run.id, {"run_id": run.id, "points": {}})
            await asyncio.wait([waiter], timeout=0.2)
        chunk = waiter.result()
        await stream.aclose()
        assert '"train/loss":[[1,10.0]]' in chunk
        return loop.time() - start

    assert asyncio.run(asyncio.wait_for(consume(), timeout=20)) < 10
