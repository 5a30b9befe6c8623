"""Which route each float32 CPU matrix product takes, decided by measurement and remembered.

A product is ``a @ b.T`` with a (m, k) and b (n, k), plus whether each operand is a
transposed view (the backward products read transposed operands, which changes the
kernels' speed). Products are grouped in buckets (each dimension rounded up to a power of
two) per torch thread count; the first product seen in a bucket is timed on both routes and
the bucket keeps the winner.

Decisions are kept in memory and in a JSON file shared by every process of the machine
(``$RUNWRIGHT_MATMUL_ROUTES``, else ``$XDG_CACHE_HOME/runwright/matmul_routes.json``, else
``~/.cache/runwright/matmul_routes.json``), under a key naming the CPU model and the torch
version: a new CPU or a new torch measures afresh. The file is locked while a process
measures, so the ranks of a run do not time each other's noise and all take the same
routes. A file that is corrupt, unreadable or unwritable only costs a measurement: the
decisions then live in memory for the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROUTES_FILE_ENV = "RUNWRIGHT_MATMUL_ROUTES"
FILE_FORMAT = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Product:
    """``a @ b.T`` for a (m, k) and b (n, k); ``*_transposed``: that operand is a transposed view."""

    m: int
    n: int
    k: int
    a_transposed: bool
    b_transposed: bool

    def key(self, threads: int) -> str:
        layout = ("t" if self.a_transposed else "n") + ("t" if self.b_transposed else "n")
        return f"{threads}t {_bucket(self.m)}x{_bucket(self.n)}x{_bucket(self.k)} {layout}"


@dataclass(frozen=True)
class Decision:
    """The route a bucket takes and the median times (µs) that chose it (None when forced)."""

    onednn: bool
    onednn_us: float | None = None
    blas_us: float | None = None
    shape: tuple[int, ...] | None = None  # the (m, n, k) that was timed

    def to_json(self) -> dict[str, Any]:
        return {
            "route": "onednn" if self.onednn else "blas",
            "onednn_us": self.onednn_us,
            "blas_us": self.blas_us,
            "shape": "x".join(map(str, self.shape)) if self.shape else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> Decision | None:
        """The decision stored in ``data``, or None if it is not one (a hand-edited or damaged file)."""
        if not isinstance(data, dict) or data.get("route") not in ("onednn", "blas"):
            return None
        times = [data.get("onednn_us"), data.get("blas_us")]
        if not all(t is None or isinstance(t, int | float) for t in times):
            return None
        dims = str(data.get("shape") or "").split("x")
        shape = tuple(int(d) for d in dims) if len(dims) == 3 and all(d.isdigit() for d in dims) else None
        return cls(data["route"] == "onednn", times[0], times[1], shape)


def _bucket(dim: int) -> int:
    return 1 << max(0, dim - 1).bit_length()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows of it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def machine_key() -> str:
    """What a decision depends on besides the shape: the CPU and the kernels torch ships."""
    return f"{cpu_model()} | torch {torch.__version__}"


def routes_path() -> Path:
    explicit = os.environ.get(ROUTES_FILE_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "runwright" / "matmul_routes.json"


class RouteTable:
    """Decisions by bucket, backed by the machine's routes file."""

    def __init__(self) -> None:
        self._decisions: dict[str, Decision] = {}
        self._loaded_from: Path | None = None
        self._warned: set[str] = set()

    def clear(self) -> None:
        """Forget every decision held in memory (the file is kept)."""
        self._decisions.clear()
        self._loaded_from = None

    def decisions(self) -> dict[str, Decision]:
        """Every decision this process holds, by bucket key."""
        return dict(self._decisions)

    def decide(self, products: Sequence[Product], measure: Callable[[Product], Decision]) -> list[bool]:
        """Whether each product takes the oneDNN route, measuring (with ``measure``) the buckets never seen."""
        threads = torch.get_num_threads()
        keys = [p.key(threads) for p in products]
        if any(k not in self._decisions for k in keys):
            self._resolve(products, keys, measure)
        return [self._decisions[k].onednn for k in keys]

    def _resolve(self, products: Sequence[Product], keys: list[str], measure: Callable) -> None:
        path = routes_path()
        if self._loaded_from != path:
            self._decisions.update(self._read(path))
            self._loaded_from = path
        if all(k in self._decisions for k in keys):
            return
        with self._locked(path) as writable:
            # Another process may have measured these buckets while this one waited for the lock.
            stored = self._read(path)
            self._decisions.update(stored)
            fresh: dict[str, Decision] = {}
            for product, key in zip(products, keys, strict=True):
                if key not in self._decisions:
                    fresh[key] = self._decisions[key] = measure(product)
            if fresh and writable:
                self._write(path, {**stored, **fresh})

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[bool]:
        """Hold the routes file's lock; yields whether the file can be written at all."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 (closed below)
        except OSError as exc:
            self._warn("lock", f"matmul routes stay in memory: cannot write next to {path} ({exc})")
            yield False
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield True
        finally:
            lock.close()  # closing releases the lock

    def _read(self, path: Path) -> dict[str, Decision]:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._warn("read", f"ignoring unreadable matmul routes file {path} ({exc}); measuring again")
            return {}
        if not (
            isinstance(document, dict)
            and document.get("format") == FILE_FORMAT
            and isinstance(document.get("machines"), dict)
        ):
            self._warn("read", f"ignoring matmul routes file {path}: not a routes file; measuring again")
            return {}
        entries = document["machines"].get(machine_key())
        if not isinstance(entries, dict):
            return {}  # measured on other machines (or another torch) only
        decisions = {key: Decision.from_json(value) for key, value in entries.items()}
        return {key: d for key, d in decisions.items() if d is not None}

    def _write(self, path: Path, decisions: dict[str, Decision]) -> None:
        """Store this machine's decisions, keeping other machines' entries (the file may be shared)."""
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            document = None
        if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
            document = {"format": FILE_FORMAT, "machines": {}}
        if not isinstance(document.get("machines"), dict):
            document["machines"] = {}
        document["machines"][machine_key()] = {k: d.to_json() for k, d in sorted(decisions.items())}
        tmp = None
        try:
            # Written aside and renamed: a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=1)
            os.replace(tmp, path)
        except OSError as exc:
            self._warn("write", f"matmul routes stay in memory: cannot write {path} ({exc})")
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message)
