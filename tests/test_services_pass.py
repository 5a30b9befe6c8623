"""The second pass (PostgreSQL and Redis, scripts/test.sh) selects the tests a backend can change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _collected(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line}


def test_services_only_keeps_database_and_redis_tests_and_drops_the_rest():
    target = "tests/metrics/test_summaries.py"
    everything = _collected(target)
    services = _collected("--services-only", target, "tests/workers/test_live.py")
    assert "test_bucket_widths_grow_by_the_fanout" in everything  # no database: same on any backend
    assert "test_bucket_widths_grow_by_the_fanout" not in services
    assert "test_a_relogged_spike_disappears_from_the_chart" in services  # the run fixture's db
    assert "test_a_published_message_reaches_a_listener" in services  # marked services: Redis
    assert "test_without_redis_nothing_is_published" not in services
