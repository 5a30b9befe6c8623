"""Every write of the fleet: hosts registering and beating, placements, releases, quotas.

Placement decisions are conditional UPDATEs, never read-modify-write, so several
schedulers (one per beat, one per finished run) can decide at once:

- a host's capacity: ``UPDATE host SET reserved = reserved + n WHERE reserved + n <= capacity``;
- a team's quota: ``UPDATE quota SET in_use = in_use + n WHERE max IS NULL OR in_use + n <= max``;
- the run: ``UPDATE placement SET host = h WHERE host IS NULL AND released_at IS NULL``.

All three in one transaction: a scheduler that loses any of them writes nothing.
Releases are fenced the same way (``released_at IS NULL``), so a run's GPUs go back once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Now

from modelcore.config import ConfigError, RunConfig
from webapp.accounts.models import Team
from webapp.fleet.models import (
    Gpu,
    Host,
    HostSample,
    Kind,
    NodeShare,
    Placement,
    ShareState,
    TeamQuota,
)
from webapp.fleet.stream import announce_placements_after_commit
from webapp.input_errors import InputError
from webapp.runs.models import Run, RunSource, RunStatus
from webapp.whole_numbers import parse_whole_number

SAMPLE_KEEP_HOURS = 24


@dataclass(frozen=True)
class GpuInfo:
    index: str
    model: str = ""
    memory_mb: int = 0


def register_host(
    *, name: str, queue: str, address: str = "", cpu_slots: int = 0, gpus: Sequence[GpuInfo] = ()
) -> Host:
    """Create or refresh a worker's host row with what it has now (a restart may bring other GPUs)."""
    with transaction.atomic():
        host, _ = Host.objects.update_or_create(
            name=name[:200], defaults={"queue": queue[:200], "address": address[:200], "cpu_slots": cpu_slots}
        )
        Host.objects.filter(pk=host.pk).update(heartbeat_at=Now())
        host.gpus.exclude(index__in=[g.index for g in gpus]).delete()
        for gpu in gpus:
            Gpu.objects.update_or_create(
                host=host,
                index=gpu.index[:40],
                defaults={"model": gpu.model[:100], "memory_mb": gpu.memory_mb},
            )
    host.refresh_from_db()
    return host


def beat_host(name: str, values: dict | None = None, holders: dict[str, int | None] | None = None) -> bool:
    """The host is alive; ``values`` (see ``HostSample``) is stored as one utilisation sample.

    ``holders``: GPU id → the run whose trainer holds its lease (None: free).
    """
    host_id = Host.objects.filter(name=name).values_list("pk", flat=True).first()
    if host_id is None:
        return False
    Host.objects.filter(pk=host_id).update(heartbeat_at=Now())
    for index, run_id in (holders or {}).items():
        known = run_id if run_id is not None and Run.objects.filter(pk=run_id).exists() else None
        Gpu.objects.filter(host_id=host_id, index=index).exclude(run_id=known).update(run_id=known)
    if values:
        HostSample.objects.create(host_id=host_id, time=Now(), values=values)
        cutoff = ExpressionWrapper(
            Now() - Value(dt.timedelta(hours=SAMPLE_KEEP_HOURS)), output_field=DateTimeField()
        )
        HostSample.objects.filter(host_id=host_id, time__lt=cutoff).delete()
    return True


def host_gone(name: str) -> None:
    """A worker shut down cleanly: it takes no new runs until it registers again."""
    Host.objects.filter(name=name).update(heartbeat_at=None)


def alive_hosts_filter(lost_after: dt.timedelta) -> Q:
    cutoff = ExpressionWrapper(Now() - Value(lost_after), output_field=DateTimeField())
    return Q(heartbeat_at__gte=cutoff)


# --- the queue -----------------------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    """What a stored config asks the fleet for: ``count`` on each of ``nodes`` hosts."""

    kind: str
    count: int
    gpu_model: str = ""
    host: str = ""
    priority: int = 0
    nodes: int = 1


