#!/usr/bin/env bash
# Run the whole test suite.
#
# Pass 1 runs everything on the embedded default (SQLite, filesystem broker).
# Pass 2, when RUNWRIGHT_DATABASE_URL / RUNWRIGHT_REDIS_URL are set (CI sets
# them), runs the database- and broker-backed suites again on PostgreSQL and
# Redis: what must hold on both is tested on both. Only the tests that touch the
# database, the broker or Redis (--services-only, tests/conftest.py): engine,
# parsing and browser tests give the same answer on any backend.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== installing Debian's chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet . || { echo "ruff format would change files: run make format" >&2; exit 1; }

run_pytest() {
  set +e
  .venv/bin/python -m pytest "$@"
  local rc=$?
  set -e
  if [ "$rc" = 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
  fi
  [ "$rc" = 0 ] || exit "$rc"
}

echo "== pytest, embedded default (SQLite, filesystem broker)"
(unset RUNWRIGHT_DATABASE_URL RUNWRIGHT_REDIS_URL RUNWRIGHT_BROKER_URL; run_pytest "$@")

if [ -n "${RUNWRIGHT_DATABASE_URL:-}" ] || [ -n "${RUNWRIGHT_REDIS_URL:-}" ]; then
  echo "== pytest, services (database: ${RUNWRIGHT_DATABASE_URL:-SQLite}, redis: ${RUNWRIGHT_REDIS_URL:-none})"
  run_pytest --services-only tests/webapp tests/workers tests/metrics tests/evals tests/faults "$@"
fi
