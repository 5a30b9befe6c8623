"""Run by ``torchrun`` (``distributed.step_results``): every registered case of one step of a
split model against the whole one, TP (``tp_step.py``) and EP (``ep_step.py``) in one launch.

Arguments: the cases by kind as JSON, then the output file, which rank 0 writes with the
results by kind and case id.
"""

from __future__ import annotations

import json
import sys

import ep_step
import tp_step
from distributed import gloo_group, write_on_rank_0


def main() -> None:
    cases, out = json.loads(sys.argv[1]), sys.argv[2]
    with gloo_group():
        results = {
            "tp": {case["id"]: tp_step.one_step(case["model"], case["sp"]) for case in cases.get("tp", [])},
            "ep": {case["id"]: ep_step.one_step(case["model"]) for case in cases.get("ep", [])},
        }
        write_on_rank_0(out, results)


if __name__ == "__main__":
    main()