def demand(config: dict) -> Demand:
    """What a stored config asks for.

    A run on ``parallel.device`` cpu takes CPU slots; any other run takes GPUs (``auto`` on a
    fleet without GPUs falls back to slots: the scheduler decides per host). ``launcher.nodes``
    splits ``parallel.num_processes`` evenly over that many hosts. A config that no longer
    validates asks for one slot: its launch fails it with the field named.
    """
    try:
        parsed = RunConfig.from_dict(config)
    except ConfigError:
        return Demand(Kind.SLOT, 1)
    kind = Kind.SLOT if parsed.parallel.device == "cpu" else Kind.GPU
    r, nodes = parsed.resources, parsed.launcher.nodes
    return Demand(kind, parsed.parallel.num_processes // nodes, r.gpu_model, r.host, r.priority, nodes)


# How long a run's next placement skips the hosts lost in its last attempt: a little over the
# time after which a host that stopped beating is not alive anyway.
AVOID_LOST_HOSTS_PERIODS = 2


def enter_queue(limit: int = 5000, lost_after: dt.timedelta | None = None) -> int:
    """Give every queued managed run without one a place in the queue; returns how many were added.

    A run that comes back to ``queued`` (resumed) after its last placement was released
    gets a fresh entry, submitted now, in place of the old one.
    """
    stale = Placement.objects.filter(released_at__isnull=False, run__status=RunStatus.QUEUED)
    # A run released right after its lost hosts were marked (``unplace_lost_nodes``) keeps avoiding them.
    window = (lost_after or dt.timedelta(0)) * AVOID_LOST_HOSTS_PERIODS
    stale_ids = stale.values_list("pk", flat=True)
    avoid = {pk: sorted(hosts) for pk, hosts in avoided_hosts(stale_ids, window).items()}
    stale.delete()
    rows = Run.objects.filter(
        status=RunStatus.QUEUED, source=RunSource.MANAGED, placement__isnull=True
    ).values_list("pk", "project__team_id", "created_at", "config")[:limit]
    entries = []
    for run_id, team_id, created_at, config in rows:
        asked = demand(config)
        entries.append(
            Placement(
                run_id=run_id,
                team_id=team_id,
                priority=asked.priority,
                submitted_at=created_at,
                kind=asked.kind,
                count=asked.count,
                gpu_model=asked.gpu_model,
                host_name=asked.host,
                nodes=asked.nodes,
            )
        )
    Placement.objects.bulk_create(entries, ignore_conflicts=True)
    _mark_avoided({pk: hosts for pk, hosts in avoid.items() if Placement.objects.filter(pk=pk).exists()})
    announce_placements_after_commit([e.run_id for e in entries])
    return len(entries)


def _give_back(run_id: int, host_id: int, team_id: int, count: int, nodes: int) -> None:
    """Return a placed run's reservation: ``count`` on its first host and on each share's, the total to the team."""
    Host.objects.filter(pk=host_id).update(reserved=F("reserved") - count)
    share_hosts = NodeShare.objects.filter(placement_id=run_id, host__isnull=False).values_list(
        "host_id", flat=True
    )
    for share_host in list(share_hosts):
        Host.objects.filter(pk=share_host).update(reserved=F("reserved") - count)
    TeamQuota.objects.filter(pk=team_id).update(in_use=F("in_use") - count * nodes)


def release(run_id: int) -> bool:
    """Give the run's GPUs back to its hosts and its team; False when they already went back."""
    with transaction.atomic():
        entry = Placement.objects.filter(pk=run_id).values("host_id", "team_id", "count", "nodes").first()
        if entry is None:
            return False
        if Placement.objects.filter(pk=run_id, released_at__isnull=True).update(released_at=Now()) != 1:
            return False
        if entry["host_id"] is not None:
            _give_back(run_id, entry["host_id"], entry["team_id"], entry["count"], entry["nodes"])
        announce_placements_after_commit([run_id])
    return True


def release_ended() -> list[int]:
    """Release the placements of runs that ended (or left the queue unplaced); returns their ids."""
    ended = Placement.objects.filter(released_at__isnull=True).exclude(
        run__status__in=(RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)
    )
    return [run_id for run_id in ended.values_list("pk", flat=True) if release(run_id)]


def unplace(run_id: int, host_id: int) -> bool:
    """Take a placed run that no worker claimed back into the queue (its host went silent)."""
    with transaction.atomic():
        if not Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).exists():
            return False  # started meanwhile: its supervisor's heartbeat decides (lost, then released)
        entry = Placement.objects.filter(pk=run_id, host_id=host_id, released_at__isnull=True)
        row = entry.values("count", "nodes", "team_id").first()
        # The row's own columns only (see ``place``): of two passes, one moves it.
        moved = entry.update(
            host=None, placed_at=None, reason="a host it was placed on stopped beating; placing it again"
        )
        if moved != 1 or row is None:
            return False
        _give_back(run_id, host_id, row["team_id"], row["count"], row["nodes"])
        NodeShare.objects.filter(placement_id=run_id).delete()
        announce_placements_after_commit([run_id])
    return True


