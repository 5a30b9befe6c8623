"""The time a training loop spends in one logging call: Runwright's SDK ``run.log`` vs ``mlflow.log_metrics``.

    python -m benchmarks.sdk_overhead [--steps 50000] [--keys 4] [--mlflow-steps 1000]
        [--mlflow-python PATH] [--runwright-url URL --token TOKEN]

Ours: ``runwright.init`` against a live Runwright server (by default one started here:
uvicorn on a fresh SQLite data directory, a user and a token made for it), then ``--steps``
calls ``run.log({K keys}, step=i)``, the loop timed whole (the per-call mean), plus the
same calls timed one by one for percentiles. ``finish()`` is timed apart (the upload of
what is still queued) and the server is asked afterwards whether every point arrived.

The peer: ``mlflow.log_metrics`` (MLflow's synchronous client, its default) against
``mlflow server`` on this machine (SQLite backend), the same points for the first
``--mlflow-steps`` steps (each call is an HTTP round trip: a million would take hours).
It runs under ``--mlflow-python``, an interpreter with the full ``mlflow`` package (the
server is not in mlflow-skinny; install it in a separate virtualenv, see
../shared/PEERS.md), or this one if it has it. Prints one JSON object.

Targets (issue 12): at most 5 µs a call, and at least 100× less than MLflow's client.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_US = 5.0
TARGET_RATIO = 100.0


def point_values(step: int, keys: int) -> dict[str, float]:
    """One step's values, the same for both sides: a loss and K-1 companions."""
    values = {"train/loss": 2.0 + 3.0 / (1.0 + step / 1000)}
    for i in range(1, keys):
        values[f"train/extra_{i}"] = values["train/loss"] + i
    return values


