"""The run page of a run with many metric keys and long series: how long until it is usable.

    python -m benchmarks.run_page [--keys 200] [--points 1000000] [--loads 5] [--database-url URL]

The run gets ``--keys`` keys across the page's groups (train/, val/, perf/, system/ with a
line per rank, eval/, moe/ with a line per expert, and a few without a prefix), each with
``--points`` steps. The first key is written through the metrics app's writer
(``write_points``, the ingest path: points, seqs, keys and min/max summaries); the others
are copies of it made inside the database (``fill_series`` says why that is the same data).
On the embedded default (SQLite) the filled data folder is kept under
``/tmp/runwright-bench-run-page/`` between runs, keyed by a digest of the migrations and the
sizes (200 x 1M points is about 22 GB there: 112 bytes a point with its indexes); with
``--database-url`` (PostgreSQL) a throwaway database is filled and dropped afterwards.

The web server is uvicorn serving ``webapp.asgi`` (``benchmarks.http_server``); headless
Chromium (``/usr/bin/chromium``, 1400 x 900) opens the run page ``--loads`` times after one
warm-up load, each in a fresh page, and times from the navigation's start to:

- ``html_ms``: the page's HTML received (``responseEnd``);
- ``scripts_ready_ms``: the page's deferred scripts (Plotly.js among them) run (DOMContentLoaded);
- ``first_screen_ms``: every panel in the first screen drawn with its series;
- ``all_panels_drawn_ms``: then every panel of the open groups scrolled to in turn and drawn.

Panels below the first screen or in folded groups are drawn only when scrolled to, so the
first screen does not grow with the number of keys beyond the key list. Also printed: the
series requests and bytes of the first screen, the machine's load average.

Measured on the 2-core machine shared with other work (load average 10-13 throughout, so
every figure is several times an idle machine's), the benchmark at ``nice -n -10``, medians
of 5 loads; "before" is commit 9b3f535 (full Plotly bundle, 2,000 points a chart):

| run | before: HTML / scripts / first screen | after |
|---|---|---|
| 4 keys x 1M | 146-223 / 4733-6527 / 6075-8112 ms | 105-112 / 842-878 / 1244-1282 ms |
| 200 keys x 100k | 131 / 4098 / 5517 ms; all 106 panels 31.7 s | 168 / 1730 / 2394 ms; all 106 panels 20.5 s |

200 keys x 1M was not filled: 22 GB and about 3 hours at the rates seen here. A chart's read
costs about the same at 100k and 1M steps (the summaries give ~1,000-2,000 rows either way),
so the 200 x 100k figures stand for it. A Chromium profile of the 200-key first screen (2.1 s
at load 12): 0.56 s the browser's own work (style, layout of the 106 panels' DOM), 0.58 s
Plotly.js (0.26 s running the bundle), 0.4 s waiting on the series reads, 0.13 s the page's scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from benchmarks.http_server import ROOT, server_env, web_server

CHROMIUM = Path("/usr/bin/chromium")
CHUNK_STEPS = 100_000  # steps of a key written per call of the writer
CACHE_ROOT = Path(tempfile.gettempdir()) / "runwright-bench-run-page"


def key_names(count: int) -> list[str]:
    """``count`` keys spread over the page's groups as a real MoE pretraining run logs them."""
    base = ["train/loss", "train/lr", "train/grad_norm", "val/loss", "val/ppl", "perf/tokens_per_s"]
    base += ["perf/tokens_seen", "perf/step_time_s", "perf/mfu", "perf/mem_gb", "loss_scale"]
    keys = list(base)
    i = 0
    while len(keys) < count:
        group = i % 4
        if group == 0:
            keys.append(f"system/gpu_util/rank{i // 4}")
        elif group == 1:
            keys.append(f"moe/expert_util/layer{i // 32}/expert{(i // 4) % 8}")
        elif group == 2:
            keys.append(f"eval/task{i // 4}/acc")
        else:
            keys.append(f"train/extra_{i // 4}")
        i += 1
    return keys[:count]


