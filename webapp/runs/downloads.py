"""Downloads from the run page and the comparison page, streamed, for anyone who may see the run.

A chart's CSV holds the raw points of the range it shows (never the downsampled ones it
draws), read in chunks so a million-point series never sits in memory. A checkpoint is a
tar built while it is sent (a header, the file's bytes, the padding; no copy on disk), and
a run's file is sent as it is. Every body is an async iterator: under ASGI Django would read a
plain iterator whole into memory before sending a byte (a checkpoint of many gigabytes).
Only a name the run page lists is served: files by an allowlist, checkpoints by step, each
resolved under the run directory (webapp.runs.selectors.contained).
"""

from __future__ import annotations

import asyncio
import csv
import re
import tarfile
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import islice
from pathlib import Path

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from webapp.input_errors import InputError, input_errors_as_json
from webapp.metrics.selectors import raw_points
from webapp.projects.selectors import project_for
from webapp.runs.compare import runs_to_compare
from webapp.runs.models import Run
from webapp.runs.selectors import checkpoint_dir, run_file, run_for
from webapp.whole_numbers import BIGINT_MAX, parse_whole_number


class _Echo:
    """A file-like csv.writer target that hands each row back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _csv_rows(header: list[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([_cell(v) for v in row])


def _cell(value: object) -> object:
    """Floats exactly (repr), NaN/inf as empty, and text that a spreadsheet would run as a
    formula (a key named ``=HYPERLINK(...)`` by whoever logged it) quoted with a leading '."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


CHUNK = 1 << 20  # bytes read from disk per step of a file download


async def _batches(lines: Iterator[str], size: int = 2_000) -> AsyncIterator[str]:
    """``lines`` (a database read) handed on in batches, each read in Django's sync thread."""
    take = sync_to_async(lambda: "".join(islice(lines, size)))
    while chunk := await take():
        yield chunk


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


async def _tar_chunks(folder: Path, top: str) -> AsyncIterator[bytes]:
    """An uncompressed tar of ``folder``'s regular files and folders under ``top/`` (links left out)."""
    paths = await asyncio.to_thread(lambda: sorted(folder.rglob("*")))
    for path in [folder, *paths]:
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            continue
        info = tarfile.TarInfo("/".join([top, *path.relative_to(folder).parts]))
        stat = path.stat()
        info.mtime, info.mode = int(stat.st_mtime), 0o755 if path.is_dir() else 0o644
        if path.is_dir():
            info.type = tarfile.DIRTYPE
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            continue
        info.size = stat.st_size
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        async for chunk in _file_chunks(path):
            chunk = chunk[: info.size - sent]  # a file that grew while sent keeps its header's size
            sent += len(chunk)
            yield chunk
        if sent < info.size:  # it shrank: the archive must still hold what the header says
            yield b"\0" * (info.size - sent)
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)  # the end of the archive


def _attachment(body: AsyncIterator, filename: str, content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _csv_response(filename: str, lines: Iterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_batches(lines), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _safe_name(text: str) -> str:
    """``text`` as a file-name part: letters, digits, dot, dash, underscore only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "series"


MAX_KEYS = 32  # as many as one chart panel draws


def _keys_and_window(request: HttpRequest) -> tuple[list[str], dict[str, int | None]]:
    keys = list(dict.fromkeys(k for k in request.GET.getlist("key") if k))
    if not keys:
        raise InputError({"key": "required, e.g. ?key=train/loss"})
    if len(keys) > MAX_KEYS:
        raise InputError({"key": f"at most {MAX_KEYS} keys in one file; {len(keys)} were asked for"})
    window: dict[str, int | None] = {}
    for name, field in (("since", "since_step"), ("until", "until_step")):
        raw = request.GET.get(name)
        value = parse_whole_number(raw) if raw not in (None, "") else None
        if raw not in (None, "") and value is None:
            raise InputError({name: f"must be a whole number of steps (got {raw[:40]!r})"})
        window[field] = value
    return keys, window


@login_required
@require_GET
@input_errors_as_json
def run_series_csv(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    """``key,step,value,time`` of a run's ``key`` (one or more); ``since`` (exclusive) and ``until`` narrow it."""
    run = run_for(request.user, run_id)  # 404 for another team's run; viewers may download
    keys, window = _keys_and_window(request)
    rows = ((key, *row) for key in keys for row in raw_points(run, key, **window))
    return _csv_response(
        f"run{run.id}-{_safe_name(keys[0])}.csv", _csv_rows(["key", "step", "value", "time"], rows)
    )


@login_required
@require_GET
@input_errors_as_json
def compare_series_csv(request: HttpRequest, project_id: int) -> StreamingHttpResponse:
    """``run,step,value,time`` of one key of each compared run, run after run."""
    project = project_for(request.user, project_id)
    runs = runs_to_compare(request.user, project, request.GET.getlist("run"))
    keys, window = _keys_and_window(request)
    key = keys[0]  # the comparison charts one key
    rows = _rows_of_runs(runs, key, window)
    return _csv_response(f"compare-{_safe_name(key)}.csv", _csv_rows(["run", "step", "value", "time"], rows))


def _rows_of_runs(
    runs: list[Run], key: str, window: dict[str, int | None]
) -> Iterator[tuple[int, int, float | None, float]]:
    for run in runs:
        for step, value, time in raw_points(run, key, **window):
            yield run.id, step, value, time


@login_required
@require_GET
def run_file_download(request: HttpRequest, run_id: int, name: str) -> StreamingHttpResponse:
    """One of the run's files (``config.json``, ``events.jsonl``, ``launcher.log``, ``failures/rankN.txt``)."""
    run = run_for(request.user, run_id)
    path = run_file(run, name)
    if path is None:
        raise Http404("The run has no such file.")
    response = _attachment(_file_chunks(path), f"run{run.id}-{_safe_name(name)}", "application/octet-stream")
    response["Content-Length"] = str(path.stat().st_size)
    return response


@login_required
@require_GET
def checkpoint_download(request: HttpRequest, run_id: int, step: int) -> StreamingHttpResponse:
    """The checkpoint of ``step`` as a tar (weights, optimizer state, config, tokenizer: what it holds)."""
    run = run_for(request.user, run_id)
    # The URL's <int:> takes any length of digits; a step past BIGINT is none (the database would raise).
    folder = checkpoint_dir(run, step) if step <= BIGINT_MAX else None
    if folder is None:
        raise Http404(f"No checkpoint of step {step} on disk (never saved, or pruned by train.keep_last).")
    top = f"run{run.id}-step{step}"
    return _attachment(_tar_chunks(folder, top), f"{top}.tar", "application/x-tar")
