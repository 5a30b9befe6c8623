"""Train a model: ``python -m modelcore.train --run-dir DIR [--config cfg.json] [--preset NAME] [--set k=v ...]``.

Run it directly for one process, or under ``accelerate launch`` / ``torchrun``
for several (``modelcore.launch`` builds that command). The config is, in order:
defaults, then ``--preset``, then ``--config`` (a full or partial RunConfig JSON),
then each ``--set section.field=value``. With none of these the run directory's
``config.json`` is used; the resolved config is written there when absent.

Resume is automatic: if ``DIR/checkpoints`` holds a complete checkpoint, training
continues from the latest one (model, optimizer, scheduler, sampler, RNG).

Lifecycle (rank 0 writes ``DIR/events.jsonl``): a ``running`` status with the
config, code and hardware, metrics, then a final status. SIGTERM or SIGINT stops
every rank at the next step boundary, saves a checkpoint, writes ``cancelled``
and exits 0; an exception writes ``failed`` with the traceback and exits 1.
Test hooks: ``RUNWRIGHT_FAIL_AT_STEP=N`` raises at step N on every rank;
``RUNWRIGHT_STOP_AT_STEP=N`` stops after step N as a SIGTERM would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from modelcore.config import ConfigError, RunConfig, parse_assignments, preset
from modelcore.events import EventWriter
from modelcore.parent_death import die_with_parent_if_asked

FAILURES_DIR = "failures"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modelcore.train", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="Run directory (created if needed).")
    parser.add_argument("--config", type=Path, help="RunConfig JSON, full or partial.")
    parser.add_argument("--preset", help="Named preset to start from (see modelcore.config.PRESETS).")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="Override one field; repeatable.",
    )
    return parser.parse_args(argv)


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """The run's config from the arguments (see the module doc for the order)."""
    saved = args.run_dir / "config.json"
    if args.preset:
        base = preset(args.preset)
    elif args.config is None and saved.exists():
        base = RunConfig.from_dict(_read_json(saved, "config.json"))
    else:
        base = RunConfig()
    if args.config is not None:
        base = RunConfig.from_dict(_read_json(args.config, "--config"), base=base)
    return RunConfig.from_dict(parse_assignments(args.assignments), base=base)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError({what: f"{path} does not exist"}) from None
    except json.JSONDecodeError as exc:
        raise ConfigError({what: f"{path} is not valid JSON ({exc})"}) from None


def save_run_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write DIR/config.json; refuse to resume checkpoints under a different config."""
    path = run_dir / "config.json"
    if path.exists():
        current = RunConfig.from_dict(_read_json(path, "config.json"))
        if current == cfg:
            return
        if (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise ConfigError(
                {
                    "config": f"{run_dir} already has checkpoints trained with a different "
                    "config.json; resume with the same config or use a new --run-dir"
                }
            )
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(cfg.to_json())
    os.replace(tmp, path)


class StopRequested:
    """Set by SIGTERM/SIGINT; the training loop reads it at step boundaries."""

    def __init__(self) -> None:
        self.requested = False


def install_stop_handlers() -> StopRequested:
    """SIGTERM/SIGINT set a flag the loop reads at step boundaries; a second SIGINT aborts."""
    stop = StopRequested()

    def handler(signum: int, frame: FrameType | None) -> None:
        # A repeated SIGTERM is expected: the group kill reaches the ranks and then
        # torch elastic's agent forwards its own. Only a second Ctrl-C aborts.
        if stop.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt("second SIGINT: aborting without a checkpoint")
            return
        stop.requested = True
        print(
            f"[info] {signal.Signals(signum).name} received: stopping at the next step",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    # A worker starts the trainer (and its launcher, whose ranks inherit the mask) with SIGTERM
    # blocked (``modelcore.launch.holds_sigterm``): a cancel that came before this handler
    # existed waited, pending, instead of killing the rank with -15, and reaches it now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    return stop


def ignore_late_sigterm() -> None:
    """Once the final status is written: a SIGTERM has nothing left to stop.

    Python puts the default action back while the interpreter shuts down (torch's teardown
    takes a while), so a SIGTERM then, from a cancel or a peer node's stop that raced the
    end, would kill a rank that finished cleanly with -15, and torch elastic would report
    that node as failed.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _other_rank_failures(run_dir: Path, wait_s: float = 1.0) -> str:
    """Tracebacks other ranks left behind: a peer's crash is the real cause of rank 0's error."""
    deadline = time.monotonic() + wait_s
    folder = run_dir / FAILURES_DIR
    while True:
        files = sorted(folder.glob("rank*.txt")) if folder.is_dir() else []
        if files or time.monotonic() > deadline:
            return "".join(f"\n--- {p.stem} ---\n{p.read_text()}" for p in files)
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    # Started by a worker, a rank must not outlive its launcher (see modelcore.parent_death).
    die_with_parent_if_asked()
    # Signal handlers come before torch is imported (in the trainer): a cancel that
    # arrives during the slow imports still ends in a clean "cancelled".
    stop = install_stop_handlers()
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    args.run_dir.mkdir(parents=True, exist_ok=True)
    events = EventWriter(args.run_dir) if rank == 0 else None
    status, code = "failed", 1
    try:
        cfg = resolve_run_config(args)
        if rank == 0:
            save_run_config(cfg, args.run_dir)
        from modelcore.trainer import FaultPlan, Trainer

        # Cancelled before the model existed: there is nothing to checkpoint.
        faults = FaultPlan.from_env()
        status = "cancelled" if stop.requested else Trainer(cfg, args.run_dir, events, stop, faults).run()
        code = 0
        if events is not None:
            events.status(status)
    except InterruptedError as exc:
        # Cancelled before training started (while preparing data): nothing to checkpoint.
        print(f"[info] {exc}", file=sys.stderr, flush=True)
        if events is not None:
            events.status("cancelled")
        code = 0
    except (Exception, KeyboardInterrupt) as exc:
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
        if events is not None:
            if isinstance(exc, KeyboardInterrupt):
                events.status("cancelled", error=error)
            else:
                events.status("failed", error=error + _other_rank_failures(args.run_dir))
        else:
            folder = args.run_dir / FAILURES_DIR
            folder.mkdir(exist_ok=True)
            (folder / f"rank{rank}.txt").write_text(error)
    finally:
        _shutdown_distributed()
        if events is not None:
            events.close()
        ignore_late_sigterm()
    return code


def _shutdown_distributed() -> None:
    dist = sys.modules.get("torch.distributed")  # never import torch just to shut it down
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