def timed_loop(log: Any, steps: int, keys: int) -> dict[str, float]:
    """Mean µs a call over the whole loop, then per-call percentiles from a second, individually timed pass."""
    prepared = [point_values(s, keys) for s in range(steps)]  # built outside the timing, for both sides
    start = time.perf_counter()
    for step, values in enumerate(prepared):
        log(values, step)
    mean_us = (time.perf_counter() - start) / steps * 1e6
    singles = []
    sample = prepared[: min(steps, 20_000)]
    for step, values in enumerate(sample, start=steps):
        t0 = time.perf_counter()
        log(values, step)
        singles.append((time.perf_counter() - t0) * 1e6)
    singles.sort()
    return {
        "mean_us_per_call": round(mean_us, 3),
        "p50_us": round(singles[len(singles) // 2], 3),
        "p99_us": round(singles[int(len(singles) * 0.99)], 3),
        "max_us": round(singles[-1], 1),
        "calls": steps + len(sample),
    }


# --- Runwright's side ---------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_runwright(data_dir: Path) -> tuple[subprocess.Popen, str, str]:
    """uvicorn on a fresh SQLite data directory, with a user and its token; (process, url, token)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNWRIGHT_")},
        "RUNWRIGHT_DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "PYTHONPATH": str(ROOT),
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    make_token = (
        "from django.contrib.auth import get_user_model\n"
        "from webapp.accounts.services import create_api_token, ensure_personal_team\n"
        "user = get_user_model().objects.create_user('bench', password='bench-password-1')\n"
        "ensure_personal_team(user)\n"
        "print(create_api_token(user))\n"
    )
    done = subprocess.run(
        [*manage, "shell", "-c", make_token], env=env, check=True, capture_output=True, text=True
    )
    token = done.stdout.strip().splitlines()[-1]
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "webapp.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        [*argv, "--log-level", "warning"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/login/", timeout=2).read()
            return server, url, token
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the Runwright server did not start") from None
            time.sleep(0.3)


def runwright_side(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "sdk"))
    import runwright

    server = None
    url, token = args.runwright_url, args.token
    folder = Path(tempfile.mkdtemp(prefix="rw-bench-sdk-"))
    if not url:
        server, url, token = start_runwright(folder / "server")
    try:
        run = runwright.init("sdk-overhead", "bench", url=url, token=token, dir=folder / "run")
        timing = timed_loop(lambda values, step: run.log(values, step=step), args.steps, args.keys)
        start = time.perf_counter()
        run.finish(timeout=600)
        finish_s = time.perf_counter() - start
        request = urllib.request.Request(
            f"{url}/api/v1/runs/{run.id}", headers={"Authorization": f"Bearer {token}"}
        )
        stored = json.loads(urllib.request.urlopen(request, timeout=30).read())
        return {
            **timing,
            "finish_s": round(finish_s, 2),
            "dropped": run.dropped,
            "unsent_after_finish": run.unsent,
            "server_last_step": stored["step"],
            "server_status": stored["status"],
            "all_points_arrived": stored["step"] == timing["calls"] - 1
            and run.dropped == 0
            and run.unsent == 0,
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


# --- MLflow's side (run under an interpreter with mlflow) ------------------------------------


def mlflow_side(args: argparse.Namespace) -> dict[str, Any]:
    python = args.mlflow_python or (sys.executable if importlib.util.find_spec("mlflow.server") else None)
    if python is None:
        return {
            "skipped": "no interpreter with mlflow's server: pass --mlflow-python (see the module docstring)"
        }
    command = [python, "-m", "benchmarks.sdk_overhead", "--as-mlflow-peer"]
    command += ["--mlflow-steps", str(args.mlflow_steps), "--keys", str(args.keys)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if done.returncode != 0:
        return {"skipped": f"the mlflow side failed: {done.stderr.strip()[-800:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def as_mlflow_peer(args: argparse.Namespace) -> dict[str, Any]:
    import mlflow

    from benchmarks.mlflow_peer import _start_server

    folder = Path(tempfile.mkdtemp(prefix="rw-bench-mlflow-"))
    port = free_port()
    server = _start_server(f"sqlite:///{folder / 'mlflow.db'}", port, str(folder / "artifacts"))
    try:
        mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
        mlflow.set_experiment("sdk-overhead")
        with mlflow.start_run():
            timing = timed_loop(
                lambda values, step: mlflow.log_metrics(values, step=step), args.mlflow_steps // 2, args.keys
            )
        return {**timing, "mlflow": mlflow.__version__, "client": "mlflow.log_metrics (synchronous)"}
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50_000, help="run.log calls in the timed loop")
    parser.add_argument("--keys", type=int, default=4, help="metrics per call")
    parser.add_argument("--mlflow-steps", type=int, default=1000, help="mlflow.log_metrics calls, in total")
    parser.add_argument("--mlflow-python", help="an interpreter with the full mlflow package")
    parser.add_argument("--runwright-url", help="a running Runwright (default: one started here)")
    parser.add_argument("--token", help="an API token for --runwright-url")
    parser.add_argument("--as-mlflow-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.as_mlflow_peer:
        print(json.dumps(as_mlflow_peer(args)))
        return 0
    if args.mlflow_python and not shutil.which(args.mlflow_python):
        parser.error(f"--mlflow-python {args.mlflow_python}: no such interpreter")
    if bool(args.runwright_url) != bool(args.token):
        parser.error("--runwright-url and --token go together")
    ours = runwright_side(args)
    peer = mlflow_side(args)
    result: dict[str, Any] = {
        "benchmark": "sdk_overhead",
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "keys_per_call": args.keys,
        "ours": {"client": "runwright run.log (queued, background upload)", **ours},
        "mlflow": peer,
        "target_us_per_call": TARGET_US,
        "target_ratio": TARGET_RATIO,
    }
    if "mean_us_per_call" in peer:
        ratio = peer["mean_us_per_call"] / ours["mean_us_per_call"]
        result["ratio_mlflow_over_ours"] = round(ratio, 1)
        result["meets_targets"] = ours["mean_us_per_call"] <= TARGET_US and ratio >= TARGET_RATIO
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