def schema_version() -> str:
    """A digest of every migration file: a cached database is reused only under the same schema."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("webapp/*/migrations/0*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


FILL_VERSION = 2  # 2: the bulk SQLite fill, a fixed FILL_EPOCH


def cached_data_dir(keys: int, points: int, root: Path = CACHE_ROOT) -> Path:
    """Where the filled database of ``keys`` x ``points`` is kept between runs (embedded SQLite only)."""
    return root / f"schema-{schema_version()}-fill{FILL_VERSION}-keys{keys}-points{points}"


# The series every key gets: a falling curve with a spike every ~100k steps (the spikes the
# min/max summaries keep), at one step a second from a fixed start, so a cached fixture and a
# fresh one hold the same rows. ``POINT_VALUE_SQL`` is the same sum in SQL, evaluated in the
# same order on IEEE doubles: the same bits (tests/metrics/test_run_page_fixture.py).
FILL_EPOCH = 1_700_000_000.0
SPIKE_EVERY = 99_991


def point_value(step: int) -> float:
    return 1.0 + 4.0 / step + (5.0 if step % SPIKE_EVERY == 0 else 0.0)


POINT_VALUE_SQL = f"1.0 + 4.0 / n + (CASE WHEN n % {SPIKE_EVERY} = 0 THEN 5.0 ELSE 0.0 END)"


def fill_series_through_writer(
    run_id: int, keys: list[str], points: int, *, chunk_steps: int = CHUNK_STEPS
) -> None:
    """Write ``points`` steps of every key through the metrics app's writer (``write_points``,
    the path ingestion takes), key after key, in batches of ``chunk_steps``.

    The reference the bulk fill is held to, and the fill on PostgreSQL: at ~18k points/s
    on the 2-core machine, 200 keys x 1M points would take about 3 hours this way.
    """
    from webapp.metrics.services import Point, write_points

    for key in keys:
        for lo in range(1, points + 1, chunk_steps):
            steps = range(lo, min(points, lo + chunk_steps - 1) + 1)
            write_points(run_id, [Point(key, s, point_value(s), FILL_EPOCH + s) for s in steps])


def series_summaries(points: int) -> list[tuple[int, int, Any]]:
    """The summary rows (level, bucket, Extremes) of one key holding steps 1..``points`` of
    ``point_value``: what ``write_points`` stores for it, computed with the metrics app's own
    ``Extremes`` (level 0 from each bucket's points, each coarser level from the rows under it)."""
    from webapp.metrics.summaries import FANOUT, LEVELS, Extremes

    rows: list[tuple[int, int, Any]] = []
    level: dict[int, Extremes] = {}
    for bucket in range(0, points // FANOUT + 1):
        steps = range(max(1, bucket * FANOUT), min(points, bucket * FANOUT + FANOUT - 1) + 1)
        if steps:
            level[bucket] = Extremes.of_points([(s, point_value(s)) for s in steps])
    for n in range(LEVELS):
        if n:
            children: dict[int, list[Extremes]] = {}
            for bucket, e in level.items():  # ascending, so each parent's parts are in step order
                children.setdefault(bucket // FANOUT, []).append(e)
            level = {bucket: Extremes.of_parts(parts) for bucket, parts in children.items()}
        rows += [(n, bucket, e) for bucket, e in level.items()]
    return rows


def fill_series_bulk_sqlite(database: Path | str, run_id: int, keys: list[str], points: int) -> None:
    """The rows ``fill_series_through_writer`` leaves, written straight into the SQLite file.

    Points, their seqs (key after key, as that writer hands them out), the keys and the
    min/max summaries, equal row for row (tests/metrics/test_run_page_fixture.py holds the
    two to it on a small run). The first key's points come from a recursive CTE, the other
    keys' are copied from it inside SQLite with their own key and seqs; the summaries are
    computed once (``series_summaries``) and copied the same way. The tables' indexes are
    dropped first and built once at the end (a sort each, instead of a B-tree insert per row),
    with no journal and no syncs: about 200 times faster than the writer. A fill cut short
    leaves a broken file; the caller fills into a folder it renames only once this returns.
    """
    import sqlite3

    point_table, summary_table, key_table = (
        "metrics_metricpoint",
        "metrics_metricsummary",
        "metrics_metrickey",
    )
    db = sqlite3.connect(str(database), isolation_level=None)
    try:
        for pragma in (
            "journal_mode=OFF",
            "synchronous=OFF",
            "foreign_keys=OFF",
            "cache_size=-1000000",  # 1 GB: the index sorts run mostly in memory
            "temp_store=MEMORY",  # the one key's tables; the index sorts spill to files anyway
            "threads=2",
        ):
            db.execute(f"PRAGMA {pragma}")
        tables = (point_table, summary_table)
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({', '.join('?' * len(tables))})",
            tables,
        ).fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        # One key's series and summaries in temporary tables (memory), copied into the real
        # ones once per key: with the indexes dropped, a copy from the real tables would scan them.
        db.execute("CREATE TEMP TABLE series (n INTEGER PRIMARY KEY, value REAL, time REAL)")
        db.execute(
            "INSERT INTO series (n, value, time) "
            f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < ?) "
            f"SELECT n, {POINT_VALUE_SQL}, ? + n FROM s",
            (points, FILL_EPOCH),
        )
        summary_columns = (
            "level, bucket, count, first_step, last_step, min_step, min_value, max_step, max_value"
        )
        db.execute(f"CREATE TEMP TABLE summaries (id INTEGER PRIMARY KEY, {summary_columns})")
        db.executemany(
            f"INSERT INTO summaries ({summary_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (level, bucket, e.count, e.first_step, e.last_step, e.min_step, e.min_value)
                + (e.max_step, e.max_value)
                for level, bucket, e in series_summaries(points)
            ],
        )
        for i, key in enumerate(keys):
            db.execute("BEGIN")
            db.execute(
                f"INSERT INTO {point_table} (run_id, key, step, value, time, seq) "
                "SELECT ?, ?, n, value, time, n + ? FROM series ORDER BY n",
                (run_id, key, i * points),
            )
            db.execute(
                f"INSERT INTO {summary_table} (run_id, key, {summary_columns}) "
                f"SELECT ?, ?, {summary_columns} FROM summaries ORDER BY id",
                (run_id, key),
            )
            db.execute("COMMIT")
        db.execute("DROP TABLE series")
        db.execute("DROP TABLE summaries")
        db.executemany(
            f"INSERT INTO {key_table} (run_id, key) VALUES (?, ?)", [(run_id, key) for key in keys]
        )
        for _, sql in indexes:
            db.execute(sql)
        db.execute("PRAGMA journal_mode=WAL")  # as webapp.env opens it
    finally:
        db.close()


