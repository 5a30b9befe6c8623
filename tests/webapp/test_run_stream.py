"""The run page's SSE stream, on the polling path against the real database."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.utils import timezone

from webapp.metrics.models import MetricPoint
from webapp.metrics.selectors import latest_point_seq
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunLog, RunStatus
from webapp.runs.stream import CatchUp, forward, run_events
from webapp.runs.updates import StreamCursor, read_updates

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


def seq_of(run: Run, key: str, step: int) -> int:
    return MetricPoint.objects.get(run=run, key=key, step=step).seq


def test_read_updates_sends_only_new_points_and_logs(run):
    add_points(run, "train/loss", range(1, 4))
    RunLog.objects.create(run=run, seq=1, time=1.0, message="hello")
    cursor = StreamCursor(point_seq=seq_of(run, "train/loss", 1))
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
    after, last = seq_of(done, "train/loss", 1), seq_of(done, "train/loss", 2)

    async def fetch():
        await async_client.aforce_login(alice)
        response = await async_client.get(f"/runs/{done.id}/stream?after={after}")
        return response, b"".join([chunk async for chunk in response.streaming_content]).decode()

    response, body = asyncio.run(fetch())
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    got = events(body.split("\n\n"))
    assert got[0][1]["points"] == {"train/loss": [[2, 5.0]]} and got[-1][0] == "end"
    assert f"id: {last}:-1\n" in body  # what a reconnecting browser sends back


def test_reconnect_resumes_from_last_event_id(async_client, alice, make_run):
    done = make_run(status=RunStatus.COMPLETED, step=3)
    add_points(done, "train/loss", range(1, 4))
    last_event_id = f"{seq_of(done, 'train/loss', 2)}:-1"

    async def fetch():
        await async_client.aforce_login(alice)
        response = await async_client.get(
            f"/runs/{done.id}/stream?after=-1", headers={"Last-Event-ID": last_event_id}
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


def points_of(updates: list[tuple[str, dict]]) -> list[tuple[str, int, float]]:
    return [
        (key, step, value)
        for name, data in updates
        if name == "update"
        for key, pairs in data["points"].items()
        for step, value in pairs
    ]


@pytest.mark.parametrize("wakeup", ["polling", pytest.param("redis", marks=pytest.mark.services)])
def test_a_key_logged_for_a_step_already_sent_is_still_sent(run, settings, wakeup):
    """val/loss is written after the validation pass, when the stream has read that step's train/loss."""
    if wakeup == "redis":
        if not settings.REDIS_URL:
            pytest.skip("needs RUNWRIGHT_REDIS_URL")
        from webapp.live import publish
    else:
        settings.REDIS_URL = ""
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    add_points(run, "train/loss", range(1, 6))

    async def next_update(stream, write) -> tuple[str, dict]:
        await asyncio.to_thread(write)
        waiter = asyncio.ensure_future(anext(stream))
        while wakeup == "redis" and not waiter.done():  # only a live message can wake it in time
            await asyncio.to_thread(publish, run.id, {"run_id": run.id, "points": {}})
            await asyncio.wait([waiter], timeout=0.2)
        return events([await waiter])[0]

    async def consume():
        stream = run_events(run.id, StreamCursor(), poll_seconds=0.05, live_idle_seconds=60)
        assert (await anext(stream)).startswith("retry:")
        first = events([await anext(stream)])[0]
        late = await next_update(stream, lambda: upsert_points(run.id, [Point("val/loss", 5, 2.5, 9.0)]))
        # A resumed attempt re-logs step 3 with a new value: sent again, with the new value.
        relogged = await next_update(
            stream, lambda: upsert_points(run.id, [Point("train/loss", 3, 1.0, 9.0)])
        )
        await stream.aclose()
        return first, late, relogged

    first, late, relogged = asyncio.run(asyncio.wait_for(consume(), timeout=30))
    assert [p[0] for p in first[1]["points"]["train/loss"]] == [1, 2, 3, 4, 5]
    assert late[1]["points"] == {"val/loss": [[5, 2.5]]}
    assert relogged[1]["points"] == {"train/loss": [[3, 1.0]]}


