"""Ingesting and charting a long metric series: Runwright against MLflow, each over HTTP.

    python -m benchmarks.metrics_store [--points 1000000] [--ingest-points 100000]
        [--keys-per-step 4] [--batch 1000] [--mlflow-python PATH] [--ingest-only]

Uses the database ``RUNWRIGHT_DATABASE_URL`` names (PostgreSQL in CI) or the embedded
SQLite, in a throwaway test database that is dropped afterwards.

Headline figures, each the product's real path against MLflow's:

- ingest: ``--ingest-points`` points, ``--keys-per-step`` keys a step, written as a trainer
  writes them (``modelcore.events.EventWriter``) into ``events.jsonl`` and read into the
  database by the supervisor's ingestion (``workers.ingest.ingest_new_events``: parse,
  progress, points, keys, summaries, one transaction a read), ``--batch`` points a read, as
  a supervisor polling a busy trainer finds them; only the ingestion is timed. MLflow gets
  the same points over HTTP through ``MlflowClient.log_batch`` in calls of the same size
  (1000 at most, its limit); only those calls are timed. Beside it, ``ingest.sustained``:
  the same points written by a trainer process at full speed while the supervisor's loop
  reads whatever has landed (``ingest_new_events``, ``EventsWatch``), timed from the
  trainer's start to the last point stored: the rate a run's ingestion keeps up with.
- chart reads: a ``--points``-step ``train/loss`` series with one spike, read over HTTP from
  a uvicorn server running the project's ASGI app (``webapp.asgi``, in its own process):
  the run page's series request (``/runs/<id>/series``, logged in) and the API's metrics
  read (``/api/v1/runs/<id>/metrics``, bearer token), for the whole series and for its
  middle tenth; MLflow's the same way through the endpoint its UI's charts use
  (``get-history-bulk-interval``). Both sides are asked for the run page's number of points
  (``selectors.DEFAULT_MAX_POINTS``, 2000) and the counts returned are printed.

Where the real path's time goes (PostgreSQL 15, 2-core AMD EPYC shared with other work,
December 2026), as CPU seconds per 100k points of the sustained scenario: the ingester's
(``time.process_time``) and its database backend's (``/proc/<pid>/stat``), which the shared
machine's load does not inflate the way it does wall time. Before this round: ingester
0.55-0.65 s (the cycle collector's full passes over a batch ~0.17, a ``Point`` apiece and the
dedup pass ~0.24, ``json`` and the checks ~0.16, summaries ~0.1), database 0.85-0.9 s (the
foreign key's check of every inserted row ~0.33 of it): ~70k points/s of CPU, as measured
(63.7k/s sustained on a quiet machine). Now: ingester ~0.3-0.36 s (reading and checking the
lines with orjson ~0.08, rows from events ~0.04, ``write_points`` ~0.16: summaries 0.045, COPY
packing 0.035, row tuples 0.035, summary rows 0.02), database ~0.55-0.6 s (the points' COPY
into the table, its four indexes and WAL ~0.42, summaries ~0.05, the per-statement run check
~0.04): ~110k points/s of CPU. The two ran one after the other, so the database's share
was most of a batch's time, and the database sat idle while the client parsed.

Since: a long read is stored in 1 MiB pieces (~18k points) in its one transaction, and the
next piece is read and parsed, and the current one's summaries recomputed, inside the
current piece's points COPY (``write_points(meanwhile=...)``), while the database is still
storing its rows. Timed for a 100k-point read (machine at load ~12): after that work (0.7-0.9
s) the client still waited 1.6-2.3 s for the COPYs to finish, of 3.6-4.2 s in all, i.e. the
parse is hidden entirely behind the database's work, and the sustained loop now follows
the trainer within one or two calls (``reads``). What is left on the critical path is the
database's COPY into the table and its four indexes (the floor's own work), the statements
around it (~10 a piece) and the client's rows and lookups before each COPY. The figure to
compare across loads is ``sustained_to_floor``: ours over a bare COPY timed in the same run.

Secondary, in-process figures: ``upsert_points`` called directly (and the bare point upsert
without summaries), the chart read through ``selectors.series`` against a scan of every
row, and the live stream's read of what is new by ``seq`` (``runs.updates.read_updates``).

The peer is MLflow (``benchmarks.mlflow_peer``, run under ``--mlflow-python``: any
interpreter with ``mlflow``, and ``psycopg2-binary`` for PostgreSQL; by default this one if
it has mlflow), on a fresh database of the same kind. Prints one JSON object: ``ours`` and
``peer`` are the full-chart HTTP read seconds (the run page's request against MLflow's),
``ratio`` = peer/ours (higher is better; null when no MLflow interpreter was found), and
``ingest`` the points per second of each side's ingest and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from benchmarks.mlflow_peer import KEY, free_port, ingest_points, series_value, spike_step, timed_get_json


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


ROOT = Path(__file__).resolve().parent.parent


def _timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ingest_through_events(args: argparse.Namespace, run: Any) -> dict[str, Any]:
    """The real ingest path: events.jsonl lines read into the database by ``ingest_new_events``."""
    from modelcore.events import EventWriter
    from webapp.metrics.models import MetricPoint
    from workers import ingest

    run_dir = Path(tempfile.mkdtemp(prefix="rw-bench-ingest-"))
    steps = ingest_points(args.ingest_points, args.keys_per_step)
    lines_per_read = args.batch // args.keys_per_step
    seconds, reads = 0.0, 0
    with EventWriter(run_dir) as writer:
        for lo in range(0, len(steps), lines_per_read):
            for step, values in steps[lo : lo + lines_per_read]:
                writer.metric(step, values)
            start = time.perf_counter()
            batch = ingest.ingest_new_events(run, run_dir / "events.jsonl")
            assert batch is not None
            ingest.announce(run, batch)  # the live update, as the supervisor publishes it (with Redis)
            seconds += time.perf_counter() - start
            reads += 1
            assert not batch.bad_lines and not batch.lost_ownership
    stored = MetricPoint.objects.filter(run=run).count()
    assert stored == len(steps) * args.keys_per_step, (stored, len(steps))
    return {
        "points_per_s": round(stored / seconds, 1),
        "points": stored,
        "reads": reads,
        "points_per_read": args.batch,
        "seconds": round(seconds, 3),
        "live_published": _live_enabled(),
    }


def _write_events(run_dir: Path, steps: list[tuple[int, dict[str, float]]]) -> None:
    """A trainer logging as fast as it can (in its own process, as a real one is)."""
    from modelcore.events import EventWriter

    with EventWriter(run_dir) as writer:
        for step, values in steps:
            writer.metric(step, values)


def ingest_sustained(args: argparse.Namespace, run: Any) -> dict[str, Any]:
    """The real path kept busy: a trainer process writes ``--ingest-points`` points as fast as it
    can while the supervisor's loop (``ingest_new_events``, then ``EventsWatch`` until the file
    grows) reads whatever has landed since its last read, as a supervisor does. Timed from the
    trainer's start to the last point stored: the rate ingestion keeps up with."""
    import multiprocessing

    from modelcore.events import EVENTS_FILE
    from webapp.metrics.models import MetricPoint
    from workers import ingest

    run_dir = Path(tempfile.mkdtemp(prefix="rw-bench-sustained-"))
    steps = ingest_points(args.ingest_points, args.keys_per_step)
    total = len(steps) * args.keys_per_step
    # fork: the child only writes the file (it never touches the parent's database connection).
    writer = multiprocessing.get_context("fork").Process(target=_write_events, args=(run_dir, steps))
    watch = ingest.EventsWatch(run_dir / EVENTS_FILE)
    stored = reads = biggest = 0
    start = time.perf_counter()
    writer.start()
    while stored < total:
        batch = ingest.ingest_new_events(run, run_dir / EVENTS_FILE)
        if batch is None:
            if not writer.is_alive() and writer.exitcode:
                raise RuntimeError(f"the event writer failed (exit code {writer.exitcode})")
            watch.wait(run.events_offset, 0.5)
            continue
        ingest.announce(run, batch)
        assert not batch.bad_lines and not batch.lost_ownership
        stored += batch.stored_points
        reads += 1
        biggest = max(biggest, batch.stored_points)
    seconds = time.perf_counter() - start
    writer.join()
    assert MetricPoint.objects.filter(run=run).count() == total
    return {
        "points_per_s": round(total / seconds, 1),
        "points": total,
        "reads": reads,
        "mean_points_per_read": round(total / reads, 1),
        "largest_read": biggest,
        "seconds": round(seconds, 3),
        "live_published": _live_enabled(),
    }


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages after the ingest figures (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _live_enabled() -> bool:
    from webapp import live

    return live.enabled()


def database_floor(args: argparse.Namespace, connection: Any) -> float | None:
    """Rows/s of a bare ``COPY`` into a scratch copy of the points table (same indexes), on
    PostgreSQL: the most any ingest could reach on this machine, measured in the same run."""
    if connection.vendor != "postgresql":
        return None
    from webapp.metrics.models import MetricPoint

    table = connection.ops.quote_name(MetricPoint._meta.db_table)
    rows = [(0, "train/loss", s, series_value(s, args.points), 0.0, s) for s in range(args.ingest_points)]
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE bench_floor (LIKE {table} INCLUDING ALL)")
        try:
            start = time.perf_counter()
            for lo in range(0, len(rows), args.batch):
                with cursor.cursor.copy(
                    "COPY bench_floor (run_id, key, step, value, time, seq) FROM STDIN"
                ) as copy:
                    for row in rows[lo : lo + args.batch]:
                        copy.write_row(row)
            return len(rows) / (time.perf_counter() - start)
        finally:
            cursor.execute("DROP TABLE bench_floor")


class WebServer:
    """uvicorn serving ``webapp.asgi`` in its own process, on the benchmark's database."""

    def __init__(self, connection: Any):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNWRIGHT_")}
        env |= {"DJANGO_SETTINGS_MODULE": "webapp.settings", "PYTHONPATH": str(ROOT)}
        db = connection.settings_dict
        if connection.vendor == "postgresql":
            user = urllib.parse.quote(db["USER"] or "")
            env["RUNWRIGHT_DATABASE_URL"] = (
                f"postgresql://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
            )
        else:
            env["RUNWRIGHT_DATABASE_URL"] = f"sqlite:///{db['NAME']}"
        env["RUNWRIGHT_DATA_DIR"] = tempfile.mkdtemp(prefix="rw-bench-web-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "webapp.asgi:application",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.process.stderr.read()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.1)
        self.close()
        raise RuntimeError("uvicorn did not start listening within 120 s")

    def url(self, path: str, **query: Any) -> str:
        return f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(query, doseq=True)}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client

    from modelcore.config import preset
    from tests.people import make_user
    from webapp.accounts.models import Role, Team
    from webapp.accounts.services import create_api_token
    from webapp.metrics.models import MetricPoint
    from webapp.metrics.selectors import downsample_minmax, series
    from webapp.metrics.services import Point, upsert_points
    from webapp.projects.models import Project
    from webapp.runs import transitions
    from webapp.runs.models import Run, RunStatus
    from webapp.runs.updates import StreamCursor, read_updates

    team = Team.objects.create(name="bench")
    user = make_user("bench", team, Role.MEMBER)
    project = Project.objects.create(team=team, name="bench")
    config = preset("tiny-cpu").to_dict()
    runs = {
        name: Run.objects.create(project=project, name=name, config=config) for name in ("summarised", "bare")
    }
    ingest_runs = []
    for name in ("ingest", "ingest-sustained"):
        queued = Run.objects.create(project=project, name=name, config=config, status=RunStatus.QUEUED)
        ingest_runs.append(transitions.claim_for_launch(queued.id, "metrics-store-bench"))

    # -- ingest through the real path (headline) ---------------------------------------
    ingest = ingest_through_events(args, ingest_runs[0])
    sustained = ingest_sustained(args, ingest_runs[1])
    floor = database_floor(args, connection)
    ingest_figures = {
        "ours": ingest,
        "sustained": sustained,
        "database_copy_floor_points_per_s": round(floor, 1) if floor else None,
        # The shared machine's load moves both alike: their ratio is the figure to compare.
        "sustained_to_floor": round(sustained["points_per_s"] / floor, 2) if floor else None,
        "load_average": _load_average(),
    }
    if args.ingest_only:
        return {
            "benchmark": "metrics_store",
            "ingest": ingest_figures,
            "settings": _settings(args, connection),
        }

    # -- the chart's series, written by upsert_points directly (secondary ingest figures)
    def value(step: int) -> float:
        return series_value(step, args.points)

    def bare_upsert(run_id: int, points: list[Point]) -> None:
        MetricPoint.objects.bulk_create(
            [MetricPoint(run_id=run_id, key=p.key, step=p.step, value=p.value, time=p.time) for p in points],
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["run", "key", "step"],
            update_fields=["value", "time"],
        )

    writers = {"summarised": lambda points: upsert_points(runs["summarised"].id, points)}
    writers["bare"] = lambda points: bare_upsert(runs["bare"].id, points)
    in_process: dict[str, float] = {}
    for name, write in writers.items():
        start = time.perf_counter()
        for lo in range(0, args.points, args.batch):
            write([Point(KEY, s, value(s), 0.0) for s in range(lo, min(lo + args.batch, args.points))])
        in_process[name] = args.points / (time.perf_counter() - start)
    run_ = runs["summarised"]
    zoom = (args.points * 45 // 100, args.points * 55 // 100)

    def check(steps: list[int], values: list[float | None]) -> None:
        assert len(steps) <= args.max_points
        assert all(v == value(s) for s, v in zip(steps, values, strict=True) if v is not None)

    # -- chart reads over HTTP (headline) -------------------------------------------------
    client = Client()
    client.force_login(user)
    session = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    bearer = {"Authorization": f"Bearer {create_api_token(user, 'bench')}"}
    server = WebServer(connection)
    try:
        page = f"/runs/{run_.id}/series"
        api = f"/api/v1/runs/{run_.id}/metrics"
        requests = {
            "run_page_full": (server.url(page, key=KEY), session),
            "run_page_zoom_tenth": (server.url(page, key=KEY, since=zoom[0], until=zoom[1]), session),
            "api_full": (server.url(api, key=KEY, max_points=args.max_points), bearer),
        }
        http: dict[str, Any] = {}
        for name, (url, headers) in requests.items():
            seconds, body = timed_get_json(url, args.repeats, headers)
            out = body["series"][0] if "series" in body else body
            check(out["steps"], out["values"])
            http[name] = {"s": round(seconds, 4), "points": len(out["steps"])}
            if name.endswith("full"):
                http[name]["spike_kept"] = 50.0 in out["values"]
    finally:
        server.close()

    # -- the same reads in process, summaries against a scan (secondary) -------------------
    def scan(since: int | None, until: int | None) -> dict[str, Any]:
        qs = MetricPoint.objects.filter(run=run_, key=KEY)
        if since is not None:
            qs = qs.filter(step__gt=since, step__lte=until)
        rows = list(qs.order_by("step").values_list("step", "value").iterator(chunk_size=20_000))
        steps, values = downsample_minmax([r[0] for r in rows], [r[1] for r in rows], args.max_points)
        return {"steps": steps, "values": values}

    reads = {
        "full_chart": (lambda: series(run_, KEY, max_points=args.max_points), lambda: scan(None, None)),
        "zoom_tenth": (
            lambda: series(run_, KEY, since_step=zoom[0], until_step=zoom[1], max_points=args.max_points),
            lambda: scan(*zoom),
        ),
    }
    read_results: dict[str, Any] = {}
    for name, (ours_fn, scan_fn) in reads.items():
        ours_s, ours_out = _timed(ours_fn, args.repeats)
        scan_s, scan_out = _timed(scan_fn, args.repeats)
        for out in (ours_out, scan_out):
            check(out["steps"], out["values"])
        read_results[name] = {
            "summaries_s": round(ours_s, 4),
            "scan_s": round(scan_s, 4),
            "ratio": round(scan_s / ours_s, 1),
            "points_returned": {"summaries": len(ours_out["steps"]), "scan": len(scan_out["steps"])},
        }
        if name == "full_chart":
            spikes = [s for s, v in zip(ours_out["steps"], ours_out["values"], strict=True) if v == 50.0]
            assert spikes == [spike_step(args.points)]
    # What a live stream reads after each wake-up: the rows written since its cursor, by seq.
    last_seq = MetricPoint.objects.filter(run=run_).order_by("-seq").values_list("seq", flat=True)[0]
    tail_s, tail = _timed(lambda: read_updates(run_.id, StreamCursor(point_seq=last_seq - 10)), args.repeats)
    assert [p[0] for p in tail.payload["points"][KEY]] == list(range(args.points - 10, args.points))

    mlflow = mlflow_side(args, connection)
    peer_full = mlflow.get("full_chart_s")
    peer_ingest = mlflow.get("ingest_points_per_s")
    ours_full = http["run_page_full"]["s"]
    return {
        "benchmark": "metrics_store",
        "unit": "seconds to read one chart of the whole series over HTTP",
        "ours": ours_full,
        "peer": peer_full,
        "peer_name": "MLflow server, /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval (its UI's chart read)",
        "ratio": round(peer_full / ours_full, 1) if peer_full else None,
        "ratio_note": "peer seconds / ours (higher is better); both over HTTP, same number of points asked",
        "ingest": {
            "ours": ingest,
            "peer_points_per_s": peer_ingest,
            "ratio": round(ingest["points_per_s"] / peer_ingest, 1) if peer_ingest else None,
            "ratio_note": "our points/s / MLflow's (higher is better): same points, same batch size",
            "sustained": sustained,
            "sustained_note": "a trainer process logging at full speed, the supervisor's loop reading "
            "what has landed each time (no fixed batch): the rate ingestion keeps up with",
            "database_copy_floor_points_per_s": round(floor, 1) if floor else None,
            "sustained_to_floor": ingest_figures["sustained_to_floor"],
            "load_average": ingest_figures["load_average"],
        },
        "http": http,
        "mlflow": mlflow,
        "in_process": {
            "reads": read_results,
            "upsert_points_per_s": {k: round(v, 1) for k, v in in_process.items()},
            "cost_of_summaries": round(in_process["bare"] / in_process["summarised"], 2),
            "live_tail_read_by_seq_s": round(tail_s, 4),
        },
        "settings": _settings(args, connection),
    }


def _settings(args: argparse.Namespace, connection: Any) -> dict[str, Any]:
    return {
        "points": args.points,
        "ingest_points": args.ingest_points,
        "keys_per_step": args.keys_per_step,
        "batch": args.batch,
        "max_points": args.max_points,
        "repeats": args.repeats,
        "database": connection.vendor,
    }


def mlflow_side(args: argparse.Namespace, connection: Any) -> dict[str, Any]:
    """Run benchmarks.mlflow_peer on a fresh database of the kind ours used: its JSON, or why not."""
    python = args.mlflow_python or (sys.executable if importlib.util.find_spec("mlflow") else None)
    if python is None:
        return {"skipped": "no interpreter with mlflow: pass --mlflow-python (see this module's docstring)"}
    drop = None
    if connection.vendor == "postgresql":
        import psycopg

        params = connection.settings_dict
        host, port, user = params["HOST"] or "127.0.0.1", params["PORT"] or 5432, params["USER"]
        name = f"rw_bench_mlflow_{uuid.uuid4().hex[:8]}"
        admin_dsn = f"host={host} port={port} user={user} dbname=postgres"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        # psycopg2 named explicitly: SQLAlchemy 2.1 would otherwise look for psycopg 3 in that env.
        backend = f"postgresql+psycopg2://{user}@{host}:{port}/{name}"

        def drop() -> None:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        backend = f"sqlite:///{Path(tempfile.mkdtemp(prefix='rw-bench-mlflow-')) / 'mlflow.db'}"
    command = [python, "-m", "benchmarks.mlflow_peer", "--backend-uri", backend, "--points", str(args.points)]
    command += ["--ingest-points", str(args.ingest_points), "--keys-per-step", str(args.keys_per_step)]
    command += [
        "--batch",
        str(args.batch),
        "--max-results",
        str(args.max_points),
        "--repeats",
        str(args.repeats),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    finally:
        if drop is not None:
            drop()
    if done.returncode != 0:
        return {"skipped": f"the mlflow side failed: {done.stderr.strip()[-500:]}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "database": connection.vendor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_store")
    parser.add_argument("--points", type=int, default=1_000_000, help="steps of the charted series")
    parser.add_argument("--ingest-points", type=int, default=100_000, help="points ingested by each side")
    parser.add_argument("--keys-per-step", type=int, default=4, help="keys a trainer logs each step")
    parser.add_argument(
        "--batch", type=int, default=1000, help="points a read (ours) or a log_batch call (MLflow's)"
    )
    parser.add_argument(
        "--max-points", type=int, default=2000, help="points a chart asks for (MLflow: at most 2500)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--mlflow-python", help="An interpreter with mlflow (default: this one, if it has it)."
    )
    parser.add_argument(
        "--ingest-only",
        action="store_true",
        help="Only our ingest figures (batch, sustained, the COPY floor): no chart series, no HTTP, no MLflow.",
    )
    args = parser.parse_args(argv)
    if args.batch % args.keys_per_step or not 1 <= args.batch <= 1000:
        parser.error("--batch must be 1 to 1000 (MLflow's limit) and a multiple of --keys-per-step")
    if args.mlflow_python and not shutil.which(args.mlflow_python):
        parser.error(
            f"--mlflow-python {args.mlflow_python}: no such interpreter (give the path of one with mlflow)"
        )
    _django()
    from webapp.metrics.selectors import DEFAULT_MAX_POINTS

    args.max_points = DEFAULT_MAX_POINTS  # what the run page asks for; MLflow is asked the same
    from django.db import connection

    # A throwaway database (test_<name>), as the test suite uses: the benchmark never
    # touches the data of a real installation. SQLite's would be in memory: use a file, as
    # the product (and MLflow's side) does.
    if connection.vendor == "sqlite":
        db_file = Path(tempfile.mkdtemp(prefix="rw-bench-")) / "runwright.sqlite3"
        connection.settings_dict.setdefault("TEST", {})["NAME"] = str(db_file)
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        result = run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