def unplace_lost_nodes(run_id: int, host_ids: Iterable[int]) -> bool:
    """A multi-node run ended lost because these hosts' shares went silent or were lost: take
    it off its hosts, to be placed again on others; whether it was taken off here.

    A resume that kept the placement would send the next attempt's share to a host that just
    went silent, and that host counts as silent to the scheduler only after
    ``FLEET_HOST_LOST_SECONDS`` (its beat may even be in flight): so the placement keeps the
    hosts as ``lost`` shares of no host's placement (``avoided_hosts``), which the next
    placement skips and replaces. The hosts also count as gone until they beat again.
    """
    hosts = sorted(set(host_ids))
    with transaction.atomic():
        Host.objects.filter(pk__in=hosts).update(heartbeat_at=None)
        entry = Placement.objects.filter(pk=run_id, released_at__isnull=True, host__isnull=False)
        row = entry.values("host_id", "count", "nodes", "team_id").first()
        if row is None:
            return False
        reason = "a host of its last attempt was lost; placing it again on other hosts"
        if entry.update(host=None, placed_at=None, reason=reason) != 1:
            return False
        _give_back(run_id, row["host_id"], row["team_id"], row["count"], row["nodes"])
        NodeShare.objects.filter(placement_id=run_id).delete()
        _mark_avoided({run_id: hosts})
        announce_placements_after_commit([run_id])
    return True


def _mark_avoided(avoid: dict[int, Sequence[int]]) -> None:
    NodeShare.objects.bulk_create(
        NodeShare(placement_id=run_id, node_rank=rank, host_id=host_id, state=ShareState.LOST, ended_at=Now())
        for run_id, host_ids in avoid.items()
        for rank, host_id in enumerate(host_ids, start=1)
    )


def avoided_hosts(run_ids: Iterable[int], within: dt.timedelta) -> dict[int, set[int]]:
    """Run id → the hosts its next placement skips: those lost in its last attempt (``unplace_lost_nodes``)
    less than ``within`` ago. Later a dead host no longer looks alive, and one that beats is used again
    (on a fleet of exactly its hosts the run would otherwise wait for ever)."""
    marks = NodeShare.objects.filter(
        placement_id__in=list(run_ids),
        placement__host__isnull=True,
        state=ShareState.LOST,
        host__isnull=False,
        ended_at__gte=ExpressionWrapper(Now() - Value(within), output_field=DateTimeField()),
    )
    avoid: dict[int, set[int]] = {}
    for run_id, host_id in marks.values_list("placement_id", "host_id"):
        avoid.setdefault(run_id, set()).add(host_id)
    return avoid


class Outcome:
    """What ``place`` did; the scheduler moves on differently after each."""

    PLACED = "placed"
    HOST_FULL = "host_full"  # another scheduler filled the host first: try another
    OVER_QUOTA = "over_quota"  # another scheduler used the team's quota first
    TAKEN = "taken"  # the run was placed by another scheduler, cancelled or started