def test_reconnect_with_last_event_id_has_no_gap_and_no_duplicate(async_client, alice, run, settings):
    settings.REDIS_URL = ""  # the view's stream polls, so this test needs no server
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    add_points(run, "train/loss", range(1, 4))
    RunLog.objects.create(run=run, seq=1, time=1.0, message="before")

    async def first_connection() -> tuple[list[tuple[str, dict]], str]:
        await async_client.aforce_login(alice)
        response = await async_client.get(f"/runs/{run.id}/stream?after=-1&log_after=-1")
        chunks = response.streaming_content
        async for chunk in chunks:
            text = chunk.decode()
            if text.startswith("id: "):
                await chunks.aclose()  # the connection drops after the first update
                return events([text]), text.split("\n")[0].removeprefix("id: ")
        raise AssertionError("no update")

    first, last_event_id = asyncio.run(first_connection())
    # While the browser is away: a late key for an old step, a re-logged step, new steps, logs
    # (one a skip warning, logged under a seq past any the trainer writes).
    upsert_points(run.id, [Point("val/loss", 2, 2.0, 0.0), Point("train/loss", 2, 4.5, 0.0)])
    add_points(run, "train/loss", range(4, 6))
    RunLog.objects.create(run=run, seq=2**62 + 99, time=2.0, level="warning", message="skipped a line")
    RunLog.objects.create(run=run, seq=2, time=3.0, message="after")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)

    async def reconnect() -> list[tuple[str, dict]]:
        response = await async_client.get(
            f"/runs/{run.id}/stream?after=-1&log_after=-1", headers={"Last-Event-ID": last_event_id}
        )
        return events(b"".join([chunk async for chunk in response.streaming_content]).decode().split("\n\n"))

    second = asyncio.run(reconnect())
    assert sorted(points_of(second)) == [
        ("train/loss", 2, 4.5),
        ("train/loss", 4, 2.5),
        ("train/loss", 5, 2.0),
        ("val/loss", 2, 2.0),
    ]
    # Together the two connections sent every write exactly once: what the database holds,
    # plus the first value of the re-logged step.
    sent = points_of(first) + points_of(second)
    assert len(sent) == len(set(sent)) == MetricPoint.objects.filter(run=run).count() + 1
    stored = set(MetricPoint.objects.filter(run=run).values_list("key", "step", "value"))
    assert stored <= set(sent)
    logs = [entry["message"] for _, data in first + second for entry in data.get("logs", [])]
    assert logs == ["before", "skipped a line", "after"]


def test_the_run_page_and_its_series_give_the_stream_its_starting_point(client_for, alice, run):
    add_points(run, "train/loss", range(1, 4))
    RunLog.objects.create(run=run, seq=1, time=1.0, message="hello")
    client = client_for(alice)
    page = client.get(f"/runs/{run.id}/")
    state = json.loads(
        page.content.decode().split('id="stream-state" type="application/json">')[1].split("<")[0]
    )
    assert state["log_after"] == RunLog.objects.get(run=run).id
    cursor = client.get(f"/runs/{run.id}/series").json()["cursor"]
    assert cursor == latest_point_seq(run) == seq_of(run, "train/loss", 3)
    add_points(run, "val/loss", range(3, 4))  # after the chart's read: the stream must bring it
    update = read_updates(run.id, StreamCursor(point_seq=cursor, log_id=state["log_after"]))
    assert update.payload["points"] == {"val/loss": [[3, 10.0 / 3]]} and update.payload["logs"] == []


# --- forwarding the published update ------------------------------------------------------


def message(after: int, through: int, points: dict, *, logs=(), logs_after=None, status="running") -> dict:
    update = {"status": status, "step": 3, "last_loss": 1.0, "cancel_requested": False, "error": ""}
    return {
        "run_id": 1,
        "update": {**update, "duration_s": 2.0, "points": points, "logs": list(logs)},
        "points_after": after,
        "points_through": through,
        "logs_after": logs_after,
    }


