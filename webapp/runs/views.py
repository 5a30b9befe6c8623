from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from modelcore.config import ConfigError, field_schema, resolve
from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role, require_role
from webapp.fleet.selectors import placement_of
from webapp.input_errors import InputError, input_errors_as_json
from webapp.metrics.selectors import (
    DEFAULT_MAX_POINTS,
    keys_for_run,
    latest_point_seq,
    latest_values,
    point_times,
    series,
)
from webapp.projects.selectors import project_for
from webapp.runs.actions import available_actions
from webapp.runs.assets import plotly_js_url
from webapp.runs.compare import config_differences, keys_of_runs, runs_to_compare
from webapp.runs.estimates import estimate
from webapp.runs.forms import (
    DEFAULT_PRESET,
    SECTION_TITLES,
    RunForm,
    initial_for,
    initial_from_run,
    preset_values,
)
from webapp.runs.models import FINAL_STATUSES, Run, RunSource, RunStatus
from webapp.runs.presenters import run_summary
from webapp.runs.selectors import checkpoints_panel, log_tail, run_files, run_for, samples_table, slurm_job
from webapp.runs.services import create_run, request_cancel
from webapp.runs.stream import poll_updates, run_events
from webapp.runs.updates import StreamCursor, cursor_from_event_id, latest_log_id
from webapp.samples.presenters import job_state
from webapp.samples.selectors import latest_exports
from webapp.sse import sse_response, sse_view
from webapp.whole_numbers import parse_whole_number

CHART_KEYS = ("train/loss", "val/loss")
# A panel draws one line per key of its group (experts of a layer, ranks of a machine).
MAX_KEYS_PER_CHART = 32
MIN_CHART_POINTS = 100  # the fewest points a chart may ask for (?points=)
# The run header's figures, from each key's latest point.
HEADER_KEYS = ("perf/tokens_per_s", "perf/mfu", "perf/tokens_seen", "perf/step_time_s", "train/lr")


@login_required
@require_http_methods(["GET", "POST"])
def new_run(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.MEMBER)
    if request.method == "POST":
        form = RunForm(request.POST, user=request.user)
        if form.is_valid():
            run = form.submit(
                create_run,
                user=request.user,
                project=project,
                name=form.cleaned_data["name"],
                preset=form.cleaned_data["preset"] or None,
                overrides=form.config_overrides(),
            )
            if run is not None:
                return redirect("runs:detail", run_id=run.id)
        status = 400
    elif request.GET.get("from"):  # "New run from this one": the form filled with that run's config
        source = run_for(request.user, parse_whole_number(request.GET["from"]) or 0)  # 404 if not visible
        form = RunForm(initial=initial_from_run(source), user=request.user)
        status = 200
    else:
        form = RunForm(initial=initial_for(request.GET.get("preset", DEFAULT_PRESET)), user=request.user)
        status = 200
    return render(
        request,
        "runs/new.html",
        {
            "project": project,
            "form": form,
            "sections": form.sections(),
            "presets": preset_values(),
            "estimate": _estimate_of(form),
        },
        status=status,
    )


def _estimate_of(form: RunForm) -> dict[str, Any] | None:
    """The estimate for what the form shows now, if it is a valid config."""
    try:
        if form.is_bound:
            if not form.is_valid():
                return None
            return estimate(resolve(form.cleaned_data["preset"] or None, form.config_overrides()))
        return estimate(resolve(form.initial.get("preset") or None))
    except ConfigError:
        return None


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id)
    # The stream's log cursor is read first; lines written after it come over the stream.
    log_after = latest_log_id(run.id)
    logs = [entry for entry in log_tail(run) if entry.id <= log_after]
    return render(
        request,
        "runs/detail.html",
        {
            "run": run,
            "summary": run_summary(run),
            "config_sections": _config_sections(run.config)
            if run.source == RunSource.MANAGED
            else _external_sections(run.config),
            "logs": logs,
            "stream_state": {
                "run_id": run.id,
                "status": run.status,
                "is_final": run.status in FINAL_STATUSES,
                "log_after": log_after,
                "chart_keys": list(CHART_KEYS),
                "project_id": run.project_id,
                "started_at": run.started_at.timestamp() if run.started_at else None,
                "max_steps": (run.config.get("train") or {}).get("max_steps"),
                "latest": latest_values(run, HEADER_KEYS),
                # The panels to lay out and where the stream starts, without a first request:
                # the cursor is read before any panel reads its series (a point in between
                # comes twice, merged by step, never not at all).
                "cursor": latest_point_seq(run),
                "keys": keys_for_run(run),
                "sample_every": _sample_every(run),
            },
            "samples": samples_table(run),
            "sample_every": _sample_every(run),
            **_checkpoints_context(request, run),
            "plotly_url": plotly_js_url(),
            "can_cancel": run.is_active and has_role(request.user, run.project.team_id, Role.MEMBER),
            "actions": available_actions(request.user, run),
            "attempts": list(run.attempts.all()),
            # Where a queued run stands in the fleet's queue and why it waits (RUNWRIGHT_FLEET).
            "placement": placement_of(run) if run.status == RunStatus.QUEUED else None,
            "slurm_job": slurm_job(run),  # RUNWRIGHT_LAUNCHER=slurm: the attempt's job
        },
    )


