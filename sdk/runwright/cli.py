"""The ``runwright`` command (also ``python -m runwright``)."""

from __future__ import annotations

import argparse
import sys

from runwright.client import Refused, Unreachable
from runwright.sync import sync


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runwright", description="Runwright's client.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("sync", help="upload run folders (offline runs, cut-short uploads)")
    up.add_argument("dirs", nargs="+", metavar="DIR", help="a run folder (holding run.json and events.jsonl)")
    up.add_argument("--url", help="the server (default: RUNWRIGHT_URL, then the folder's)")
    up.add_argument("--token", help="an API token (default: RUNWRIGHT_TOKEN)")
    args = parser.parse_args(argv)
    failed = 0
    for folder in args.dirs:
        try:
            result = sync(folder, url=args.url, token=args.token)
        except (ValueError, Unreachable, Refused) as exc:
            print(f"{folder}: {exc}", file=sys.stderr)
            failed += 1
            continue
        rejected = f", {result.rejected} refused by the server" if result.rejected else ""
        print(f"{folder}: run {result.run_id}, {result.sent} events uploaded{rejected}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