def test_forward_sends_a_message_that_continues_the_cursor_and_advances_it():
    cursor = StreamCursor(point_seq=10, log_id=4)
    sent = forward(
        message(10, 12, {"train/loss": [[3, 1.0]]}, logs=[{"id": 7, "message": "hi"}], logs_after=4), cursor
    )
    assert sent["points"] == {"train/loss": [[3, 1.0]]} and sent["logs"][0]["id"] == 7
    assert (cursor.point_seq, cursor.log_id) == (12, 7)
    # The same message again (the catch-up read at connect saw it): nothing new to send.
    assert forward(message(10, 12, {"train/loss": [[3, 1.0]]}), cursor) is None


@pytest.mark.parametrize(
    "late",
    [
        message(11, 13, {"train/loss": [[4, 1.0]]}),  # seq 11 was in a message this stream missed
        message(9, 12, {"train/loss": [[4, 1.0]]}),  # overlaps what was sent
        message(10, None, {"train/loss": [[4, 1.0]]}),  # no range: cannot be placed
        message(10, 10, {}, logs=[{"id": 9}], logs_after=5),  # a log line in between was missed
        message(10, 10, {}, status="completed"),  # the end: the database has the last word
        {"run_id": 1},  # "something changed"
    ],
)
def test_forward_catches_up_from_the_database_after_a_gap(late):
    cursor = StreamCursor(point_seq=10, log_id=4)
    with pytest.raises(CatchUp):
        forward(late, cursor)
    assert (cursor.point_seq, cursor.log_id) == (10, 4)  # nothing applied


def test_a_stream_forwards_the_feed_and_catches_up_what_it_missed(run, settings):
    """Without Redis, one poll per process feeds every stream of the run; none misses a point."""
    settings.REDIS_URL = ""
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    add_points(run, "train/loss", range(1, 3))

    async def watch(stream) -> list[tuple[str, dict]]:
        got = []
        async for chunk in stream:
            got += events([chunk])
        return got

    async def consume():
        streams = [run_events(run.id, StreamCursor(), poll_seconds=0.05) for _ in range(3)]
        watchers = [asyncio.ensure_future(watch(s)) for s in streams]
        for step in range(3, 13):
            await asyncio.sleep(0.03)
            await asyncio.to_thread(add_points, run, "train/loss", range(step, step + 1))
        await asyncio.to_thread(lambda: Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED))
        return await asyncio.gather(*watchers)

    for got in asyncio.run(asyncio.wait_for(consume(), timeout=30)):
        assert sorted(p[1] for p in points_of(got) if p[0] == "train/loss") == list(range(1, 13))
        assert got[-1] == ("end", {"status": "completed"})


@pytest.mark.services
def test_the_stream_forwards_the_published_update_without_reading_the_database(run, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs RUNWRIGHT_REDIS_URL")
    from webapp.live import publish

    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    add_points(run, "train/loss", range(1, 3))
    last = seq_of(run, "train/loss", 2)
    # A point the database does not hold: only a forwarded message can bring it.
    probe = message(last, last + 1, {"probe": [[7, 7.0]]})

    async def consume() -> dict:
        stream = run_events(run.id, StreamCursor(), live_idle_seconds=60)
        assert (await anext(stream)).startswith("retry:")
        first = events([await anext(stream)])[0]
        assert [p[0] for p in first[1]["points"]["train/loss"]] == [1, 2]
        waiter = asyncio.ensure_future(anext(stream))
        while not waiter.done():  # the subscription is asynchronous: publish until it is heard
            await asyncio.to_thread(publish, run.id, probe)
            await asyncio.wait([waiter], timeout=0.2)
        chunk = waiter.result()
        await stream.aclose()
        assert chunk.startswith(f"id: {last + 1}:-1\n")
        return events([chunk])[0][1]

    assert asyncio.run(asyncio.wait_for(consume(), timeout=20))["points"] == {"probe": [[7, 7.0]]}
