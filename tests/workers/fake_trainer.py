"""A stand-in trainer for supervisor unit tests: writes events the way rank 0 does.

Modes:
  complete     running, metrics with a falling loss, a log, a checkpoint, completed
  fail         running, some metrics, then a failed status with a traceback
  crash        raises before writing any event (like an import error)
  torn         some metrics, then half a line, then exits 1 (a crash mid-write)
  until-term   writes metrics until SIGTERM, then cancelled; spawns a child in its group
  ignore-term  like until-term but ignores SIGTERM (the supervisor must SIGKILL)
  slow-save    like until-term, but saving the checkpoint after SIGTERM takes --save-seconds
  checkpoints  saves a checkpoint folder every 2 steps, keeping the last --keep-last, then completes
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from modelcore.events import EVENTS_FILE, EventWriter


def metric(events: EventWriter, step: int) -> None:
    events.metric(step, {"train/loss": 5.0 / step, "train/lr": 0.001})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--save-seconds", type=float, default=0.0)
    parser.add_argument("--keep-last", type=int, default=2)
    args = parser.parse_args()
    if args.mode == "crash":
        raise ImportError("fake trainer: no module named 'flash_attn_fake'")
    events = EventWriter(args.run_dir)
    events.status("running", info={"fake": True})
    if args.mode == "complete":
        for step in range(1, args.steps + 1):
            metric(events, step)
        events.log("halfway there", level="info")
        events.checkpoint(args.steps, f"checkpoints/step_{args.steps:06d}")
        events.system({"cpu/util": 0.5})
        events.status("completed")
        return 0
    if args.mode == "fail":
        metric(events, 1)
        try:
            raise RuntimeError("fake trainer: loss is NaN at step 2")
        except RuntimeError:
            events.status("failed", error=traceback.format_exc())
        return 1
    if args.mode == "checkpoints":
        return save_and_prune(events, args.run_dir, args.steps, args.keep_last)
    if args.mode == "torn":
        metric(events, 1)
        metric(events, 2)
        events.close()
        with open(args.run_dir / EVENTS_FILE, "a") as f:
            f.write('{"seq": 99, "type": "metric", "step": 3, "val')
        return 1
    stop = {"term": False}
    if args.mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop.update(term=True))
    # A grandchild in the same process group, like a rank or a data loader worker.
    # It ignores SIGTERM, so only the supervisor's final SIGKILL of the group ends it.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
        ]
    )
    (args.run_dir / "child.pid").write_text(str(child.pid))
    step = 0
    while not stop["term"]:
        step += 1
        metric(events, step)
        time.sleep(0.1)
    if args.mode == "slow-save":
        events.log(f"stop requested: saving checkpoint at step {step} before stopping")
        time.sleep(args.save_seconds)
    events.checkpoint(step, f"checkpoints/step_{step:06d}")
    events.status("cancelled")
    return 0


def save_and_prune(events: EventWriter, run_dir: Path, steps: int, keep_last: int) -> int:
    """Checkpoint folders laid out as modelcore's, deleted by keep-last as the trainer does."""
    root = run_dir / "checkpoints"
    for step in range(1, steps + 1):
        metric(events, step)
        if step % 2:
            continue
        folder = root / f"step_{step:06d}"
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"step": step}))
        events.checkpoint(step, f"checkpoints/{folder.name}")
        for old in sorted(p for p in root.iterdir() if p.name.startswith("step_"))[:-keep_last]:
            shutil.rmtree(old)
        time.sleep(0.15)  # several supervisor rounds see the folders come and go
    events.status("completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
