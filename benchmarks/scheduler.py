"""Fleet scheduler: placement decisions per second and queue latency, 1,000 queued runs over 50 hosts.

    python -m benchmarks.scheduler [--runs 1000] [--hosts 50] [--rounds 30] [--database-url URL]

A throwaway PostgreSQL database (on the server ``--database-url`` or RUNWRIGHT_DATABASE_URL
names) is migrated and filled with ``--hosts`` registered hosts of 8 GPUs each (half
"H100", half "A100") and ``--runs`` queued runs of 10 teams: 1, 2, 4 or 8 GPUs each, a
priority from 0 to 9, a fifth asking for a GPU model and three teams under a quota. The
database is dropped at the end. Launches are not sent to a broker: ``send_launch`` is
replaced by a recorder, so what is timed is the scheduler's own reads and writes.

- ``first_pass``: one pass over the full queue on an empty fleet (the burst after an outage);
  ``decisions_per_s`` counts every queued run the pass decided about (placed or told why it
  waits), ``placements_per_s`` the placed ones.
- ``steady``: ``--rounds`` rounds, each ending 5% of the running runs (their end written as
  a supervisor writes it), then one pass, with the queue topped up to ``--runs``. The queue
  latency of a run is the time from the write that freed its GPUs to its launch being sent
  (the pass a finished run triggers); p50/p95 over every run placed.
- ``concurrent``: 4 passes at once on 4 connections over a fresh burst; afterwards no host
  holds more than it has, no team more than its quota, no run is placed twice.

Prints one JSON object with the machine's CPU count and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any

MODELS = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB")


def _setup(url: str) -> None:
    os.environ["RUNWRIGHT_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _fill(hosts: int, runs: int, rng: random.Random) -> dict[str, Any]:
    from modelcore.config import resolve
    from webapp.accounts.models import Team
    from webapp.fleet import services
    from webapp.fleet.models import TeamQuota
    from webapp.projects.models import Project

    for i in range(hosts):
        gpus = [services.GpuInfo(str(g), MODELS[i % 2], 81920) for g in range(8)]
        services.register_host(name=f"host-{i:03d}@bench", queue=f"host.{i:03d}", gpus=gpus)
    projects = []
    for t in range(10):
        team = Team.objects.create(name=f"team-{t}")
        if t < 3:
            TeamQuota.objects.create(team=team, max_gpus=48)
        projects.append(Project.objects.create(team=team, name="bench"))
    base = resolve("tiny-cpu").to_dict()
    return {"projects": projects, "base": base}


def _queue(state: dict[str, Any], count: int, rng: random.Random) -> None:
    from webapp.runs.models import Run

    rows = []
    for _ in range(count):
        config = json.loads(json.dumps(state["base"]))
        config["parallel"].update(device="auto", num_processes=rng.choice((1, 1, 2, 4, 8)))
        config["resources"].update(
            priority=rng.randrange(10), gpu_model=rng.choice(("H100", "A100")) if rng.random() < 0.2 else ""
        )
        rows.append(Run(project=rng.choice(state["projects"]), name="r", preset="tiny-cpu", config=config))
    Run.objects.bulk_create(rows, batch_size=500)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection
    from django.db.models.functions import Now

    from webapp.fleet.models import Host, Placement, TeamQuota
    from webapp.runs import transitions
    from webapp.runs.models import Run, RunStatus
    from workers import scheduler

    def beat() -> None:  # what each host's worker does every 15 s: they are alive
        Host.objects.update(heartbeat_at=Now())

    sent: dict[int, float] = {}
    scheduler.send_launch = lambda run_id, queue: sent.setdefault(run_id, time.perf_counter())
    rng = random.Random(11)
    state = _fill(args.hosts, args.runs, rng)
    _queue(state, args.runs, rng)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    beat()
    started = time.perf_counter()
    first = scheduler.schedule()
    took = time.perf_counter() - started
    decided = len(first.placed) + first.waiting
    result: dict[str, Any] = {
        "first_pass": {
            "queued": args.runs,
            "placed": len(first.placed),
            "waiting": first.waiting,
            "seconds": round(took, 3),
            "decisions_per_s": round(decided / took, 1),
            "placements_per_s": round(len(first.placed) / took, 1),
        }
    }

    pass_ms, latencies, placed_total = [], [], 0
    for _ in range(args.rounds):
        # The placed runs start: a worker's claim, as launch_run writes it.
        for run_id, _host in first.placed:
            transitions.claim_for_launch(run_id, "bench")
        running = list(Run.objects.filter(status=RunStatus.STARTING).values_list("pk", "attempt"))
        ending = rng.sample(running, max(1, len(running) // 20))
        sent.clear()
        freed_at = time.perf_counter()
        for run_id, attempt in ending:
            transitions.finish(run_id, attempt, RunStatus.COMPLETED)
        queued = Run.objects.filter(status=RunStatus.QUEUED).count()
        _queue(state, max(0, args.runs - queued), rng)
        beat()
        started = time.perf_counter()
        first = scheduler.schedule()
        pass_ms.append((time.perf_counter() - started) * 1000)
        latencies += [(t - freed_at) * 1000 for t in sent.values()]
        placed_total += len(first.placed)
    result["steady"] = {
        "rounds": args.rounds,
        "queued_per_pass": args.runs,
        "placed": placed_total,
        "pass_ms": _percentiles(pass_ms),
        "queue_latency_ms": _percentiles(latencies),
    }

    # A fresh burst decided by 4 schedulers at once.
    Run.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.STARTING)).update(status=RunStatus.CANCELLED)
    scheduler.schedule()  # releases everything
    _queue(state, args.runs, rng)
    beat()
    placed_by: list[int] = []
    errors: list[str] = []

    def one_pass() -> None:
        from django.db import connection as own

        try:
            placed_by.append(len(scheduler.schedule().placed))
        except Exception as exc:  # reported, not hidden
            errors.append(repr(exc))
        finally:
            own.close()

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - started
    over = [
        f"{h.name}: {h.reserved} reserved of {len(h.gpus.all())}, placements hold {held}"
        for h in Host.objects.prefetch_related("gpus")
        for held in [
            sum(Placement.objects.filter(host=h, released_at__isnull=True).values_list("count", flat=True))
        ]
        if h.reserved > len(h.gpus.all()) or h.reserved != held
    ]
    over_quota = [q.pk for q in TeamQuota.objects.all() if q.max_gpus is not None and q.in_use > q.max_gpus]
    result["concurrent"] = {
        "schedulers": 4,
        "placed_by_each": placed_by,
        "seconds": round(took, 3),
        "errors": errors,
        "hosts_overfilled_or_miscounted": over,
        "teams_over_quota": over_quota,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--database-url", default=os.environ.get("RUNWRIGHT_DATABASE_URL", ""))
    args = parser.parse_args(argv)
    if args.runs < 1 or args.hosts < 1 or args.rounds < 1:
        parser.error("--runs, --hosts and --rounds must be positive")
    if not args.database_url.startswith("postgres"):
        parser.error("needs a PostgreSQL server: --database-url or RUNWRIGHT_DATABASE_URL")
    import psycopg

    base = urllib.parse.urlsplit(args.database_url)
    name = f"rw_scheduler_{uuid.uuid4().hex[:12]}"
    url = urllib.parse.urlunsplit(base._replace(path=f"/{name}"))
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        _setup(url)
        result = {
            "benchmark": "scheduler",
            "hosts": args.hosts,
            "gpus": args.hosts * 8,
            "cpu_count": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            **measure(args),
        }
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
