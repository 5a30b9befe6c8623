"""Writing and charting a long metric series: Runwright's store with and without its summaries.

    python -m benchmarks.metrics_store [--points 1000000] [--batch 2000] [--max-points 2000]

Uses the database ``RUNWRIGHT_DATABASE_URL`` names (PostgreSQL in CI) or the embedded
SQLite, in a throwaway test database that is dropped afterwards. One run logs ``--points``
steps of one key, in batches of ``--batch`` points as the ingester writes them, twice:
through ``upsert_points`` (points, keys and min/max summaries) and as the bare point upsert
the store did before summaries existed. Then one chart of the whole series
(``--max-points``), and a zoom into its middle tenth, are read two ways: from the summaries
(``selectors.series``) and by the scan they replace (every row of the range read, then the
same min/max downsampling). Both return only real points and keep the series' spike; the
scan's cost grows with the series, the summaries' with the chart. Prints one JSON object:
``ours`` and ``peer`` are the full-chart read times of summaries and scan (``ratio`` =
peer/ours, higher is better), the rest is listed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any


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
    from webapp.metrics.selectors import downsample_minmax, series
    from webapp.metrics.services import Point, upsert_points
    from webapp.projects.models import Project
    from webapp.runs.models import Run

    project = Project.objects.create(team=Team.objects.create(name="bench"), name="bench")
    runs = {
        name: Run.objects.create(project=project, name=name, config=preset("tiny-cpu").to_dict())
        for name in ("summarised", "bare")
    }
    spike = args.points * 2 // 3

    def value(step: int) -> float:
        return 50.0 if step == spike else 2.0 + 3.0 / (1.0 + step / 1000) + (step % 97) * 1e-4

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
    full = read_results["full_chart"]
    return {
        "benchmark": "metrics_store",
        "unit": "seconds to read one chart of the whole series",
        "ours": full["summaries_s"],
        "peer": full["scan_s"],
        "peer_name": "the same store without summaries: read every row, then min/max downsample",
        "ratio": full["ratio"],
        "ratio_note": "peer seconds / ours (higher is better)",
        "reads": read_results,
        "ingest_points_per_s": {k: round(v, 1) for k, v in ingest.items()},
        "ingest_cost_of_summaries": round(ingest["bare"] / ingest["summarised"], 2),
        "settings": {
            "points": args.points,
            "batch": args.batch,
            "max_points": args.max_points,
            "repeats": args.repeats,
            "database": connection.vendor,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics_store")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    _django()
    from django.db import connection

    # A throwaway database (test_<name>), as the test suite uses: the benchmark never
    # touches the data of a real installation.
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
