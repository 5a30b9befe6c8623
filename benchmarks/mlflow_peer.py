"""The MLflow side of ``benchmarks.metrics_store``: the same series logged to and charted by MLflow.

    PYTHON_WITH_MLFLOW -m benchmarks.mlflow_peer --backend-uri URI [--points N]
        [--ingest-points M] [--keys-per-step K] [--batch B] [--max-results R]

Run by ``benchmarks.metrics_store`` under an interpreter that has ``mlflow`` (it need not be
Runwright's). Starts ``mlflow server`` on the given backend store. Ingest: the same points
Runwright's side ingests (``ingest_points``: K keys a step), sent over HTTP by
``MlflowClient.log_batch`` in calls of ``--batch`` points (at most 1000, MLflow's limit);
only those calls are timed. The chart: a run whose ``--points``-step series is filled
straight into MLflow's ``metrics`` table (logging a million points through the API would
take minutes), then the read its UI makes, timed over HTTP:
``/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval`` with ``max_results`` R, for the
whole series and for its middle tenth. Prints one JSON object.

This module imports nothing but the standard library at import time, so Runwright's side
shares the series, the ingested points and the HTTP timing with it.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

KEY = "train/loss"


def spike_step(points: int) -> int:
    return points * 2 // 3


def series_value(step: int, points: int) -> float:
    """The benchmark's loss curve: a smooth decay with a ripple, and one spike of 50."""
    return 50.0 if step == spike_step(points) else 2.0 + 3.0 / (1.0 + step / 1000) + (step % 97) * 1e-4


def ingest_points(total: int, keys_per_step: int) -> list[tuple[int, dict[str, float]]]:
    """The ingest benchmark's points, as a trainer logs them: (step, {key: value}), K keys a step."""
    keys = [KEY] + [f"train/extra_{i}" for i in range(1, keys_per_step)]
    return [
        (step, {key: series_value(step, total) + i for i, key in enumerate(keys)})
        for step in range(total // keys_per_step)
    ]


def timed_get_json(url: str, repeats: int, headers: dict[str, str] | None = None) -> tuple[float, Any]:
    """Median seconds of a GET (a new connection each time, body read and parsed), and the body."""
    times, body = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=600
        ) as response:
            body = json.loads(response.read())
        times.append(time.perf_counter() - start)
    return statistics.median(times), body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(backend_uri: str, port: int, artifacts: str) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri]
        + [
            "--default-artifact-root",
            artifacts,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return server
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited with status {server.returncode}") from None
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("mlflow server did not answer /health within 180 s")


def _fill_directly(backend_uri: str, run_id: str, start: int, points: int) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(backend_uri)
    metrics = sa.Table("metrics", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        for lo in range(start, points, 50_000):
            rows = [
                {
                    "key": KEY,
                    "value": series_value(s, points),
                    "timestamp": 0,
                    "step": s,
                    "is_nan": False,
                    "run_uuid": run_id,
                }
                for s in range(lo, min(lo + 50_000, points))
            ]
            conn.execute(metrics.insert(), rows)
    engine.dispose()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    if not 1 <= args.batch <= 1000:
        raise SystemExit("--batch must be 1 to 1000: MLflow's log_batch takes at most 1000 metrics")
    port = free_port()
    server = _start_server(args.backend_uri, port, tempfile.mkdtemp(prefix="rw-mlflow-artifacts-"))
    base = f"http://127.0.0.1:{port}"
    try:
        client = MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("bench")
        ingest_run = client.create_run(experiment).info.run_id
        metrics = [
            m
            for step, values in ingest_points(args.ingest_points, args.keys_per_step)
            for m in (Metric(k, v, 0, step) for k, v in values.items())
        ]
        ingest_s = 0.0
        for lo in range(0, len(metrics), args.batch):
            batch = metrics[lo : lo + args.batch]
            start = time.perf_counter()
            client.log_batch(ingest_run, metrics=batch)
            ingest_s += time.perf_counter() - start
        chart_run = client.create_run(experiment).info.run_id
        _fill_directly(args.backend_uri, chart_run, 0, args.points)

        def read(extra: dict[str, int]) -> tuple[float, list[tuple[int, float]]]:
            query = urllib.parse.urlencode(
                {"run_ids": chart_run, "metric_key": KEY, "max_results": args.max_results, **extra}
            )
            url = f"{base}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?{query}"
            seconds, body = timed_get_json(url, args.repeats)
            return seconds, [(int(m["step"]), m["value"]) for m in body.get("metrics", [])]

        full_s, full = read({})
        zoom = (args.points * 45 // 100 + 1, args.points * 55 // 100)
        zoom_s, zoomed = read({"start_step": zoom[0], "end_step": zoom[1]})
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "peer": "mlflow",
        "ingest_points_per_s": round(len(metrics) / ingest_s, 1),
        "ingest_points": len(metrics),
        "ingest_calls": -(-len(metrics) // args.batch),
        "full_chart_s": round(full_s, 4),
        "full_chart_points": len(full),
        "full_chart_spike_kept": any(v == 50.0 for _, v in full),
        "zoom_tenth_s": round(zoom_s, 4),
        "zoom_tenth_points": len(zoomed),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mlflow_peer")
    parser.add_argument("--backend-uri", required=True)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--ingest-points", type=int, default=100_000)
    parser.add_argument("--keys-per-step", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--max-results", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    json.dump(run(parser.parse_args(argv)), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
