"""The run page of a run with many metric keys and long series: how long until it is usable.

    python -m benchmarks.run_page [--keys 200] [--points 1000000] [--loads 5]
                                  [--cache-dir DIR] [--fill-only] [--database-url URL]

The run gets ``--keys`` keys across the page's groups (train/, val/, perf/, system/ with a
line per rank, eval/, moe/ with a line per expert, and a few without a prefix), each with
``--points`` steps of one series (``point_value``: a falling curve with a spike every ~100k
steps). On the embedded default (SQLite) the rows are written straight into the file
(``fill_series_bulk_sqlite``: points, seqs, keys and min/max summaries, row for row what
the ingest path's ``write_points`` writes for them, which tests/metrics/test_run_page_fixture.py
checks); the filled data folder is kept under ``--cache-dir`` (default
``/tmp/runwright-bench-run-page/``) between runs, keyed by a digest of the migrations, the
fill's version and the sizes. 200 x 1M points: 27.6 GB, filled in 39 min at load average
7-13 on the 2-core machine (86k points/s, the two index builds most of it; 470k/s at 5 x 1M;
the writer's path: ~18k/s, 3 hours). With ``--database-url`` (PostgreSQL) a
throwaway database is filled (the first key through the writer, copies inside the
database for the rest) and dropped afterwards.

The web server is uvicorn serving ``webapp.asgi`` (``benchmarks.http_server``); headless
Chromium (``/usr/bin/chromium``, 1400 x 900) opens the run page once untimed (the server's
first answers), then ``--loads`` cold visits (each in a fresh browser context: nothing
cached, no compiled code) and ``--loads`` warm ones (one context that has seen the page:
its scripts from the browser's cache), and times from the navigation's start to:

- ``html_ms``: the page's HTML received (``responseEnd``);
- ``scripts_ready_ms``: the page's deferred scripts (Plotly.js among them) run (DOMContentLoaded);
- ``first_screen_ms``: every panel in the first screen drawn with its series.

The headline, chosen before the 200 x 1M runs: the cold visit's ``first_screen_ms`` median
(the target: under 1 s). Then, once, every panel of the open groups scrolled to in turn and
drawn (``all_panels_drawn_ms``). Also printed: the first screen's series requests and bytes,
the database's size, the CPU and the load average before and after.

Panels below the first screen or in folded groups are drawn only when scrolled to, so the
first screen does not grow with the number of keys beyond the key list.

Where a first screen's time went (Chromium trace, 200 keys, load average ~10 on the 2-core
machine), and what changed: the observer's first callback came only after every deferred
script, Plotly.js included, had run, so the series reads waited on the browser; now the
on-screen panels read as soon as the page's script has laid them out, in one request (the
server answers a page's sync views one at a time). Laying out the panels took ~230 ms, most
of it ``localeCompare`` with options per comparison (now one ``Intl.Collator``); off-screen
panels are skipped by ``content-visibility``. Plotly.js (the basic bundle, 4.1.1, the
newest) runs in ~200-270 ms of a cold visit at load ~10 (780 ms at 14); its URL names its
bytes and is ``immutable``. What is left on the first screen's path is the browser's:
the page's style and layout, Plotly.js, four first plots; the series answer comes first.

Medians of 7 loads, 200 keys x 1M points (27.6 GB), Intel Xeon 2 cores shared with other
work (load average 6.5-14.7 throughout: every figure is several times a quiet machine's),
``nice -n -10``; "before" is commit 05dd7bf's page, same benchmark and data:

| 200 x 1M | cold: HTML / scripts / first screen | warm: first screen | all 106 panels |
|---|---|---|---|
| before (load 9.9-14.4) | 250 / 1545 / 2532 ms | 3236 ms | 25.7 s |
| after (load 6.5-10.3) | 242 / 1171 / 1541 ms | 2178 ms | 14.6 s |
| after (load 14.0-14.7) | 298 / 1811 / 2232 ms | 1770 ms | 24.5 s |

The 1 s target is not shown on this machine: at this load the noise is larger than the
changes (200 x 20k A/B runs crossed over). It needs a quiet run.
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
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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
            "temp_store=FILE",  # the index sorts spill to files: in memory 200 x 1M took 10 GB
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
        # One key's series and summaries in temporary tables, copied into the real
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
  return inView.length > 0 && inView.every((p) => { const d = p.querySelector('.chart'); return d && d.data && d.data.length; });
}"""

