"""Downloads from the run page and the comparison page, streamed, for anyone who may see the run.

A chart's CSV holds the raw points of the range it shows (never the downsampled ones it
draws), read in chunks so a million-point series never sits in memory.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from webapp.input_errors import InputError, input_errors_as_json
from webapp.metrics.selectors import raw_points
from webapp.projects.selectors import project_for
from webapp.runs.compare import runs_to_compare
from webapp.runs.models import Run
from webapp.runs.selectors import run_for
from webapp.whole_numbers import parse_whole_number


class _Echo:
    """A file-like csv.writer target that hands each row back instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _csv_rows(header: list[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def _csv_response(filename: str, lines: Iterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
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
