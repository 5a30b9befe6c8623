"""Live latency: from a point's line landing in ``events.jsonl`` to its arrival at every viewer.

    python -m benchmarks.live_latency [--clients 50] [--rate 20] [--seconds 20]
        [--modes embedded,redis] [--database-url URL] [--redis-url URL] [--quick]

Everything is the product's own path, each part in its own process as in production:
the web server (uvicorn serving ``webapp.asgi``), a worker's supervisor
(``workers.supervisor.supervise``: the real tail, ingest, publish, heartbeat and owner
checks), and a trainer that appends events through ``modelcore.events.EventWriter``. The
trainer here is a stand-in that writes one ``train/loss`` point per step at ``--rate``
steps a second (a tiny CPU run logs every step at about that rate), so the load is the
same every time; it notes when each line has landed (written and flushed). ``--clients``
SSE clients follow the run page's stream (``/runs/<id>/stream``) over plain HTTP/1.1 and
note when each point arrives.

Modes: ``embedded`` (SQLite in a temporary data folder, no Redis: streams poll the
database) and ``redis`` (PostgreSQL + Redis, run when ``--database-url``/``--redis-url``
or RUNWRIGHT_DATABASE_URL/RUNWRIGHT_REDIS_URL name them; the benchmark creates a fresh
database of its own on that server and drops it afterwards).

Prints one JSON object with a section per mode: ``clients``, ``points``, ``p50_ms``,
``p95_ms``, ``max_ms`` (over every point at every client), ``lost`` (points some client
never received), and the web server's CPU seconds while the points flowed, in total
and per viewer. The clients run on the same machine as the server: on a small machine
they compete with it for the CPU, so the figures are an upper bound of what a browser
elsewhere would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from benchmarks.http_server import WebServer, cpu_seconds, server_env, web_server

ROOT = Path(__file__).resolve().parent.parent
GO_FILE = "go"  # the stand-in trainer writes points once this appears in its run directory
LANDED_FILE = "landed.json"  # step -> when its line landed, written by the stand-in trainer
LOSS_KEY = "train/loss"


# --- the roles run in child processes -------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


def setup_role() -> None:
    """Migrate a fresh database, create a user, a project and a queued run; print what the parent needs."""
    _django()
    from django.core.management import call_command
    from django.test import Client

    from modelcore.config import preset
    from tests.people import make_user
    from webapp.accounts.models import Role, Team
    from webapp.projects.models import Project
    from webapp.runs.models import Run, RunStatus

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="bench")
    user = make_user("viewer", team, Role.MEMBER)
    project = Project.objects.create(team=team, name="live latency")
    run = Run.objects.create(
        project=project,
        name="tiny",
        preset="tiny-cpu",
        config=preset("tiny-cpu").to_dict(),
        status=RunStatus.QUEUED,
    )
    client = Client()
    client.force_login(user)
    print(json.dumps({"run_id": run.id, "session": client.cookies["sessionid"].value}))


def supervise_role(run_id: int, rate: float, points: int) -> None:
    """Claim the run and supervise it as a worker does, with the stand-in trainer as the command."""
    _django()
    from webapp.runs import transitions
    from workers.supervisor import supervise

    run = transitions.claim_for_launch(run_id, "live-latency-bench")
    assert run is not None, "the run was not queued"

    def command(config: Any, run_dir: Path) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "benchmarks.live_latency", "--role", "write", "--run-dir", str(run_dir)]
        argv += ["--rate", str(rate), "--points", str(points)]
        return argv, {"PYTHONPATH": str(ROOT)}

    supervise(run, command=command)


def write_role(run_dir: Path, rate: float, points: int) -> None:
    """The stand-in trainer: ``points`` steps at ``rate`` a second, each line's landing time noted."""
    from modelcore.events import EventWriter

    landed: dict[int, float] = {}
    with EventWriter(run_dir) as writer:
        writer.status("running")
        while not (run_dir / GO_FILE).exists():
            time.sleep(0.01)
        start = time.monotonic()
        for step in range(1, points + 1):
            # Steady, not catching up: a trainer steps at its own pace whatever the dashboard does.
            time.sleep(max(0.0, start + step / rate - time.monotonic()))
            writer.metric(step, {LOSS_KEY: 10.0 / step})
            landed[step] = time.time()
        (run_dir / LANDED_FILE).write_text(json.dumps(landed))
        writer.status("completed")