# Scrolls each panel of the open groups into view in turn and waits for it to be drawn;
# answers the time since the navigation started when the last one was.
ALL_PANELS_DRAWN = """async () => {
  const drawn = (p) => { const d = p.querySelector('.chart'); return d && d.data && d.data.length; };
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
    return {"median": round(statistics.median(values)), "max": round(max(values)), "n": len(values)}


def _load(context: Any, url: str) -> dict[str, Any]:
    """One visit of the run page in a new tab of ``context``: its timings until the first screen is drawn."""
    page = context.new_page()
    try:
        page.goto(url, wait_until="commit")
        page.wait_for_function(FIRST_SCREEN_DRAWN, timeout=120_000, polling=10)
        timing = page.evaluate(TIMINGS)
    finally:
        page.close()
    return timing


def _visits(timings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "html_ms": _figure([t["html"] for t in timings]),
        "scripts_ready_ms": _figure([t["ready"] for t in timings]),
        "first_screen_ms": _figure([t["now"] for t in timings]),
        "first_screen_series_requests": max(t["series"] for t in timings),
        "first_screen_series_bytes": max(t["bytes"] for t in timings),
    }


def measure_page(base_url: str, session: str, run_id: int, loads: int) -> dict[str, Any]:
    """``loads`` cold visits (each in a fresh browser context: no cached scripts, no compiled
    code), then ``loads`` warm ones (one context that has seen the page: scripts from its cache),
    after one untimed visit that warms the server; then every panel scrolled to once."""
    from playwright.sync_api import sync_playwright

    url = f"{base_url}/runs/{run_id}/"
    cookie = [{"name": "sessionid", "value": session, "url": base_url}]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS, headless=True)

        def context() -> Any:
            made = browser.new_context(viewport={"width": 1400, "height": 900})
            made.add_cookies(cookie)
            return made

        warm = context()
        _load(warm, url)  # the server's first answers (imports, templates, the database's pages)
        cold = []
        for _ in range(loads):
            fresh = context()
            cold.append(_load(fresh, url))
            fresh.close()
        warmed = [_load(warm, url) for _ in range(loads)]
        page = warm.new_page()
        page.goto(url, wait_until="commit")
        page.wait_for_function(FIRST_SCREEN_DRAWN, timeout=120_000, polling=10)
        scrolled = page.evaluate(ALL_PANELS_DRAWN)
        every_requests = page.evaluate(TIMINGS)["series"]
        browser.close()
    return {
        "cold": _visits(cold),
        "warm": _visits(warmed),
        # One warm visit, every panel of the open groups scrolled to in turn, each waited for.
        "all_panels_drawn_ms": round(scrolled["ms"]),
        "all_panels": scrolled["panels"],
        "all_panels_series_requests": every_requests,
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


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
        load_before = [round(x, 2) for x in os.getloadavg()]
        if not args.fill_only:
            with web_server(env) as server:
                page = measure_page(server.base_url, made["session"], made["run"], args.loads)
        database_bytes = sum(f.stat().st_size for f in data_dir.glob("runwright.sqlite3*"))
    headline = {}
    if page:
        headline = {
            # Chosen before any 200 x 1M run: a first visit's first screen, nothing cached in the browser.
            "headline": "cold.first_screen_ms.median",
            "headline_ms": page["cold"]["first_screen_ms"]["median"],
            "target_ms": 1000,
        }
    return {
        **headline,
        "keys": args.keys,
        "points_per_key": args.points,
        "database": "postgresql" if database_url else f"sqlite (embedded default), kept in {data_dir}",
        **({"database_bytes": database_bytes} if database_bytes else {}),
        "fill_seconds": filled["fill_seconds"] if filled else "cached: filled by an earlier run",
        **({"fill_points_per_second": filled["points_per_second"]} if filled else {}),
        **page,
        "cpu_model": cpu_model(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
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
