#!/usr/bin/env bash
# Verify the GPU paths in one call: the GPU-only tests and the GPU sections of the benchmarks.
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# Needs a machine with an NVIDIA GPU. Python: $PYTHON if set (an interpreter whose torch
# sees the GPU), else .venv/bin/python; a fresh copy of the tree without .venv gets one
# (with the machine's site packages visible, so a CUDA torch already installed is reused),
# the torch range from pyproject.toml and `pip install -e .[dev]`. pip needs its index, or
# wheels through PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR on a machine without network.
#
# Steps, each under its own time limit, together under 8 minutes (setup not counted):
#   tests        the test files that skip without CUDA (they test `cuda.is_available`)
#   kernels      python -m benchmarks.kernels --gpu-only
#   train_mfu    python -m benchmarks.train_throughput --gpu-only
# OUT_DIR receives gpu_check.log (everything printed), pytest_gpu.xml, kernels.json,
# train_mfu.json and summary.json (each step's status, exit code and seconds).
#
# Exit status: 0 all steps passed; 1 a step failed or ran out of time; 2 usage, no GPU,
# or no Python whose torch sees it.
set -uo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: bash scripts/gpu_check.sh OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."

BUDGET_S=470 # 7 min 50 s for the steps together
PY=""
deadline=0
failed=0
results=()

say() { echo "== gpu_check: $*"; }

refuse() {
  echo "gpu_check: $*" >&2
  exit 2
}

gpu_count() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
  elif [ -d /proc/driver/nvidia/gpus ]; then
    find /proc/driver/nvidia/gpus -mindepth 1 -maxdepth 1 | wc -l
  else
    echo 0
  fi
}

choose_python() {
  if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
  elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
  else
    local torch_spec
    torch_spec=$(grep -o '"torch[<>=!~][^"]*"' pyproject.toml | head -1 | tr -d '"')
    say "no .venv: creating one (${torch_spec:-torch}, then the project with its dev extras)"
    python3 -m venv --system-site-packages .venv || refuse "could not create .venv with python3 -m venv"
    PY=.venv/bin/python
    "$PY" -m pip install --quiet --upgrade pip &&
      "$PY" -m pip install --quiet "${torch_spec:-torch}" &&
      "$PY" -m pip install --quiet -e ".[dev]" ||
      refuse "installing into .venv failed (see above); without network set PIP_NO_INDEX=1 PIP_FIND_LINKS=<wheel folder>"
  fi
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    local version
    version=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "no torch")
    refuse "$PY has torch $version, which sees no GPU (a CPU build?). Set PYTHON to an interpreter with a CUDA torch, or move .venv aside so this script builds one."
  fi
}

record() { # NAME STATUS RC SECONDS
  results+=("\"$1\": {\"status\": \"$2\", \"rc\": $3, \"seconds\": $4}")
  [ "$2" = passed ] || failed=1
}

run_step() { # NAME LIMIT_S OUTPUT_FILE|- COMMAND...: COMMAND under its limit, cut to what the budget has left
  local name=$1 limit=$2 output=$3
  shift 3
  local left=$((deadline - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    say "$name: skipped, the 8-minute budget is spent"
    record "$name" skipped null 0
    return
  fi
  say "$name (limit ${limit}s): $*"
  local start=$SECONDS rc status=passed
  if [ "$output" = - ]; then
    timeout --kill-after=10 "$limit" "$@"
  else
    timeout --kill-after=10 "$limit" "$@" >"$output"
  fi
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    status=timed_out
  elif [ "$rc" != 0 ]; then
    status=failed # pytest's 5 (nothing collected) included, as in scripts/test.sh
  elif [ "$output" != - ] && ! "$PY" -m json.tool "$output" >/dev/null; then
    status=failed # a benchmark must print one JSON object
    rc=1
  fi
  say "$name: $status (exit $rc, $((SECONDS - start))s)"
  record "$name" "$status" "$rc" $((SECONDS - start))
}

tests_ran() { # JUNIT_XML: whether some test ran rather than skipped (with a GPU, none may skip them all)
  "$PY" - "$1" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
ran = int(suite.get("tests", 0)) - int(suite.get("skipped", 0))
print(f"gpu tests run (not skipped): {ran}")
sys.exit(0 if ran > 0 else 1)
PYEOF
}

write_summary() {
  local i sep
  {
    echo "{"
    echo "  \"gpu\": \"$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)\","
    echo "  \"passed\": $([ "$failed" = 0 ] && echo true || echo false),"
    echo "  \"seconds\": $((SECONDS - deadline + BUDGET_S)),"
    echo "  \"steps\": {"
    for i in "${!results[@]}"; do
      sep=","
      [ "$i" = $((${#results[@]} - 1)) ] && sep=""
      echo "    ${results[$i]}$sep"
    done
    echo "  }"
    echo "}"
  } >"$OUT/summary.json"
}

main() {
  # A GPU first, before anything is installed: refusing costs nothing on a CPU machine.
  local gpus
  gpus=$(gpu_count)
  if [ -z "$gpus" ] || [ "$gpus" = 0 ]; then
    refuse "no NVIDIA GPU on this machine (nvidia-smi lists none, no /proc/driver/nvidia/gpus): nothing to check. Run it where a CUDA GPU and its driver are installed."
  fi
  say "$gpus GPU(s): $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  choose_python
  say "python $PY: $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())')"

  deadline=$((SECONDS + BUDGET_S))
  local gpu_tests
  mapfile -t gpu_tests < <(grep -rl --include='test_*.py' 'cuda.is_available' tests | sort)
  if [ ${#gpu_tests[@]} = 0 ]; then
    say "tests: no test file checks cuda.is_available: nothing GPU-only to run"
    record tests failed null 0
  else
    run_step tests 150 - "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml "$OUT/pytest_gpu.xml" "${gpu_tests[@]}"
    if [ -f "$OUT/pytest_gpu.xml" ] && ! tests_ran "$OUT/pytest_gpu.xml"; then
      say "tests: every GPU test skipped although a GPU is present"
      record tests_not_skipped failed 1 0
    fi
  fi
  run_step kernels 180 "$OUT/kernels.json" "$PY" -m benchmarks.kernels --gpu-only
  run_step train_mfu 140 "$OUT/train_mfu.json" "$PY" -m benchmarks.train_throughput --gpu-only

  write_summary
  say "summary ($OUT/summary.json):"
  cat "$OUT/summary.json"
  return "$failed"
}

# Everything printed goes to the log as well; the pipeline ends only once tee has written it all.
main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