def fill_series_copies(run_id: int, keys: list[str], points: int) -> None:
    """The same rows on any database (PostgreSQL): the first key through the writer, the others
    copied from it by ``INSERT ... SELECT`` with their own key and seqs (its summaries alike)."""
    from django.db import connection, transaction

    from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary

    first = keys[0]
    fill_series_through_writer(run_id, [first], points)
    q = connection.ops.quote_name
    point_columns = ["run_id", "key", "step", "value", "time", "seq"]
    summary_columns = [f.column for f in MetricSummary._meta.concrete_fields if f.column != "id"]
    for i, key in enumerate(keys[1:], start=1):
        with transaction.atomic(), connection.cursor() as cursor:
            picked = ", ".join(
                "%s" if c == "key" else ("seq + %s" if c == "seq" else q(c)) for c in point_columns
            )
            cursor.execute(
                f"INSERT INTO {q(MetricPoint._meta.db_table)} ({', '.join(map(q, point_columns))}) "
                f"SELECT {picked} FROM {q(MetricPoint._meta.db_table)} WHERE run_id = %s AND key = %s",
                [key, i * points, run_id, first],
            )
            picked = ", ".join("%s" if c == "key" else q(c) for c in summary_columns)
            cursor.execute(
                f"INSERT INTO {q(MetricSummary._meta.db_table)} ({', '.join(map(q, summary_columns))}) "
                f"SELECT {picked} FROM {q(MetricSummary._meta.db_table)} WHERE run_id = %s AND key = %s",
                [key, run_id, first],
            )
            MetricKey.objects.create(run_id=run_id, key=key)


