"""Lines of code and duplicated blocks per package, as JSON: ``python scripts/code_metrics.py [--repo DIR]``.

Issue 16 ("one job lifecycle") asks for less code with one home per idea, measured per
package before and after a change. To compare two commits, check the older one out beside
this one and measure both (the script reads only files, so it runs from either):

    git worktree add /tmp/base <rev>
    python scripts/code_metrics.py --repo /tmp/base > before.json
    python scripts/code_metrics.py > after.json

What it counts, per package (``PACKAGES``), over the files git tracks plus the untracked
ones it does not ignore (``git ls-files -co --exclude-standard``):

- ``files``, ``loc``: source files (``.py``, ``.js``) and their lines that are neither blank
  nor only a comment (``#``, ``//``); docstrings count (they are read like code). Database
  migrations are left out: Django writes them, and their repetition is not a design choice.
- ``dup_pairs``: the pairs of places inside the package that share six or more lines, the same
  or of the same shape with other names and values, as the ``duplicates`` command (the tool
  library's) finds them over the package alone (``--repo <package>``); ``dup_pairs_exact``
  the pairs of which at least one run is the same to the letter; ``dup_pairs_boilerplate``
  the shape pairs it marks boilerplate (thin lines, a folder's common shape); ``dup_lines``
  the lines of the package inside a listed pair's longest run (each line once). Pairs with a
  side in a migration are left out, as for ``loc``. Pairs across packages are not counted.

``duplicates`` lists at most 200 pairs a call; ``truncated`` says when a package had more.
Without the command, the ``dup_*`` figures are null.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ("modelcore", "webapp", "workers", "static/js", "sdk", "benchmarks", "tests")
SOURCE_SUFFIXES = {".py": "#", ".js": "//"}
MIN_LINES = 6
MOST = 200
# ``D12 webapp/a.py:73-86 ~ webapp/b.py:65-78 shape (+2 more runs)``
ROW = re.compile(r"^D\d+ (\S+):(\d+)-(\d+) ~ (\S+):(\d+)-(\d+)(.*)$")
COUNT = re.compile(r"^(\d+) pairs of places")


def _generated(path: str) -> bool:
    return "/migrations/" in f"/{path}"


def source_files(repo: Path, package: str) -> list[str]:
    """The package's source files, relative to ``repo``, as git lists them."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "--", package],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(
        path
        for path in out.splitlines()
        if Path(path).suffix in SOURCE_SUFFIXES and not _generated(path) and (repo / path).is_file()
    )


def lines_of_code(path: Path) -> int:
    comment = SOURCE_SUFFIXES[path.suffix]
    count = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(comment):
            count += 1
    return count


def duplicate_pairs(repo: Path, package: str, seconds: int) -> dict[str, object] | None:
    """The ``duplicates`` command's pairs inside ``package``; None without the command."""
    command = shutil.which("duplicates")
    if command is None:
        return None
    folder = repo / package
    out = subprocess.run(
        [command, "--repo", str(folder), "--most", str(MOST), "--min-lines", str(MIN_LINES)]
        + ["--seconds", str(seconds)],
        capture_output=True,
        text=True,
        cwd=folder,
    ).stdout
    pairs = exact = boilerplate = 0
    listed = 0
    covered: dict[str, set[int]] = {}
    total = None
    incomplete = [line for line in out.splitlines() if line.startswith("incomplete:")]
    for line in out.splitlines():
        if total is None and (found := COUNT.match(line)):
            total = int(found.group(1))
        row = ROW.match(line)
        if row is None:
            continue
        listed += 1
        a, a0, a1, b, b0, b1, rest = row.groups()
        if _generated(f"{package}/{a}") or _generated(f"{package}/{b}"):
            continue
        pairs += 1
        shape = " shape" in rest
        exact += not shape
        boilerplate += "boilerplate" in rest
        for path, start, end in ((a, a0, a1), (b, b0, b1)):
            covered.setdefault(path, set()).update(range(int(start), int(end) + 1))
    return {
        "dup_pairs": pairs,
        "dup_pairs_exact": exact,
        "dup_pairs_boilerplate": boilerplate,
        "dup_lines": sum(len(lines) for lines in covered.values()),
        "truncated": total is not None and total > listed,
        **({"incomplete": incomplete} if incomplete else {}),
    }


def measure(repo: Path, seconds: int) -> dict[str, object]:
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    packages: dict[str, dict[str, object]] = {}
    for package in PACKAGES:
        files = source_files(repo, package)
        row: dict[str, object] = {
            "files": len(files),
            "loc": sum(lines_of_code(repo / path) for path in files),
        }
        dups = duplicate_pairs(repo, package, seconds) if files else None
        row.update(
            dups or dict.fromkeys(("dup_pairs", "dup_pairs_exact", "dup_pairs_boilerplate", "dup_lines"))
        )
        packages[package] = row
    total = {
        key: sum(int(row.get(key) or 0) for row in packages.values())
        for key in ("files", "loc", "dup_pairs", "dup_pairs_exact", "dup_pairs_boilerplate", "dup_lines")
    }
    return {"repo": str(repo), "head": head, "min_lines": MIN_LINES, "packages": packages, "total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="a checkout (default: here)")
    parser.add_argument("--seconds", type=int, default=120, help="the duplicates command's time per package")
    args = parser.parse_args(argv)
    json.dump(measure(args.repo.resolve(), args.seconds), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
