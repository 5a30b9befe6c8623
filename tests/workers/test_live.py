"""Live updates: what the ingester publishes after a batch, how it reaches a listener, the tail's wake-up."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.conf import settings

from modelcore.events import EVENTS_FILE, EventWriter
from webapp import live
from webapp.runs.models import RunLog
from webapp.runs.updates import StreamCursor, read_updates
from workers import ingest

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")


@needs_redis
@pytest.mark.services
def test_a_published_message_reaches_a_listener():
    message = {
        "run_id": 424242,
        "status": "running",
        "step": 3,
        "last_loss": 2.5,
        "points": {"train/loss": [[3, 2.5]]},
        "logs": [],
    }

    async def roundtrip():
        stream = live.listen(424242, keepalive_seconds=0.2)
        try:
            assert await anext(stream) == {}  # a keepalive: we are subscribed now
            assert live.publish(424242, message) == 1
            while (got := await anext(stream)) == {}:
                pass
            return got
        finally:
            await stream.aclose()

    assert asyncio.run(asyncio.wait_for(roundtrip(), 10)) == message


def test_without_redis_nothing_is_published(settings):
    settings.REDIS_URL = ""
    assert live.publish(1, {"run_id": 1}) == 0
    with pytest.raises(RuntimeError, match="RUNWRIGHT_REDIS_URL"):
        asyncio.run(anext(live.listen(1)))


# --- the message the ingester builds, and the tail that wakes it ---------------------------


@pytest.mark.django_db
def test_the_ingested_batch_is_announced_as_the_rows_the_database_holds(make_run, tmp_path):
    run = make_run(status="running", attempt=1)
    with EventWriter(tmp_path) as writer:
        writer.metric(1, {"train/loss": 4.0})
        writer.metric(2, {"train/loss": 3.0, "train/lr": 0.001})
        writer.metric(2, {"train/loss": 2.5})  # the same step again: the last value is stored
        writer.log("step 2 done")
        writer.metric(3, {"train/loss": float("nan")})  # stored as a gap
    before = StreamCursor()
    read_updates(run.id, before)  # what a stream had before the batch
    batch = ingest.ingest_new_events(run, tmp_path / EVENTS_FILE)
    message = ingest.live_message(run, batch)

    # The same update a stream reading the database from its cursor would send.
    from_db = read_updates(run.id, before).payload
    assert message["update"]["points"] == from_db["points"]
    assert message["update"]["points"]["train/loss"] == [[1, 4.0], [2, 2.5], [3, None]]
    assert message["update"]["logs"] == from_db["logs"]
    assert [entry["message"] for entry in message["update"]["logs"]] == ["step 2 done"]
    assert message["points_after"] == 0 and message["points_through"] == before.point_seq  # seqs start at 1
    assert message["logs_after"] == -1 and message["update"]["logs"][-1]["id"] == before.log_id
    assert message["update"]["step"] == 3 and message["update"]["status"] == "running"

    # The next batch continues where this one ended.
    with EventWriter(tmp_path) as writer:
        writer.metric(4, {"train/loss": 2.0})
    later = ingest.live_message(run, ingest.ingest_new_events(run, tmp_path / EVENTS_FILE))
    assert later["points_after"] == message["points_through"]
    assert later["points_through"] == message["points_through"] + 1
    assert later["update"]["logs"] == [] and later["logs_after"] is None
    assert RunLog.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_a_batch_with_a_skipped_line_and_relogged_steps_is_announced_as_stored(make_run, tmp_path):
    """The update is built from the rows as written (no read-back): replaced values and the
    skipped-lines count follow the batch's points in seq order, as a stream reads them."""
    run = make_run(status="running", attempt=1)
    with EventWriter(tmp_path) as writer:
        for step in (1, 2, 3):
            writer.metric(step, {"train/loss": 5.0 - step})
    ingest.ingest_new_events(run, tmp_path / EVENTS_FILE)
    before = StreamCursor()
    read_updates(run.id, before)
    with EventWriter(tmp_path) as writer:
        writer.metric(2, {"train/loss": 9.0})  # a resumed attempt re-logs step 2
    with open(tmp_path / EVENTS_FILE, "a") as f:
        f.write("not json\n")
    with EventWriter(tmp_path) as writer:
        writer.metric(4, {"train/loss": 0.5})
    message = ingest.live_message(run, ingest.ingest_new_events(run, tmp_path / EVENTS_FILE))

    from_db = read_updates(run.id, before).payload
    assert message["update"]["points"] == from_db["points"]
    assert message["update"]["points"] == {"train/loss": [[2, 9.0], [4, 0.5]], ingest.SKIPPED_KEY: [[4, 1.0]]}
    assert (
        message["points_through"] == before.point_seq
        and message["points_through"] - message["points_after"] == 3
    )


@pytest.mark.django_db
def test_a_status_change_is_announced_without_rows(make_run):
    run = make_run(status="cancelled")
    message = ingest.live_message(run)
    assert message["update"]["status"] == "cancelled" and message["update"]["points"] == {}
    assert message["points_after"] is None and message["logs_after"] is None


def test_the_events_watch_wakes_when_a_line_lands_not_after_its_timeout(tmp_path):
    path = tmp_path / EVENTS_FILE
    path.write_bytes(b"")
    watch = ingest.EventsWatch(path)

    def append_later() -> None:
        time.sleep(0.2)
        with path.open("ab") as f:
            f.write(b'{"seq": 0}\n')

    threading.Thread(target=append_later).start()
    start = time.monotonic()
    watch.wait(0, timeout=30)
    assert time.monotonic() - start < 10  # woken by the line, not the 30-s timeout
    assert watch.seen == path.stat().st_size


def test_the_events_watch_sleeps_on_a_torn_line_it_has_already_seen(tmp_path):
    path = tmp_path / EVENTS_FILE
    path.write_bytes(b'{"seq": 0, "ty')  # the trainer is mid-write: the reader left it
    watch = ingest.EventsWatch(path)
    watch.wait(0, timeout=5)  # new bytes: wakes at once
    start = time.monotonic()
    watch.wait(0, timeout=0.3)  # the same torn bytes: no busy loop, waits out its timeout
    assert time.monotonic() - start >= 0.3