def setup_role(keys: int, points: int) -> None:
    """Migrate, make a user and a run, fill its series (unless the database is already filled);
    print the ids and a fresh session."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from modelcore.config import resolve
    from tests.people import make_user
    from webapp.accounts.models import Role, Team
    from webapp.projects.models import Project
    from webapp.runs.models import Run, RunStatus

    call_command("migrate", verbosity=0)
    fill = 0.0
    run = Run.objects.filter(name="long run").first()  # a cached database: filled already
    if run is None:
        team = Team.objects.create(name="bench")
        make_user("viewer", team, Role.VIEWER)
        project = Project.objects.create(team=team, name="run page")
        run = Run.objects.create(
            project=project,
            name="long run",
            preset="tiny-cpu",
            config=resolve("tiny-cpu", {"train": {"max_steps": points}}).to_dict(),
            status=RunStatus.COMPLETED,
            step=points,
        )
        started = time.monotonic()
        if connection.vendor == "sqlite":
            database = connection.settings_dict["NAME"]
            connection.close()  # the bulk fill writes the file through its own connection
            fill_series_bulk_sqlite(database, run.id, key_names(keys), points)
        else:
            fill_series_copies(run.id, key_names(keys), points)
        fill = time.monotonic() - started
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username="viewer"))
    print(
        json.dumps(
            {
                "run": run.id,
                "session": client.cookies["sessionid"].value,
                "fill_seconds": round(fill, 1),
                "points_per_second": round(keys * points / fill) if fill else None,
            }
        )
    )


FIRST_SCREEN_DRAWN = """() => {
  const panels = Array.from(document.querySelectorAll('.panel:not([hidden])'));
  const inView = panels.filter((p) => { const r = p.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; });
  return inView.length > 0 && inView.every((p) => { const d = p.querySelector('.chart'); return d.data && d.data.length; });
}"""

# Scrolls each panel of the open groups into view in turn and waits for it to be drawn;
# answers the time since the navigation started when the last one was.
ALL_PANELS_DRAWN = """async () => {
  const drawn = (p) => { const d = p.querySelector('.chart'); return d.data && d.data.length; };
  const panels = Array.from(document.querySelectorAll('details[open] .panel:not([hidden])'));
  for (const p of panels) {
    p.scrollIntoView({ block: 'center' });
    while (!drawn(p)) await new Promise((r) => setTimeout(r, 10));
  }
  return { ms: performance.now(), panels: panels.length };
}"""

TIMINGS = """() => { const nav = performance.getEntriesByType('navigation')[0];
  const series = performance.getEntriesByType('resource').filter((e) => e.name.includes('/series'));
  return {html: nav.responseEnd - nav.startTime, now: performance.now() - nav.startTime,
          ready: nav.domContentLoadedEventEnd - nav.startTime,
          series: series.length, bytes: series.reduce((n, e) => n + e.transferSize, 0)}; }"""


def _figure(values: list[float]) -> dict[str, int]:
    return {"median": round(statistics.median(values)), "max": round(max(values))}


def measure_page(base_url: str, session: str, run_id: int, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    html, ready, first, every, requests, fetched, every_requests = [], [], [], [], [], [], []
    panels = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": session, "url": base_url}])
        for i in range(loads + 1):  # the first load warms the server and the browser's caches
            page = context.new_page()
            page.goto(f"{base_url}/runs/{run_id}/", wait_until="commit")
            page.wait_for_function(FIRST_SCREEN_DRAWN, timeout=120_000, polling=10)
            timing = page.evaluate(TIMINGS)
            scrolled = page.evaluate(ALL_PANELS_DRAWN)
            after = page.evaluate(TIMINGS)
            if i:
                html.append(timing["html"])
                ready.append(timing["ready"])
                first.append(timing["now"])
                requests.append(timing["series"])
                fetched.append(timing["bytes"])
                every.append(scrolled["ms"])
                every_requests.append(after["series"])
                panels = scrolled["panels"]
            page.close()
        browser.close()
    return {
        "html_ms": _figure(html),
        "scripts_ready_ms": _figure(ready),
        "first_screen_ms": _figure(first),
        "first_screen_series_requests": max(requests),
        "first_screen_series_bytes": max(fetched),
        # Every panel of the open groups scrolled to in turn, each waited for until drawn.
        "all_panels_drawn_ms": _figure(every),
        "all_panels": panels,
        "all_panels_series_requests": max(every_requests),
    }


def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    """Fill (or reuse) the database, serve it, and time the page's loads."""
    filled: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        if database_url:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rw-run-page-")))
        else:
            # The embedded database is kept under /tmp between runs: filling 200 keys x 1M points
            # takes long. A fill cut short leaves only the ".partial" folder, started again next time.
            data_dir = cached_data_dir(args.keys, args.points, args.cache_dir)
            if not data_dir.exists():
                partial = data_dir.with_name(data_dir.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                _check_room(partial, args.keys * args.points)
                filled = _setup(args, server_env(partial))
                partial.rename(data_dir)
        env = server_env(data_dir, database_url)
        made = _setup(args, env)  # fills a new PostgreSQL database; on a filled one, only a fresh session
        filled = filled or (made if made["fill_seconds"] else None)
        page: dict[str, Any] = {}
        if not args.fill_only:
            with web_server(env) as server:
                page = measure_page(server.base_url, made["session"], made["run"], args.loads)
        database_bytes = sum(f.stat().st_size for f in data_dir.glob("runwright.sqlite3*"))
    return {
        "keys": args.keys,
        "points_per_key": args.points,
        "database": "postgresql" if database_url else f"sqlite (embedded default), kept in {data_dir}",
        **({"database_bytes": database_bytes} if database_bytes else {}),
        "fill_seconds": filled["fill_seconds"] if filled else "cached: filled by an earlier run",
        **({"fill_points_per_second": filled["points_per_second"]} if filled else {}),
        **page,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


BYTES_PER_POINT = 125  # measured: 108 a point with its indexes, summaries and the index sorts' room


def _check_room(folder: Path, points: int) -> None:
    """Refuse a fill that would not fit on the disk, saying what would."""
    free = shutil.disk_usage(folder).free
    needed = points * BYTES_PER_POINT
    if needed > free:
        raise SystemExit(
            f"the fill needs about {needed / 1e9:.0f} GB and {folder} has {free / 1e9:.0f} GB free: "
            f"use fewer --keys or --points (at most about {free // BYTES_PER_POINT:,} points in all), "
            "or another --cache-dir"
        )


def _setup(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    setup = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_page", "--role", "setup"]
        + ["--keys", str(args.keys), "--points", str(args.points)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=24 * 3600,
    )
    if setup.returncode != 0:
        raise RuntimeError(f"setup failed:\n{setup.stderr[-3000:]}")
    return json.loads(setup.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200, help="metric keys of the run (default 200)")
    parser.add_argument("--points", type=int, default=1_000_000, help="steps per key (default 1,000,000)")
    parser.add_argument("--loads", type=int, default=5, help="timed page loads (default 5)")
    parser.add_argument("--database-url", default="", help="a PostgreSQL server; default: embedded SQLite")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=CACHE_ROOT,
        help=f"where filled SQLite databases are kept between runs (default {CACHE_ROOT})",
    )
    parser.add_argument(
        "--fill-only", action="store_true", help="fill (or find) the cached database, print its shape, stop"
    )
    parser.add_argument("--role", choices=("setup",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keys < 1 or args.points < 1 or args.loads < 1:
        parser.error("--keys, --points and --loads must be positive")
    if args.role == "setup":
        setup_role(args.keys, args.points)
        return 0
    if args.database_url and not args.database_url.startswith("postgres"):
        parser.error("--database-url must name a PostgreSQL server (the default is embedded SQLite)")
    if not CHROMIUM.exists():
        parser.error(f"needs Chromium at {CHROMIUM}")
    if not args.database_url:
        result = run(args, "")
    else:
        import psycopg

        base = urllib.parse.urlsplit(args.database_url)
        name = f"rw_run_page_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            result = run(args, urllib.parse.urlunsplit(base._replace(path=f"/{name}")))
        finally:
            with psycopg.connect(args.database_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps({"benchmark": "run_page", "cpu_count": os.cpu_count(), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
