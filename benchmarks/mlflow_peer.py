"""The MLflow side of ``benchmarks.metrics_store``: the same series logged to and charted by MLflow.

    PYTHON_WITH_MLFLOW -m benchmarks.mlflow_peer --backend-uri URI [--points N] [--ingest-points M]

Run by ``benchmarks.metrics_store`` under an interpreter that has ``mlflow`` (it need not be
Runwright's). Starts ``mlflow server`` on the given backend store, logs ``--ingest-points``
points through ``MlflowClient.log_batch`` (1000 per call, MLflow's limit) to time ingest,
fills the rest of the series straight into MLflow's ``metrics`` table (logging a million
points through the API would take minutes), then times the chart read its UI makes:
``/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval`` with ``max_results`` 2500, for the
whole series and for its middle tenth. Prints one JSON object.

This module imports nothing but the standard library at import time, so Runwright's side
can share ``series_value`` with it.
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=600) as response:
        return json.loads(response.read())


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

    port = _free_port()
    server = _start_server(args.backend_uri, port, tempfile.mkdtemp(prefix="rw-mlflow-artifacts-"))
    base = f"http://127.0.0.1:{port}"
    try:
        client = MlflowClient(tracking_uri=base)
        run_id = client.create_run(client.create_experiment("bench")).info.run_id
        start = time.perf_counter()
        for lo in range(0, args.ingest_points, 1000):
            batch = [
                Metric(KEY, series_value(s, args.points), 0, s)
                for s in range(lo, min(lo + 1000, args.ingest_points))
            ]
            client.log_batch(run_id, metrics=batch)
        ingest_rate = args.ingest_points / (time.perf_counter() - start)
        _fill_directly(args.backend_uri, run_id, args.ingest_points, args.points)

        def read(extra: dict[str, int]) -> tuple[float, list[tuple[int, float]]]:
            query = urllib.parse.urlencode(
                {"run_ids": run_id, "metric_key": KEY, "max_results": args.max_results, **extra}
            )
            url = f"{base}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?{query}"
            times, body = [], {}
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                body = _get_json(url)
                times.append(time.perf_counter() - t0)
            return statistics.median(times), [(int(m["step"]), m["value"]) for m in body.get("metrics", [])]

        full_s, full = read({})
        zoom = (args.points * 45 // 100 + 1, args.points * 55 // 100)
        zoom_s, zoomed = read({"start_step": zoom[0], "end_step": zoom[1]})
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "peer": "mlflow",
        "ingest_points_per_s": round(ingest_rate, 1),
        "ingest_points": args.ingest_points,
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
    parser.add_argument("--ingest-points", type=int, default=50_000)
    parser.add_argument("--max-results", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=3)
    json.dump(run(parser.parse_args(argv)), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
