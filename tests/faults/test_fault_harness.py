"""The harness's own parts do what the fault tests rely on: the proxy and the point count."""

from __future__ import annotations

import socket
import threading

import pytest
from fault_harness import TcpProxy, point_differences

from modelcore.config import preset
from modelcore.events import EventWriter
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run


def test_harness_proxy_refuses_and_drops_then_accepts_again():
    """The proxy really does what the tests rely on: forward, refuse while down, forward again."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(
                target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(1024), b"")]
            ).start()

    threading.Thread(target=echo, daemon=True).start()
    proxy = TcpProxy(*server.getsockname()).start()
    try:
        live = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        live.sendall(b"ping")
        assert live.recv(4) == b"ping"
        proxy.down()
        assert live.recv(4) == b"", "a live connection must be dropped"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.up()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        again.sendall(b"pong")
        assert again.recv(4) == b"pong"
        again.close()
        live.close()
    finally:
        proxy.close()
        server.close()


def test_point_count_finds_missing_extra_and_changed_points(project, settings, tmp_path):
    settings.RUNS_DIR = tmp_path
    run = Run.objects.create(project=project, name="count", config=preset("tiny-cpu").to_dict())
    with EventWriter(run.run_dir) as events:
        events.metric(1, {"train/loss": 3.0, "train/lr": 0.1})
        events.metric(2, {"train/loss": 2.5, "train/lr": float("nan")})  # written as null
        events.metric(2, {"train/loss": 2.4})  # a re-logged step: its last value is the one logged

    assert point_differences(run) == [
        "4 of 4 logged points missing, e.g. "
        + repr([("train/loss", 1), ("train/loss", 2), ("train/lr", 1), ("train/lr", 2)])
    ]
    logged = [Point("train/loss", 1, 3.0, 0), Point("train/lr", 1, 0.1, 0), Point("train/lr", 2, None, 0)]
    upsert_points(run.id, [*logged, Point("train/loss", 2, 2.5, 0)])
    (changed,) = point_differences(run)
    assert changed.startswith("1 points with another value than logged") and "2.4, 2.5" in changed
    upsert_points(run.id, [Point("train/loss", 2, 2.4, 0)])
    assert point_differences(run) == []
    upsert_points(run.id, [Point("train/loss", 3, 2.0, 0), Point("cpu/util", 2, 0.5, 0)])
    (extra,) = point_differences(run)  # a key the trainer never logged as a metric is not counted
    assert extra.startswith("1 points in the database that the events file does not log")