# --- the parent: one mode at a time ----------------------------------------------------


class Viewer:
    """One SSE client of the run's stream: when each step of ``train/loss`` first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.ready = asyncio.Event()  # the stream's first update (the run's state) came
        self.ended = False

    async def follow(self, port: int, run_id: int, session: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET /runs/{run_id}/stream?after=-1&log_after=-1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Cookie: sessionid={session}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line = head.split(b"\r\n")[0].decode()
        if " 200 " not in status_line:
            raise RuntimeError(f"the stream answered {status_line}")
        chunked = b"transfer-encoding: chunked" in head.lower()
        buffer = b""
        try:
            while not self.ended:
                if chunked:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    if size == 0:
                        break
                    data = await reader.readexactly(size + 2)
                    buffer += data[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                    buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    self._take(event.decode(), time.time())
        finally:
            writer.close()

    def _take(self, event: str, now: float) -> None:
        lines = dict(
            line.split(": ", 1) for line in event.split("\n") if ": " in line and not line.startswith(":")
        )
        if lines.get("event") == "end":
            self.ended = True
        elif lines.get("event") == "update":
            for step, _ in json.loads(lines["data"]).get("points", {}).get(LOSS_KEY, []):
                self.arrived.setdefault(int(step), now)
            self.ready.set()


async def _listen(env: dict[str, str], run_id: int, published: dict[int, float]) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(env["RUNWRIGHT_REDIS_URL"])
    pubsub = client.pubsub()
    await pubsub.subscribe(f"run:{run_id}")
    try:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            now = time.time()
            update = json.loads(message["data"]).get("update") or {}
            for step, _ in update.get("points", {}).get(LOSS_KEY, []):
                published.setdefault(int(step), now)
    finally:
        await pubsub.aclose()
        await client.aclose()


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94] if len(values) > 1 else values[0]


def _child(*role: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.live_latency", "--role", *role]


async def _measure(args: argparse.Namespace, env: dict[str, str], data_dir: Path) -> dict[str, Any]:
    setup = subprocess.run(
        _child("setup"), env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300
    )
    if setup.returncode != 0:
        raise RuntimeError(f"setup failed:\n{setup.stderr[-3000:]}")
    made = json.loads(setup.stdout.strip().splitlines()[-1])
    run_id, session = made["run_id"], made["session"]
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with web_server(env, log=logs / "server.log") as server:
        return await _follow(args, env, data_dir, server, run_id, session)


async def _follow(
    args: argparse.Namespace,
    env: dict[str, str],
    data_dir: Path,
    server: WebServer,
    run_id: int,
    session: str,
) -> dict[str, Any]:
    """Start the supervisor, let the viewers follow the run, and time each point's arrival."""
    logs = data_dir / "logs"
    port = server.port
    worker = None
    try:
        points = int(args.rate * args.seconds)
        worker = subprocess.Popen(
            _child("supervise", "--run-id", str(run_id), "--rate", str(args.rate), "--points", str(points)),
            env=env,
            cwd=ROOT,
            stdout=(logs / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        viewers = [Viewer() for _ in range(args.clients)]
        tasks = [asyncio.ensure_future(v.follow(port, run_id, session)) for v in viewers]
        published: dict[int, float] = {}  # with Redis: when each step's message was published
        listener = (
            asyncio.ensure_future(_listen(env, run_id, published)) if env.get("RUNWRIGHT_REDIS_URL") else None
        )
        ready = asyncio.gather(*(v.ready.wait() for v in viewers))
        await asyncio.wait_for(ready, timeout=120)
        run_dir = data_dir / "runs" / str(run_id)
        deadline = time.monotonic() + 120
        while not (run_dir / "events.jsonl").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cpu_before, started = cpu_seconds(server.pid), time.monotonic()
        (run_dir / GO_FILE).touch()
        done, pending = await asyncio.wait(tasks, timeout=args.seconds + 60)
        cpu = cpu_seconds(server.pid) - cpu_before
        elapsed = time.monotonic() - started
        for task in [*pending, *([listener] if listener else [])]:
            task.cancel()
        failed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
        landed = {int(k): v for k, v in json.loads((run_dir / LANDED_FILE).read_text()).items()}
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    latencies = [(v.arrived[s] - t) * 1000 for v in viewers for s, t in landed.items() if s in v.arrived]
    lost = sum(1 for s in landed if any(s not in v.arrived for v in viewers))
    to_redis = [(published[s] - t) * 1000 for s, t in landed.items() if s in published]
    return {
        "clients": args.clients,
        "points": len(landed),
        "rate_per_s": args.rate,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": round(_p95(latencies), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "lost": lost,
        # The ingest side's share: line landed -> its message on Redis (the rest is the web's).
        "published_p50_ms": round(statistics.median(to_redis), 1) if to_redis else None,
        "published_p95_ms": round(_p95(to_redis), 1) if to_redis else None,
        "client_errors": [repr(e) for e in failed][:3],
        "server_cpu_s": round(cpu, 2),
        "server_cpu_s_per_viewer": round(cpu / args.clients, 4),
        "seconds": round(elapsed, 1),
    }


def embedded(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rw-live-") as tmp:
        return asyncio.run(_measure(args, server_env(tmp), Path(tmp)))


def with_redis(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    base = urllib.parse.urlsplit(args.database_url)
    name = f"rw_live_{uuid.uuid4().hex[:12]}"
    url = urllib.parse.urlunsplit(base._replace(path=f"/{name}"))
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory(prefix="rw-live-") as tmp:
            env = server_env(tmp, url, RUNWRIGHT_REDIS_URL=args.redis_url)
            return asyncio.run(_measure(args, env, Path(tmp)))
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent SSE viewers (default 50)")
    parser.add_argument("--rate", type=float, default=20.0, help="steps (points) a second the trainer logs")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the trainer logs")
    parser.add_argument("--modes", default="embedded,redis", help="comma-separated: embedded, redis")
    parser.add_argument("--database-url", default=os.environ.get("RUNWRIGHT_DATABASE_URL", ""))
    parser.add_argument("--redis-url", default=os.environ.get("RUNWRIGHT_REDIS_URL", ""))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 clients, 3 seconds")
    # Roles of the child processes.
    parser.add_argument("--role", choices=("setup", "supervise", "write"), help=argparse.SUPPRESS)
    parser.add_argument("--run-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "setup":
        setup_role()
        return 0
    if args.role == "supervise":
        supervise_role(args.run_id, args.rate, args.points)
        return 0
    if args.role == "write":
        write_role(args.run_dir, args.rate, args.points)
        return 0
    if args.clients < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--clients, --rate and --seconds must be positive")
    if args.quick:
        args.clients, args.seconds = min(args.clients, 5), min(args.seconds, 3.0)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    result: dict[str, Any] = {"benchmark": "live_latency", "cpu_count": os.cpu_count()}
    for mode in modes:
        if mode == "embedded":
            result["embedded"] = embedded(args)
        elif mode == "redis":
            if not (args.database_url.startswith("postgres") and args.redis_url):
                result["redis"] = {"skipped": "needs a PostgreSQL URL and a Redis URL (flags or environment)"}
                continue
            result["redis"] = with_redis(args)
        else:
            parser.error(f"unknown mode {mode!r}: use embedded or redis")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
