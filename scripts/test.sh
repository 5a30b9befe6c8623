#!/usr/bin/env bash
# Run the whole test suite.
#
# Pass 1 runs everything on the embedded default (SQLite, filesystem broker).
# Pass 2, when RUNWRIGHT_DATABASE_URL / RUNWRIGHT_REDIS_URL are set (CI sets
# them), runs the database- and broker-backed suites again on PostgreSQL and
# Redis, beside pass 1: what must hold on both is tested on both. Only the tests that touch the
# database, the broker or Redis (--services-only, tests/conftest.py): engine,
# parsing and browser tests give the same answer on any backend. The engine's own tests
# (tests/modelcore) then run in that second lane rather than in pass 1, so the two lanes
# take about as long as each other.
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
  .venv/bin/python -m pytest --durations=20 "$@"
  local rc=$?
  set -e
  if [ "$rc" = 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
  fi
  [ "$rc" = 0 ] || exit "$rc"
}

services_pass() {
  run_pytest --services-only tests/webapp tests/workers tests/metrics tests/evals tests/faults "$@"
}

# The engine's tests (tests/modelcore) touch no database or broker; when a services pass
# runs, they follow it in its lane (on the embedded settings), which balances the two lanes.
engine_pass() {
  (
    unset RUNWRIGHT_DATABASE_URL RUNWRIGHT_REDIS_URL RUNWRIGHT_BROKER_URL
    run_pytest tests/modelcore "$@"
  )
}

# The two passes share nothing (each session has its own data directory, database and
# broker) and spend much of their time waiting on trainers, workers and browsers, so the
# service pass runs beside the embedded one: the suite's wall time is the longer pass, not
# the sum. Its output is printed whole after the first pass's, not interleaved.
services_rc=0
if [ -n "${RUNWRIGHT_DATABASE_URL:-}" ] || [ -n "${RUNWRIGHT_REDIS_URL:-}" ]; then
  services_log="$(mktemp)"
  (
    lane_rc=0
    (services_pass "$@") || lane_rc=$?
    echo "== pytest, engine (tests/modelcore, embedded settings)"
    engine_pass "$@" || lane_rc=$?
    exit "$lane_rc"
  ) >"$services_log" 2>&1 &
  services_pid=$!
fi

echo "== pytest, embedded default (SQLite, filesystem broker)"
set +e
(
  unset RUNWRIGHT_DATABASE_URL RUNWRIGHT_REDIS_URL RUNWRIGHT_BROKER_URL
  # Multi-host fleet tests need a shared database and broker: the services pass runs them.
  [ -n "${services_pid:-}" ] && export RUNWRIGHT_TEST_FLEET_IN_SERVICES_PASS=1
  if [ -n "${services_pid:-}" ]; then
    run_pytest --ignore=tests/modelcore "$@"  # the other lane runs them
  else
    run_pytest "$@"
  fi
)
embedded_rc=$?
set -e

if [ -n "${services_pid:-}" ]; then
  set +e
  wait "$services_pid"
  services_rc=$?
  set -e
  echo "== pytest, services (database: ${RUNWRIGHT_DATABASE_URL:-SQLite}, redis: ${RUNWRIGHT_REDIS_URL:-none}), then the engine's tests"
  cat "$services_log"
  rm -f "$services_log"
fi

[ "$embedded_rc" = 0 ] || { echo "the embedded pass failed (exit $embedded_rc)" >&2; exit "$embedded_rc"; }
[ "$services_rc" = 0 ] || { echo "the services pass failed (exit $services_rc)" >&2; exit "$services_rc"; }