def place(
    run_id: int,
    host_id: int,
    capacity: int,
    team_id: int,
    count: int,
    more_hosts: Sequence[tuple[int, int]] = (),
) -> str:
    """Reserve ``count`` on the host and the team's quota and place the run (an ``Outcome``).

    ``more_hosts``: (host id, capacity) of a multi-node run's further nodes, in node-rank
    order; each reserves ``count`` too and gets its ``NodeShare``. Nothing is written unless
    every conditional UPDATE holds: a multi-node run is placed on all its hosts or on none.
    """
    TeamQuota.objects.get_or_create(team_id=team_id)
    total = count * (1 + len(more_hosts))
    with transaction.atomic():
        # Only the row's own columns in the WHERE: a condition on the run (a join) becomes a
        # subquery that PostgreSQL does not re-check after waiting for the row's lock, so two
        # schedulers could both place it. A run cancelled meanwhile is released by the next pass.
        waiting = Placement.objects.filter(pk=run_id, host__isnull=True, released_at__isnull=True)
        if waiting.update(host_id=host_id, placed_at=Now(), reason="") != 1:
            return Outcome.TAKEN
        for pk, cap in [(host_id, capacity), *more_hosts]:
            fits = Host.objects.filter(pk=pk, reserved__lte=cap - count)
            if fits.update(reserved=F("reserved") + count) != 1:
                transaction.set_rollback(True)
                return Outcome.HOST_FULL
        within = Q(max_gpus__isnull=True) | Q(in_use__lte=F("max_gpus") - total)
        if TeamQuota.objects.filter(within, pk=team_id).update(in_use=F("in_use") + total) != 1:
            transaction.set_rollback(True)
            return Outcome.OVER_QUOTA
        NodeShare.objects.filter(placement_id=run_id).delete()  # a placement taken back earlier
        NodeShare.objects.bulk_create(
            NodeShare(placement_id=run_id, node_rank=rank, host_id=pk)
            for rank, (pk, _) in enumerate(more_hosts, start=1)
        )
        announce_placements_after_commit([run_id])  # the Fleet page shows it on its hosts now
    return Outcome.PLACED


def note_waiting(notes: Iterable[tuple[int, str]]) -> None:
    """Store (run id, reason) of the runs that still wait, writing only the reasons that changed."""
    reasons = {pk: reason[:300] for pk, reason in notes}
    current = dict(Placement.objects.filter(pk__in=list(reasons)).values_list("pk", "reason"))
    changed = [
        Placement(run_id=pk, reason=reason) for pk, reason in reasons.items() if current.get(pk) != reason
    ]
    Placement.objects.bulk_update(changed, ["reason"], batch_size=500)
    announce_placements_after_commit([entry.run_id for entry in changed])  # the queue shows why each waits


# --- quotas --------------------------------------------------------------------------


def set_team_quota(*, actor: AbstractBaseUser, team: Team, max_gpus: object) -> TeamQuota:
    """An operator (staff) sets how many GPUs (CPU slots on GPU-less hosts) a team may hold at once.

    ``max_gpus`` None or "" lifts the limit. A team admin may not raise their own team's limit.
    """
    if not actor.is_staff:
        raise PermissionDenied("Only an operator (staff account) may set team quotas.")
    if max_gpus in (None, ""):
        value = None
    else:
        value = max_gpus if isinstance(max_gpus, int) and not isinstance(max_gpus, bool) else None
        if value is None:
            value = parse_whole_number(max_gpus.strip() if isinstance(max_gpus, str) else max_gpus)
        if value is None:
            raise InputError({"max_gpus": "must be a whole number of GPUs, or empty for no limit"})
        if not 0 <= value <= 100_000:
            raise InputError({"max_gpus": f"must be between 0 and 100000 (got {value})"})
    quota, _ = TeamQuota.objects.get_or_create(team=team)
    TeamQuota.objects.filter(pk=team.pk).update(max_gpus=value)
    quota.refresh_from_db()
    return quota
