"""The fleet scheduler: which host's queue each queued run goes to, and why the others wait.

One pass (``schedule``):

1. queued managed runs without a place in the queue get one (``enter_queue``);
2. runs that ended give their GPUs back (``release_ended``); runs placed on a host that
   stopped beating and not claimed yet go back to the queue (``unplace``);
3. the waiting runs, highest ``resources.priority`` first, then in submission order, are
   each placed on the alive host with the fewest free GPUs that still fit (best fit keeps
   big holes for big runs), within the team's quota. A run that waits for capacity holds
   the hosts it could use against runs behind it, so a large run is not starved by a
   stream of small ones; runs that could only use other hosts go past it;
4. a placed run's launch goes to its host's queue, where ``workers.tasks.launch_run``
   leases the GPUs (the flock stays the host-level guarantee) and claims it.

A multi-node run (``launcher.nodes`` = N) needs ``count`` free on N distinct hosts: the N
best-fitting ones are reserved in one transaction (all or nothing, ``services.place``); the
first is its node rank 0, whose worker claims and supervises it and sends the other
nodes' launches (``workers.nodes``). It waits, holding its candidate hosts like any run
waiting for capacity, until N hosts have room at once.

Each placement is three conditional UPDATEs in one transaction (``webapp.fleet.services``),
so passes may run at once on several workers: a pass that loses a race moves on.
Passes run on every launch (the web sends ``schedule_runs`` instead of the launch), after
every run a worker finishes, and from beat.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from celery import shared_task
from django.conf import settings
from django.db import transaction

from webapp import enqueue
from webapp.fleet import services
from webapp.fleet.models import Host, Kind, NodeShare, Placement, TeamQuota
from webapp.runs.models import RunStatus

log = logging.getLogger(__name__)

SCHEDULE_TIME_LIMIT_SECONDS = 120


@dataclasses.dataclass
class HostState:
    pk: int
    name: str
    queue: str
    gpus: int
    gpu_models: list[str]
    cpu_slots: int
    reserved: int

    @property
    def kind(self) -> str:
        return Kind.GPU if self.gpus else Kind.SLOT

    @property
    def capacity(self) -> int:
        return self.gpus or self.cpu_slots

    @property
    def free(self) -> int:
        return self.capacity - self.reserved

    def accepts(self, entry: Placement, *, pinned: bool = True) -> bool:
        """Whether this host could ever hold the run (kind, model, name, size).

        ``pinned``: whether ``resources.host`` applies; it names a multi-node run's first node only.
        """
        if pinned and entry.host_name and entry.host_name != self.name:
            return False
        if entry.kind == Kind.GPU and self.gpus:
            if entry.gpu_model and not all(entry.gpu_model.lower() in m.lower() for m in self.gpu_models):
                return False
        elif entry.kind == Kind.GPU and not self.gpus:
            # device auto runs CPU processes on a host without GPUs; an explicit GPU model cannot
            if entry.gpu_model:
                return False
        elif entry.kind == Kind.SLOT and self.gpus:
            return False  # CPU runs stay off GPU hosts, whose slots are their GPUs
        return entry.count <= self.capacity


@dataclasses.dataclass(frozen=True)
class PassResult:
    placed: list[tuple[int, str]]  # (run id, host name)
    waiting: int
    released: list[int]
    requeued: list[int]


def alive_hosts() -> list[HostState]:
    lost_after = dt.timedelta(seconds=settings.FLEET_HOST_LOST_SECONDS)
    hosts = Host.objects.filter(services.alive_hosts_filter(lost_after)).prefetch_related("gpus")
    return [
        HostState(
            pk=h.pk,
            name=h.name,
            queue=h.queue,
            gpus=len(h.gpus.all()),
            gpu_models=[g.model for g in h.gpus.all()],
            cpu_slots=h.cpu_slots,
            reserved=h.reserved,
        )
        for h in hosts
    ]


def _requeue_from_silent_hosts(alive: list[HostState]) -> list[int]:
    """Placed runs still queued on a host that stopped beating (any of a multi-node run's): back into the queue."""
    alive_ids = [h.pk for h in alive]
    placed = Placement.objects.filter(
        host__isnull=False, released_at__isnull=True, run__status=RunStatus.QUEUED
    )
    stranded = placed.exclude(host_id__in=alive_ids) | placed.filter(
        pk__in=NodeShare.objects.exclude(host_id__in=alive_ids).values("placement_id")
    )
    return [
        run_id
        for run_id, host_id in stranded.distinct().values_list("pk", "host_id")
        if services.unplace(run_id, host_id)
    ]


def _wait_reason(entry: Placement, candidates: list[HostState], blocked: set[int]) -> str:
    what = f"{entry.count} × {entry.gpu_model or ('GPU' if entry.kind == Kind.GPU else 'CPU slot')}"
    where = f" on {entry.host_name}" if entry.host_name else ""
    if entry.nodes > 1:
        what = f"{what} on each of {entry.nodes} hosts"
        where = f" (the first on {entry.host_name})" if entry.host_name else ""
        if len(candidates) < entry.nodes:
            return f"needs {what}{where}: {len(candidates)} alive host(s) could hold a share"
        open_hosts = [h for h in candidates if h.pk not in blocked]
        if not open_hosts:
            return f"needs {what}{where}: waiting behind runs higher in the queue"
        room = sum(1 for h in open_hosts if h.free >= entry.count)
        return f"needs {what}{where}, {room} host(s) have room"
    if not candidates:
        return f"needs {what}{where}: no alive host has that many"
    open_hosts = [h for h in candidates if h.pk not in blocked]
    if not open_hosts:
        return f"needs {what}{where}: waiting behind runs higher in the queue"
    most = max(h.free for h in open_hosts)
    return f"needs {what}{where}, {max(most, 0)} free"


def _choose_hosts(entry: Placement, hosts: list[HostState], blocked: set[int]) -> list[HostState] | None:
    """The run's hosts, best fit first, node rank 0 first (``resources.host`` when it names one); None: no room now."""
    fits = sorted(
        (
            h
            for h in hosts
            if h.pk not in blocked and h.free >= entry.count and h.accepts(entry, pinned=False)
        ),
        key=lambda h: (h.free, h.name),
    )
    firsts = [h for h in fits if h.accepts(entry)]
    if not firsts:
        return None
    first = firsts[0]
    rest = [h for h in fits if h.pk != first.pk][: entry.nodes - 1]
    return [first, *rest] if len(rest) == entry.nodes - 1 else None


def schedule(limit: int = 5000) -> PassResult:
    """One scheduling pass over the whole queue (see the module's docstring)."""
    lost_after = dt.timedelta(seconds=settings.FLEET_HOST_LOST_SECONDS)
    services.enter_queue(limit, lost_after)
    released = services.release_ended()
    hosts = alive_hosts()
    requeued = _requeue_from_silent_hosts(hosts)
    if requeued:
        hosts = alive_hosts()  # what they held on alive hosts (a multi-node run's other nodes) is free again
    quotas = {q.pk: q for q in TeamQuota.objects.all()}
    waiting = list(
        Placement.objects.filter(host__isnull=True, released_at__isnull=True, run__status=RunStatus.QUEUED)
        .order_by("-priority", "submitted_at", "run_id")
        .only("run_id", "team_id", "kind", "count", "gpu_model", "host_name", "priority", "nodes")[:limit]
    )
    blocked: set[int] = set()  # hosts held for a run higher in the queue
    placed: list[tuple[int, str]] = []
    notes: list[tuple[int, str]] = []
    window = lost_after * services.AVOID_LOST_HOSTS_PERIODS
    avoided = services.avoided_hosts((e.run_id for e in waiting if e.nodes > 1), window)
    for entry in waiting:
        skip = avoided.get(entry.run_id, set())  # lost in its last attempt (their beat may lag)
        candidates = [h for h in hosts if h.pk not in skip and h.accepts(entry, pinned=entry.nodes == 1)]
        quota = quotas.get(entry.team_id)
        total = entry.count * entry.nodes
        if quota is not None and quota.max_gpus is not None and quota.in_use + total > quota.max_gpus:
            reason = (
                f"team quota: {quota.in_use} of {quota.max_gpus} in use, needs {total} more"
                if total <= quota.max_gpus
                else f"asks for {total}, more than the team's quota of {quota.max_gpus}"
            )
            notes.append((entry.run_id, reason))
            continue
        outcome, chosen = services.Outcome.HOST_FULL, None
        # A host filled by another scheduler meanwhile: re-read it and choose again (a few times).
        for _ in range(3):
            chosen = _choose_hosts(entry, candidates, blocked)
            if chosen is None:
                break
            first, *more = chosen
            outcome = services.place(
                entry.run_id,
                first.pk,
                first.capacity,
                entry.team_id,
                entry.count,
                [(h.pk, h.capacity) for h in more],
            )
            if outcome != services.Outcome.HOST_FULL:
                break
            for h in chosen:
                h.reserved = Host.objects.filter(pk=h.pk).values_list("reserved", flat=True).first() or 0
        if outcome == services.Outcome.TAKEN:
            continue  # another scheduler decided about it
        if outcome != services.Outcome.PLACED or chosen is None:
            notes.append((entry.run_id, _wait_reason(entry, candidates, blocked)))
            blocked.update(h.pk for h in candidates)
            continue
        _send_after_commit(entry.run_id, chosen[0].queue)
        for h in chosen:
            h.reserved += entry.count
        if quota is not None:
            quota.in_use += total
        placed.append((entry.run_id, chosen[0].name))
    services.note_waiting(notes)
    return PassResult(placed=placed, waiting=len(notes), released=released, requeued=requeued)


def _send_after_commit(run_id: int, queue: str) -> None:
    transaction.on_commit(lambda: send_launch(run_id, queue))


def send_launch(run_id: int, queue: str) -> None:
    """The launch, to the queue only the chosen host consumes (the beat's re-send covers a failure)."""
    try:
        enqueue.app.send_task(enqueue.LAUNCH_RUN, (run_id,), queue=queue)
    except Exception:
        log.exception("could not send the launch of run %s to %s; beat sends it again", run_id, queue)


def placed_queue(run_id: int) -> str | None:
    """The queue of the host a still-queued run is placed on (a re-send goes there)."""
    return (
        Placement.objects.filter(pk=run_id, released_at__isnull=True, run__status=RunStatus.QUEUED)
        .exclude(host__isnull=True)
        .values_list("host__queue", flat=True)
        .first()
    )


@shared_task(
    name=enqueue.SCHEDULE_RUNS,
    ignore_result=True,
    soft_time_limit=SCHEDULE_TIME_LIMIT_SECONDS // 2,
    time_limit=SCHEDULE_TIME_LIMIT_SECONDS,
)
def schedule_runs(run_id: int | None = None) -> int:
    """A scheduling pass; ``run_id``'s launch is sent again to its host when it is already placed.

    The web sends this in place of the launch itself (a run may be placed on any host);
    beat's re-send of a queued run arrives here too, and finds it placed or places it.
    """
    if run_id is not None:
        queue = placed_queue(run_id)
        if queue:
            send_launch(run_id, queue)
    result = schedule()
    if result.placed or result.requeued:
        log.info(
            "placed %s; back in the queue %s; %d waiting", result.placed, result.requeued, result.waiting
        )
    return len(result.placed)


def placed_here(run_id: int, worker: str) -> bool:
    """Whether the fleet placed this run on ``worker`` (a stale message on another host must not start it)."""
    return Placement.objects.filter(pk=run_id, host__name=worker, released_at__isnull=True).exists()
