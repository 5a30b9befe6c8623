"""Writing and charting a long metric series: Runwright's store vs MLflow's, and vs a plain scan.

    python -m benchmarks.metrics_store [--points 1000000] [--batch 2000] [--max-points 2000]
        [--mlflow-python PATH]

Uses the database ``RUNWRIGHT_DATABASE_URL`` names (PostgreSQL in CI) or the embedded
SQLite, in a throwaway test database that is dropped afterwards. One run logs ``--points``
steps of one key, in batches of ``--batch`` points as the ingester writes them, twice:
through ``upsert_points`` (points, keys and min/max summaries) and as the bare point upsert
the store did before summaries existed. Then one chart of the whole series
(``--max-points``), and a zoom into its middle tenth, are read two ways: from the summaries
(``selectors.series``) and by the scan they replace (every row of the range read, then the
same min/max downsampling). Both return only real points and keep the series' spike.

The peer is MLflow (``benchmarks.mlflow_peer``, run under ``--mlflow-python``: any
interpreter with ``mlflow``, and ``psycopg2-binary`` for PostgreSQL; by default this one
if it has mlflow): the same series in a fresh database of the same kind, its chart read
through the endpoint its UI uses. Prints one JSON object: ``ours`` and ``peer`` are the
full-chart read seconds of Runwright and MLflow, ``ratio`` = peer/ours (higher is better;
null when no MLflow interpreter was found), and everything else beside them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.mlflow_peer import series_value, spike_step


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


def _timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from modelcore.config import preset
    from webapp.accounts.models import Team
    from webapp.metrics.models import MetricPoint
    from webapp.metrics.selectors import downsample_minmax, latest_points, series
    from webapp.metrics.services import Point, upsert_points
    from webapp.projects.models import Project
    from webapp.runs.models import Run

    project = Project.objects.create(team=Team.objects.create(name="bench"), name="bench")
    runs = {
        name: Run.objects.create(project=project, name=name, config=preset("tiny-cpu").to_dict())
        for name in ("summarised", "bare")
    }

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
    ingest: dict[str, float] = {}
    for name, write in writers.items():
        start = time.perf_counter()
        for lo in range(0, args.points, args.batch):
            write(
                [Point("train/loss", s, value(s), 0.0) for s in range(lo, min(lo + args.batch, args.points))]
            )
        ingest[name] = args.points / (time.perf_counter() - start)

    run_ = runs["summarised"]

    def scan(since: int | None, until: int | None) -> dict[str, Any]:
        qs = MetricPoint.objects.filter(run=run_, key="train/loss")
        if since is not None:
            qs = qs.filter(step__gt=since, step__lte=until)
        rows = list(qs.order_by("step").values_list("step", "value").iterator(chunk_size=20_000))
        steps, values = downsample_minmax([r[0] for r in rows], [r[1] for r in rows], args.max_points)
        return {"steps": steps, "values": values}

    zoom = (args.points * 45 // 100, args.points * 55 // 100)
    reads = {
        "full_chart": (
            lambda: series(run_, "train/loss", max_points=args.max_points),
            lambda: scan(None, None),
        ),
        "zoom_tenth": (
            lambda: series(
                run_, "train/loss", since_step=zoom[0], until_step=zoom[1], max_points=args.max_points
            ),
            lambda: scan(*zoom),
        ),
    }
    read_results: dict[str, Any] = {}
    for name, (ours_fn, scan_fn) in reads.items():
        ours_s, ours_out = _timed(ours_fn, args.repeats)
        scan_s, scan_out = _timed(scan_fn, args.repeats)
        for out in (ours_out, scan_out):
            assert len(out["steps"]) <= args.max_points
            assert all(
                v == value(s) for s, v in zip(out["steps"], out["values"], strict=True) if v is not None
            )
        read_results[name] = {
            "summaries_s": round(ours_s, 4),
            "scan_s": round(scan_s, 4),
            "ratio": round(scan_s / ours_s, 1),
            "points_returned": {"summaries": len(ours_out["steps"]), "scan": len(scan_out["steps"])},
        }
        if name == "full_chart":
            read_results[name]["spike_kept"] = {
                "summaries": 50.0 in ours_out["values"],
                "scan": 50.0 in scan_out["values"],
            }
            spikes = [s for s, v in zip(ours_out["steps"], ours_out["values"], strict=True) if v == 50.0]
            assert spikes == [spike_step(args.points)]
    # What a live chart asks each second: the points after the last step it has.
    tail_s, tail = _timed(lambda: latest_points(run_, since_step=args.points - 11), args.repeats)
    assert [s for s, _ in tail["train/loss"]] == list(range(args.points - 10, args.points))
    full = read_results["full_chart"]
    mlflow = mlflow_side(args, connection)
    mlflow_s = mlflow.get("full_chart_s")
    mlflow_ingest = mlflow.get("ingest_points_per_s")
    return {
        "benchmark": "metrics_store",
        "unit": "seconds to read one chart of the whole series",
        "ours": full["summaries_s"],
        "peer": mlflow_s,
        "peer_name": "MLflow server, /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval (its UI's chart read)",
        "ratio": round(mlflow_s / full["summaries_s"], 1) if mlflow_s else None,
        "ratio_note": "peer seconds / ours (higher is better)",
        "mlflow": mlflow,
        "reads": read_results,
        "ingest_points_per_s": {k: round(v, 1) for k, v in ingest.items()},
        "ingest_cost_of_summaries": round(ingest["bare"] / ingest["summarised"], 2),
        "live_tail_read_s": round(tail_s, 4),
        "ingest_ratio_vs_mlflow": round(ingest["summarised"] / mlflow_ingest, 1) if mlflow_ingest else None,
        "settings": {
            "points": args.points,
            "batch": args.batch,
            "max_points": args.max_points,
            "repeats": args.repeats,
            "database": connection.vendor,
        },
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
    command += ["--ingest-points", str(args.mlflow_ingest_points), "--repeats", str(args.repeats)]
    try:
        root = Path(__file__).resolve().parent.parent
        done = subprocess.run(command, capture_output=True, text=True, cwd=root, check=False)
    finally:
        if drop is not None:
            drop()
    if done.returncode != 0:
        return {"skipped": f"the mlflow side failed: {done.stderr.strip()[-500:]}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "database": connection.vendor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_store")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--mlflow-python", help="An interpreter with mlflow (default: this one, if it has it)."
    )
    parser.add_argument(
        "--mlflow-ingest-points",
        type=int,
        default=50_000,
        help="Points logged through MLflow's API to time its ingest; the rest go straight into its table.",
    )
    args = parser.parse_args(argv)
    _django()
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
