"""Runs table: how long a project of 5,000 runs takes to list, as a page and over the API.

    python -m benchmarks.runs_table [--runs 5000] [--requests 30] [--database-url URL] [--quick]

The benchmark creates a throwaway database on the PostgreSQL server that ``--database-url``
(or RUNWRIGHT_DATABASE_URL) names, migrates it, and fills one project with ``--runs`` runs:
configs of 2 to 12 layers, mixed statuses, one or two of 20 tags each, and ``train/loss``
and ``val/loss`` series written through the metrics app's own writer (``upsert_points``,
so the per-bucket summaries the table reads are the real ones). The web server is uvicorn
serving ``webapp.asgi`` in its own process, as in production; each view is asked
``--requests`` times over HTTP/1.1 (after a few warm-up requests) and timed from the
request to the last byte of the answer. The database is dropped at the end.

Views: the project page and the API's list, each in the default view (newest first, 50
a page) and in a filtered and sorted view (a status, a tag, a config and a metric
condition, two chosen columns, sorted by a metric's minimum), the page's live refresh
(``runs.json``) in the filtered view, and the API's list of all 5,000 runs sorted by a
metric's last value (its worst case: every run's last point is read).

Prints one JSON object: for each view ``p50_ms``, ``p95_ms``, ``max_ms``, the web server's
CPU milliseconds per request (``server_cpu_ms``: on a busy machine the wall times include
waiting for a core) and the number of runs the view matched; the target is p95 under 300 ms.
The machine's load average is printed beside them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from benchmarks.http_server import cpu_seconds, server_env, web_server

ROOT = Path(__file__).resolve().parent.parent
TAGS = [f"sweep-{i}" for i in range(20)]
FILTERED = (
    "status=completed,failed&tag=sweep-3&where=model.n_layers>=4;val/loss:min<2.5"
    "&columns=val/loss:min,model.n_layers&sort=val/loss:min"
)

SORTED_ALL = "sort=-train/loss:last&columns=val/loss:max"


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


def setup_role(runs: int) -> None:
    """Migrate the fresh database and fill one project; print the ids, a session and a token."""
    _django()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from modelcore.config import resolve
    from tests.people import make_user
    from webapp.accounts.models import Role, Team
    from webapp.accounts.services import create_api_token
    from webapp.annotations.models import RunTag
    from webapp.metrics.services import Point, upsert_points
    from webapp.projects.models import Project
    from webapp.runs.models import Run, RunStatus

    call_command("migrate", verbosity=0)
    team = Team.objects.create(name="bench")
    user = make_user("viewer", team, Role.MEMBER)
    project = Project.objects.create(team=team, name="runs table")
    rng = random.Random(7)
    configs = {n: resolve("tiny-cpu", {"model": {"n_layers": n}}).to_dict() for n in (2, 4, 6, 8, 12)}
    statuses = [RunStatus.COMPLETED] * 6 + [
        RunStatus.FAILED,
        RunStatus.LOST,
        RunStatus.RUNNING,
        RunStatus.CANCELLED,
    ]
    made = Run.objects.bulk_create(
        [
            Run(
                project=project,
                name=f"run-{i:05d}",
                preset="tiny-cpu",
                config=configs[rng.choice(list(configs))],
                status=rng.choice(statuses),
                step=200,
                last_loss=rng.uniform(1.5, 4.0),
                created_by=user,
            )
            for i in range(runs)
        ],
        batch_size=1000,
    )
    RunTag.objects.bulk_create(
        [RunTag(run=run, name=tag) for run in made for tag in rng.sample(TAGS, rng.choice((1, 2)))],
        batch_size=2000,
    )
    now = time.time()
    for run in made:
        floor = rng.uniform(1.5, 4.0)
        points = [Point("train/loss", s, floor + 4.0 / s, now) for s in range(10, 210, 10)]
        points += [Point("val/loss", s, floor + 0.1 + 4.0 / s, now) for s in range(50, 250, 50)]
        upsert_points(run.id, points)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh statistics, as autovacuum would have them on a live server
    client = Client()
    client.force_login(user)
    print(
        json.dumps(
            {
                "project": project.id,
                "session": client.cookies["sessionid"].value,
                "token": create_api_token(user),
            }
        )
    )


def _time(port: int, path: str, headers: dict[str, str], requests: int, server_pid: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times: list[float] = []
    matched: Any = None
    try:
        for i in range(requests + 3):  # three warm-up requests
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - start) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
            if i == 2:
                cpu_start = cpu_seconds(server_pid)
            if i >= 3:
                times.append(elapsed)
            if matched is None and (path.startswith("/api/") or "runs.json" in path):
                matched = json.loads(body).get("total")
        cpu_ms = (cpu_seconds(server_pid) - cpu_start) * 1000 / requests
    finally:
        conn.close()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
        "max_ms": round(times[-1], 1),
        "requests": len(times),
        # The web server's own CPU per request: what the figures above would be on an idle machine,
        # less the database's time.
        "server_cpu_ms": round(cpu_ms, 1),
        **({"runs_matched": matched} if matched is not None else {}),
    }


def measure(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rw-runs-table-") as tmp:
        env = server_env(tmp, database_url)
        started = time.monotonic()
        setup = subprocess.run(
            [sys.executable, "-m", "benchmarks.runs_table", "--role", "setup", "--runs", str(args.runs)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
        )
        if setup.returncode != 0:
            raise RuntimeError(f"setup failed:\n{setup.stderr[-3000:]}")
        made = json.loads(setup.stdout.strip().splitlines()[-1])
        fill_s = time.monotonic() - started
        with web_server(env) as server:
            page = {"Cookie": f"sessionid={made['session']}"}
            api = {"Authorization": f"Bearer {made['token']}"}
            p = made["project"]
            views = {
                "page_default": (f"/projects/{p}/", page),
                "page_filtered_sorted": (f"/projects/{p}/?{FILTERED}", page),
                "page_refresh_filtered_sorted": (f"/projects/{p}/runs.json?{FILTERED}", page),
                "api_default": (f"/api/v1/projects/{p}/runs", api),
                "api_filtered_sorted": (f"/api/v1/projects/{p}/runs?{FILTERED}", api),
                # The worst case: every run's last point read to sort the whole project by it.
                "api_all_sorted_by_metric": (f"/api/v1/projects/{p}/runs?{SORTED_ALL}", api),
            }
            results = {
                name: _time(server.port, path, headers, args.requests, server.pid)
                for name, (path, headers) in views.items()
            }
        return {
            "runs": args.runs,
            "fill_seconds": round(fill_s, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "filtered_query": FILTERED,
            **results,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs in the project (default 5000)")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per view (default 30)")
    parser.add_argument("--database-url", default=os.environ.get("RUNWRIGHT_DATABASE_URL", ""))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 runs, 5 requests")
    parser.add_argument("--role", choices=("setup",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "setup":
        setup_role(args.runs)
        return 0
    if args.runs < 1 or args.requests < 1:
        parser.error("--runs and --requests must be positive")
    if not args.database_url.startswith("postgres"):
        parser.error("needs a PostgreSQL server: --database-url or RUNWRIGHT_DATABASE_URL")
    if args.quick:
        args.runs, args.requests = min(args.runs, 300), min(args.requests, 5)
    import psycopg

    base = urllib.parse.urlsplit(args.database_url)
    name = f"rw_runs_table_{uuid.uuid4().hex[:12]}"
    url = urllib.parse.urlunsplit(base._replace(path=f"/{name}"))
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        result = {"benchmark": "runs_table", "cpu_count": os.cpu_count(), **measure(args, url)}
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