def _checkpoints_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    checkpoints = checkpoints_panel(run)
    exports = latest_exports(run)
    for row in checkpoints:  # the newest export of each checkpoint (webapp.samples): its state, its archive
        row["export"] = job_state(exports[row["step"]]) if row["step"] in exports else None
    return {
        "checkpoints": checkpoints,
        "files": run_files(run),
        "can_evaluate": has_role(request.user, run.project.team_id, Role.MEMBER),
    }


@login_required
@require_GET
def run_checkpoints(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run page's checkpoints and files panel, read again when the run ends."""
    run = run_for(request.user, run_id)
    return render(request, "runs/_checkpoints.html", {"run": run, **_checkpoints_context(request, run)})


def _sample_every(run: Run) -> int:
    return int((run.config.get("train") or {}).get("sample_every") or 0)


@login_required
@require_GET
def run_samples(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run page's samples table (a prompt per row, a step per column), refreshed as steps pass."""
    run = run_for(request.user, run_id)
    return render(
        request,
        "runs/_samples.html",
        {"run": run, "samples": samples_table(run), "sample_every": _sample_every(run)},
    )


@login_required
@require_GET
def run_series(request: HttpRequest, run_id: int) -> JsonResponse:
    """Downsampled series for the run page's charts.

    The run's keys are not listed: the page has them embedded and its stream
    adds new ones, so each of a hundred panels' reads would repeat them for nothing.

    ``since``/``until`` (steps) narrow the range: a zoomed chart asks again and
    gets the finer points of just that range.
    """
    run = run_for(request.user, run_id)
    keys = request.GET.getlist("key") or list(CHART_KEYS)
    window = _step_window(request)
    cursor = latest_point_seq(run)  # before the series: the stream goes on from here (run_stream's "after")
    shown = [series(run, key, **window) for key in keys[:MAX_KEYS_PER_CHART]]
    if request.GET.get("times"):  # a chart by wall time: each point's unix time
        for s in shown:
            s["times"] = point_times(run, s["key"], s["steps"])
    return JsonResponse(
        {
            "series": shown,
            "step": run.step,
            "cursor": cursor,
        }
    )


@login_required
@require_GET
def compare_runs(request: HttpRequest, project_id: int) -> HttpResponse:
    """Several runs of a project on the same charts, one line per run."""
    project = project_for(request.user, project_id)
    try:
        runs = runs_to_compare(request.user, project, request.GET.getlist("run"))
    except InputError as exc:  # the page itself lists what to pick instead
        return render(request, "runs/compare.html", {"project": project, "errors": exc.errors}, status=400)
    return render(
        request,
        "runs/compare.html",
        {
            "project": project,
            "runs": [run_summary(r) for r in runs],
            "config_differences": config_differences(runs),
            "compare_state": {
                "runs": [{"id": r.id, "name": r.name} for r in runs],
                "keys": keys_of_runs(runs),
                "chart_keys": list(CHART_KEYS),
                "project_id": project.id,
            },
            "plotly_url": plotly_js_url(),
        },
    )


@login_required
@require_GET
@input_errors_as_json
def compare_series(request: HttpRequest, project_id: int) -> JsonResponse:
    """One metric of each compared run, downsampled; ``since``/``until`` narrow it for a zoom."""
    project = project_for(request.user, project_id)
    runs = runs_to_compare(request.user, project, request.GET.getlist("run"))
    key = request.GET.get("key", "")
    if not key:
        raise InputError({"key": "required, e.g. ?key=train/loss"})
    window = _step_window(request)
    shown = [{"run": r.id, "name": r.name, **series(r, key, **window)} for r in runs]
    if request.GET.get("times"):
        for r, s in zip(runs, shown, strict=True):
            s["times"] = point_times(r, key, s["steps"])
    return JsonResponse({"key": key, "series": shown})


@login_required
@require_POST
def cancel_run(request: HttpRequest, run_id: int) -> HttpResponse:
    # A viewer's PermissionDenied is a 403 page naming the role it takes (they see no button).
    run = request_cancel(user=request.user, run=run_for(request.user, run_id))
    if run.status == RunStatus.CANCELLED:
        messages.success(request, "The run was cancelled before it started.")
    elif run.cancel_requested and run.is_active:
        messages.info(
            request, "Cancel requested; the run saves a checkpoint, then stops (its log says when)."
        )
    else:
        messages.info(request, f"The run had already finished ({run.status}).")
    return redirect("runs:detail", run_id=run.id)


@sse_view
async def run_stream(request: HttpRequest, user: AbstractBaseUser, run_id: int) -> HttpResponse:
    """SSE: points, logs and status of one run as they arrive; ends when the run is final.

    With ``?poll=1`` the same updates as one JSON answer, for pages that cannot hold a stream.
    """
    run = await sync_to_async(run_for)(user, run_id)  # 404 for another team's run
    resume = request.headers.get("Last-Event-ID", "") or request.GET.get("cursor", "")
    cursor = cursor_from_event_id(resume) or StreamCursor(
        point_seq=_int_param(request, "after", -1), log_id=_int_param(request, "log_after", -1)
    )
    if request.GET.get("poll"):
        # The page's polling fallback (static/js/live.js): one catch-up read, as JSON.
        return JsonResponse(await sync_to_async(poll_updates, thread_sensitive=False)(run.id, cursor))
    return sse_response(run_events(run.id, cursor))


def _step_window(request: HttpRequest) -> dict[str, int | None]:
    """``since`` (exclusive) and ``until`` (inclusive) steps of a zoomed chart, and ``points``, as series() takes them.

    ``points``: how many points the chart can show (two a pixel column: its min and max),
    kept within 100..2000. A 600-pixel panel asks for 1,200, which lets a million-step series
    be read from summary buckets 8 times coarser than 2,000 would (metrics.selectors).
    """
    points = _int_param(request, "points", DEFAULT_MAX_POINTS)
    return {
        "since_step": _int_param(request, "since", None),
        "until_step": _int_param(request, "until", None),
        "max_points": min(DEFAULT_MAX_POINTS, max(MIN_CHART_POINTS, points)),
    }


def _int_param(request: HttpRequest, name: str, default: int | None) -> int | None:
    # ASCII digits within BIGINT only: int() takes "١٢" and 10**30, which the database refuses.
    value = parse_whole_number(request.GET.get(name))
    return default if value is None else value


def _external_sections(config: dict[str, Any]) -> list[dict[str, Any]]:
    """An external run's config as its client sent it: its params (and an MLflow client's tags)."""
    titles = {"params": "Params", "tags": "Tags"}
    return [
        {
            "name": name,
            "title": titles.get(name, name),
            "rows": [
                {"name": key, "value": value, "changed": False, "help": ""} for key, value in values.items()
            ],
        }
        for name, values in config.items()
        if isinstance(values, dict)
    ]


def _config_sections(config: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored config as titled sections, each value flagged when it differs from the default."""
    sections = []
    for section in field_schema():
        values = config.get(section["name"], {})
        rows = [
            {
                "name": meta["name"],
                "value": values.get(meta["name"], meta["default"]),
                "changed": values.get(meta["name"], meta["default"]) != meta["default"],
                "help": meta["help"],
            }
            for meta in section["fields"]
        ]
        sections.append({"name": section["name"], "title": SECTION_TITLES.get(section["name"]), "rows": rows})
    return sections
