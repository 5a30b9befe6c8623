"""Reads of the fleet, from one person's point of view.

Hosts and GPUs are the operator's and every signed-in person sees them; the runs on them
are named only where the person may see the run (``runs_visible_to``): another team's run
is "another team's run", never its name or link.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from webapp.accounts.models import Team
from webapp.fleet.models import Host, HostSample, NodeShare, Placement, TeamQuota
from webapp.runs.models import Run, RunStatus
from webapp.runs.selectors import runs_visible_to

MAX_CHART_POINTS = 720  # per host and metric: a 12-hour window at a 60 s resolution


@dataclass
class GpuView:
    index: str
    model: str
    memory_mb: int
    run: Run | None  # visible to the person
    held_by_other: bool  # held by a run the person may not see
    node: str = ""  # "node 1 of 2": which share of a multi-node run holds it


@dataclass
class PlacedRun:
    """A run placed on a host: ``count`` GPUs (or slots), and which node of a multi-node run this host is."""

    run: Run | None  # None: a run the person may not see
    count: int
    node_rank: int = 0
    nodes: int = 1

    @property
    def node(self) -> str:
        return f"node {self.node_rank} of {self.nodes}" if self.nodes > 1 else ""


@dataclass
class HostView:
    host: Host
    alive: bool
    capacity: int
    gpus: list[GpuView] = field(default_factory=list)
    runs: list[PlacedRun] = field(default_factory=list)


def _visible_ids(user: AbstractBaseUser | AnonymousUser, run_ids: set[int]) -> dict[int, Run]:
    return {r.pk: r for r in runs_visible_to(user).filter(pk__in=run_ids)}


def fleet_for(user: AbstractBaseUser | AnonymousUser) -> list[HostView]:
    """Every registered host with its GPUs, what holds them and the runs placed on it."""
    hosts = list(Host.objects.prefetch_related("gpus"))
    # (host, run, count, node rank, nodes): node 0 is the placement's host.
    placements = [
        (host_id, run_id, count, 0, nodes)
        for host_id, run_id, count, nodes in Placement.objects.filter(
            host__isnull=False, released_at__isnull=True
        ).values_list("host_id", "run_id", "count", "nodes")
    ]
    # A multi-node run is placed on its shares' hosts too, with the same count on each.
    placements += NodeShare.objects.filter(
        placement__host__isnull=False, placement__released_at__isnull=True, host__isnull=False
    ).values_list("host_id", "placement_id", "placement__count", "node_rank", "placement__nodes")
    held = {g.run_id for h in hosts for g in h.gpus.all() if g.run_id}
    visible = _visible_ids(user, held | {p[1] for p in placements})
    cutoff = timezone.now() - dt.timedelta(seconds=settings.FLEET_HOST_LOST_SECONDS)
    views = []
    for host in hosts:
        gpus = list(host.gpus.all())
        view = HostView(
            host=host,
            alive=host.heartbeat_at is not None and host.heartbeat_at >= cutoff,
            capacity=len(gpus) or host.cpu_slots,
        )
        view.runs = [
            PlacedRun(visible.get(run_id), count, rank, nodes)
            for host_id, run_id, count, rank, nodes in placements
            if host_id == host.pk
        ]
        nodes_here = {p.run.pk: p.node for p in view.runs if p.run is not None}
        for gpu in gpus:
            run = visible.get(gpu.run_id) if gpu.run_id else None
            view.gpus.append(
                GpuView(
                    gpu.index,
                    gpu.model,
                    gpu.memory_mb,
                    run,
                    held_by_other=bool(gpu.run_id and run is None),
                    node=nodes_here.get(gpu.run_id, "") if run is not None else "",
                )
            )
        views.append(view)
    return views


def utilisation_for(hours: int = 6) -> list[dict[str, Any]]:
    """Each host's samples of the last ``hours``: ``{"host", "times", "series": {label: values}}``.

    A label per GPU (``gpu0 util``) or ``cpu load``; at most ``MAX_CHART_POINTS`` per host,
    keeping the highest value of each bucket so a busy spike survives the thinning.
    """
    since = timezone.now() - dt.timedelta(hours=hours)
    rows = HostSample.objects.filter(time__gte=since).order_by("host__name", "time")
    by_host: dict[str, list[tuple[dt.datetime, dict]]] = {}
    for name, time, values in rows.values_list("host__name", "time", "values").iterator():
        by_host.setdefault(name, []).append((time, values))
    charts = []
    for name, samples in by_host.items():
        step = max(1, -(-len(samples) // MAX_CHART_POINTS))
        times, series = [], {}
        for start in range(0, len(samples), step):
            bucket = samples[start : start + step]
            times.append(bucket[0][0].isoformat())
            labels: dict[str, float | None] = {}
            for _, values in bucket:
                for label, value in _labelled(values):
                    if value is not None:
                        labels[label] = max(value, labels.get(label) or 0.0)
            for label, value in labels.items():
                series.setdefault(label, [None] * (len(times) - 1)).append(value)
            for values in series.values():
                values.extend([None] * (len(times) - len(values)))
        charts.append({"host": name, "times": times, "series": series})
    return charts


def _labelled(values: dict) -> list[tuple[str, float | None]]:
    if "util" in values:
        return [(f"gpu{i} util", v) for i, v in enumerate(values.get("util") or [])]
    if "cpu" in values:
        return [("cpu load", values["cpu"])]
    return []


def waiting_in_order() -> QuerySet[Placement]:
    """The runs that wait, in the order the scheduler considers them."""
    return Placement.objects.filter(
        host__isnull=True, released_at__isnull=True, run__status=RunStatus.QUEUED
    ).order_by("-priority", "submitted_at", "run_id")


def queue_position(entry: Placement) -> int:
    """1 for the run the scheduler considers first (the ``fleet_queue_order`` index counts)."""
    p, t = entry.priority, entry.submitted_at
    ahead = (
        Q(priority__gt=p)
        | Q(priority=p, submitted_at__lt=t)
        | Q(priority=p, submitted_at=t, run_id__lt=entry.run_id)
    )
    return waiting_in_order().filter(ahead).count() + 1


@dataclass
class QueueView:
    visible: list[Placement]  # the person's waiting runs, in queue order, each with ``position``
    others: int  # other teams' waiting runs


def queue_for(user: AbstractBaseUser | AnonymousUser) -> QueueView:
    order = list(waiting_in_order().values_list("pk", flat=True))
    position = {pk: i for i, pk in enumerate(order, start=1)}
    visible_ids = set(runs_visible_to(user).filter(pk__in=order).values_list("pk", flat=True))
    mine = list(waiting_in_order().filter(pk__in=visible_ids).select_related("run", "run__project"))
    for entry in mine:
        entry.position = position.get(entry.pk)
    return QueueView(visible=mine, others=len(order) - len(mine))


def placement_of(run: Run) -> Placement | None:
    """The run's place in the fleet (a run the caller already may see), None outside the fleet.

    A waiting run's ``position`` is set (1: considered first).
    """
    entry = Placement.objects.filter(pk=run.pk).select_related("host").first()
    if entry is not None and entry.host_id is None and entry.released_at is None:
        entry.position = queue_position(entry)
    return entry


def quotas() -> list[tuple[Team, TeamQuota | None]]:
    """Every team with its quota row (None: never placed, no limit); operators' view."""
    rows = {q.pk: q for q in TeamQuota.objects.all()}
    return [(team, rows.get(team.pk)) for team in Team.objects.order_by("name")]


def database_now() -> dt.datetime:
    return Host.objects.annotate(now=Now()).values_list("now", flat=True).first() or timezone.now()
