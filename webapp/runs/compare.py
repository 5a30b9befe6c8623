"""Which runs a comparison shows: the ``run`` query parameters, checked against what a user may see."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from webapp.input_errors import InputError
from webapp.metrics.models import MetricKey
from webapp.projects.models import Project
from webapp.runs.models import Run
from webapp.runs.selectors import runs_visible_to
from webapp.whole_numbers import parse_whole_number

MAX_RUNS = 8  # more lines than this on one chart stop being readable


def runs_to_compare(
    user: AbstractBaseUser | AnonymousUser, project: Project, run_params: list[str]
) -> list[Run]:
    """The runs named by ``run_params`` (ids, in the order given, duplicates dropped).

    Raises InputError unless there are 2 to MAX_RUNS ids, all integers, all runs of this
    project that the user may see.
    """
    ids: list[int] = []
    for raw in run_params:
        run_id = parse_whole_number(raw)  # not int(): it takes "١٢" and 10**30
        if run_id is None:
            raise InputError(
                {"run": f"{raw!r} is not a run id; pick runs with the boxes on the project page"}
            )
        if run_id not in ids:
            ids.append(run_id)
    if len(ids) < 2:
        raise InputError({"run": "pick at least two runs to compare (tick their boxes on the project page)"})
    if len(ids) > MAX_RUNS:
        raise InputError({"run": f"pick at most {MAX_RUNS} runs; {len(ids)} were picked"})
    found = {r.id: r for r in runs_visible_to(user).filter(project=project, pk__in=ids)}
    missing = [i for i in ids if i not in found]
    if missing:
        listed = ", ".join(str(i) for i in missing)
        raise InputError({"run": f"no run {listed} in this project; pick runs from its list"})
    return [found[i] for i in ids]


def keys_of_runs(runs: list[Run]) -> list[str]:
    """Every metric key any of the runs has logged, sorted."""
    keys = MetricKey.objects.filter(run__in=runs).values_list("key", flat=True).distinct()
    return sorted(keys)


def config_differences(runs: list[Run]) -> list[dict[str, Any]]:
    """The config fields whose values differ between the runs: ``{"field", "values"}``, one value per run.

    Fields are ``section.name`` in the config's own order; a field one run lacks (an older
    config) shows as None for it.
    """
    flat = [
        {
            f"{section}.{name}": value
            for section, fields in run.config.items()
            for name, value in fields.items()
        }
        for run in runs
    ]
    fields = list(dict.fromkeys(field for config in flat for field in config))
    rows = []
    for field in fields:
        values = [config.get(field) for config in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append({"field": field, "values": values})
    return rows
