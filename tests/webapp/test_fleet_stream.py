"""The Fleet page follows its SSE stream: hosts, the queue and utilisation as the person sees them,
sent again when a host beats (the worker's heartbeat announces on the ``fleet`` channel) or
registers, or read from the database without Redis; the polled JSON is the same state."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time

import pytest
import redis
from django.conf import settings
from django.db import connection

from modelcore.config import preset
from webapp.accounts.models import Team
from webapp.fleet import services
from webapp.fleet.services import GpuInfo
from webapp.fleet.stream import FLEET_CHANNEL, fleet_state
from webapp.projects.models import Project
from webapp.runs.models import Run
from webapp.state_stream import state_events
from workers import fleet as worker_fleet

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")


def updates(chunks: list[str]) -> list[dict]:
    return [json.loads(c.split("data: ", 1)[1]) for c in chunks if "event: update" in c]


def follow(user, changes: list, **options) -> list[dict]:
    """The stream's updates while ``changes[i]()`` runs (in a thread) after the i-th one; stops after the last."""

    async def consume() -> list[dict]:
        chunks: list[str] = []
        stream = state_events(FLEET_CHANNEL, lambda: fleet_state(user, 6), **options)
        try:
            async for chunk in stream:
                chunks.append(chunk)
                if "event: update" not in chunk:
                    continue
                got = len(updates(chunks))
                if got > len(changes):
                    return updates(chunks)
                await asyncio.to_thread(in_thread, changes[got - 1])
        finally:
            await stream.aclose()
        raise AssertionError("the stream ended early")

    try:
        return asyncio.run(asyncio.wait_for(consume(), timeout=30))
    finally:
        gc.collect()


def in_thread(change) -> None:
    try:
        change()
    finally:
        connection.close()


def h100(n: int) -> list[GpuInfo]:
    return [GpuInfo(str(i), "NVIDIA H100", 81559) for i in range(n)]


@pytest.mark.django_db(transaction=True)
def test_without_redis_a_new_host_a_beat_and_a_lease_are_read_from_the_database(bob, project, settings):
    settings.REDIS_URL = ""
    host = services.register_host(name="gpu-1@node", queue="host.gpu-1", gpus=h100(2))
    rivals = Project.objects.create(team=Team.objects.create(name="hidden"), name="secret")
    ours = Run.objects.create(project=project, name="our-run", config=preset("tiny-cpu").to_dict())
    theirs = Run.objects.create(project=rivals, name="their-secret-run", config=preset("tiny-cpu").to_dict())
    got = follow(
        bob,
        [
            lambda: services.register_host(name="cpu-2@node", queue="host.cpu-2", cpu_slots=4),
            lambda: services.beat_host(host.name, {"util": [0.75, 0.5]}, {"0": ours.pk, "1": theirs.pk}),
        ],
        poll_seconds=0.05,
    )
    first, registered, beat = got
    assert "gpu-1@node" in first["hosts_html"] and "cpu-2@node" not in first["hosts_html"]
    assert "cpu-2@node" in registered["hosts_html"]
    assert first["charts"] == [] and beat["charts"][0]["series"] == {"gpu0 util": [0.75], "gpu1 util": [0.5]}
    # Bob's team's run is named on its GPU; the other team's is not.
    assert "our-run" in beat["hosts_html"] and "another team's run" in beat["hosts_html"]
    assert "their-secret-run" not in json.dumps(beat)


def subscribed() -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return dict(client.pubsub_numsub(FLEET_CHANNEL)).get(FLEET_CHANNEL.encode(), 0) > 0
    finally:
        client.close()


@needs_redis
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_the_worker_s_heartbeat_pushes_the_new_sample(bob, project):
    """The stream's idle read is a minute away: the sample arrives because the heartbeat announced it."""
    host = services.register_host(name="cpu-1@node", queue="host.cpu-1", cpu_slots=2)
    stop = threading.Event()

    def one_beat() -> None:
        deadline = time.monotonic() + 10
        while not subscribed():
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.02)
        # The worker's own heartbeat loop, for one beat.
        worker_fleet._stop.clear()
        beat = threading.Thread(target=worker_fleet._beat_forever, args=(host.name, [], 0.05))
        beat.start()
        time.sleep(0.08)
        worker_fleet._stop.set()
        beat.join(5)
        stop.set()

    started = time.monotonic()
    first, beaten = follow(bob, [one_beat], idle_seconds=60, min_interval=0.0)
    assert time.monotonic() - started < 30
    assert first["charts"] == [] and list(beaten["charts"][0]["series"]) == ["cpu load"]


@pytest.mark.django_db
def test_the_fleet_page_names_its_stream_and_its_json_is_the_streamed_state(client, bob):
    services.register_host(name="gpu-1@node", queue="host.gpu-1", gpus=h100(1))
    assert client.get("/fleet/stream").status_code == 401
    client.force_login(bob)
    page = client.get("/fleet/?hours=1").content.decode()
    assert 'data-stream-url="/fleet/stream?hours=1"' in page and 'data-poll-url="/fleet/data?hours=1"' in page
    body = client.get("/fleet/data?hours=1").json()
    assert set(body) == {"hosts_html", "queue_html", "charts", "hours"} and body["hours"] == 1
    assert 'data-host="gpu-1@node"' in body["hosts_html"] and 'id="fleet-queue"' in body["queue_html"]
    bad = client.get("/fleet/data?hours=99")
    assert bad.status_code == 400 and "hours" in bad.json()["errors"]
    assert client.get("/fleet/stream?hours=x").status_code == 400


def gpu_run(project, name: str) -> Run:
    config = preset("tiny-cpu").to_dict()
    config["parallel"].update(num_processes=1, device="auto")
    return Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)


class FleetMessages:
    """What is said on the ``fleet`` channel (Redis's channels span its databases: other processes may talk too)."""

    def __init__(self) -> None:
        self.client = redis.Redis.from_url(settings.REDIS_URL)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(FLEET_CHANNEL)
        self.pubsub.get_message(timeout=1.0)  # the subscription's confirmation

    def wait_for(self, message: dict, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.pubsub.get_message(timeout=0.1)
            if got and json.loads(got["data"]) == message:
                return
        raise AssertionError(f"nothing said {message} on {FLEET_CHANNEL}")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@needs_redis
@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_with_redis_a_placement_and_its_release_push_the_hosts_gpus(bob, project):
    """No host beats here and the idle read is a minute away: the page hears the scheduler itself."""
    from workers import scheduler  # the scheduler's pass, as a worker runs it

    services.register_host(name="gpu-1@node", queue="host.gpu-1", gpus=h100(1))
    run = gpu_run(project, "placed-run")
    said = FleetMessages()

    def place() -> None:
        deadline = time.monotonic() + 10
        while not subscribed():
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.02)
        assert [run_id for run_id, _ in scheduler.schedule().placed] == [run.pk]
        said.wait_for({"runs": [run.pk]})

    def release() -> None:
        Run.objects.filter(pk=run.pk).update(status="cancelled")  # a run that ended before it started
        assert scheduler.schedule().released == [run.pk]
        said.wait_for({"runs": [run.pk]})

    try:
        started = time.monotonic()
        first, placed, released = follow(bob, [place, release], idle_seconds=60, min_interval=0.0)
    finally:
        said.close()
    assert time.monotonic() - started < 30
    assert "placed-run" not in first["hosts_html"]
    assert "placed-run" in placed["hosts_html"] and "1 / 1 GPUs" in placed["hosts_html"], placed["hosts_html"]
    assert "placed-run" not in released["hosts_html"] and "0 / 1 GPUs" in released["hosts_html"]
