"""Every write and read of a multi-node run's node shares (``NodeShare``), on the database's clock.

The first node's supervisor opens an attempt's rendezvous (``open_rendezvous``) and sends
each share's launch; a share's supervisor claims it (``start_share``), beats while its
ranks run (``beat_share``) and writes how they ended (``end_share``). The first node reads
them back (``share_report``) to stop the run when a share failed or its host went silent,
and asks them to stop when its own trainer ended (``stop_shares``). Every write names the
run's attempt, so a share of an earlier attempt can change nothing of a later one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, Q, Value
from django.db.models.functions import Now

from webapp.fleet.models import SHARE_ENDED, NodeShare, Placement, ShareState


@dataclass(frozen=True)
class Rendezvous:
    """Where a multi-node attempt's ranks meet: the first node's address and port."""

    nodes: int
    master_addr: str
    master_port: int


def _before(seconds: float) -> ExpressionWrapper:
    return ExpressionWrapper(Now() - Value(dt.timedelta(seconds=seconds)), output_field=DateTimeField())


def placed_nodes(run_id: int) -> int:
    """How many hosts the run's current placement spans (1 for an unplaced or single-host run)."""
    nodes = (
        Placement.objects.filter(pk=run_id, released_at__isnull=True).values_list("nodes", flat=True).first()
    )
    return nodes or 1


def open_rendezvous(run_id: int, attempt: int, master_addr: str, master_port: int) -> list[tuple[int, str]]:
    """Record the attempt's rendezvous and make every share the attempt's; returns (node rank, queue) to send to."""
    placed = Placement.objects.filter(pk=run_id, released_at__isnull=True, host__isnull=False)
    if placed.update(master_addr=master_addr[:200], master_port=master_port) != 1:
        return []
    shares = NodeShare.objects.filter(placement_id=run_id)
    shares.update(
        attempt=attempt,
        state=ShareState.SENT,
        sent_at=Now(),
        heartbeat_at=None,
        ended_at=None,
        stop_requested=False,
        error="",
    )
    return sent_shares(run_id, attempt)


def sent_shares(run_id: int, attempt: int) -> list[tuple[int, str]]:
    """(node rank, host queue) of the attempt's shares whose launch is to be sent."""
    sent = NodeShare.objects.filter(placement_id=run_id, attempt=attempt, state=ShareState.SENT)
    return list(sent.filter(host__isnull=False).values_list("node_rank", "host__queue"))


def rendezvous(run_id: int) -> Rendezvous | None:
    row = (
        Placement.objects.filter(pk=run_id, released_at__isnull=True, master_port__isnull=False)
        .values("nodes", "master_addr", "master_port")
        .first()
    )
    return Rendezvous(row["nodes"], row["master_addr"], row["master_port"]) if row else None


def _share(run_id: int, attempt: int, node_rank: int):
    return NodeShare.objects.filter(placement_id=run_id, attempt=attempt, node_rank=node_rank)


def start_share(run_id: int, attempt: int, node_rank: int, host_name: str) -> bool:
    """Claim a sent share for its host's worker; False when it is not this host's to start (any more)."""
    claim = _share(run_id, attempt, node_rank).filter(state=ShareState.SENT, host__name=host_name)
    return claim.update(state=ShareState.RUNNING, heartbeat_at=Now()) == 1


def beat_share(run_id: int, attempt: int, node_rank: int) -> bool | None:
    """The share's ranks live; returns whether the first node asked it to stop, None when the share is gone."""
    share = _share(run_id, attempt, node_rank).filter(state=ShareState.RUNNING)
    if share.update(heartbeat_at=Now()) != 1:
        return None
    return bool(share.values_list("stop_requested", flat=True).first())


def stop_requested(run_id: int, attempt: int, node_rank: int) -> bool | None:
    """Whether the first node asked the share to stop; None when the share is no longer this attempt's."""
    found = _share(run_id, attempt, node_rank).values_list("stop_requested", flat=True)
    return None if not found.exists() else bool(found.first())


def end_share(run_id: int, attempt: int, node_rank: int, state: str, error: str = "") -> bool:
    ended = _share(run_id, attempt, node_rank).exclude(state__in=SHARE_ENDED)
    return ended.update(state=state, error=error, ended_at=Now()) == 1


def stop_shares(run_id: int, attempt: int) -> int:
    """Ask the attempt's shares still running (or not started) to stop their ranks."""
    live = NodeShare.objects.filter(placement_id=run_id, attempt=attempt).exclude(state__in=SHARE_ENDED)
    return live.update(stop_requested=True)


@dataclass(frozen=True)
class ShareReport:
    """The attempt's shares as the first node sees them."""

    failed: list[tuple[int, str]]  # (node rank, error)
    lost: list[tuple[int, str]]  # (node rank, why): its worker shut down or was interrupted
    silent: list[tuple[int, str]]  # (node rank, host name): stopped beating, or never started
    live: int  # running or sent, still within their time
    gone_hosts: tuple[int, ...] = ()  # ids of the hosts of the lost and silent shares

    @property
    def all_ended(self) -> bool:
        return not self.live


def share_report(run_id: int, attempt: int, *, lost_after: float, start_within: float) -> ShareReport:
    """Which shares failed, were lost, went silent (``lost_after`` seconds without a beat; not started within ``start_within``)."""
    shares = NodeShare.objects.filter(placement_id=run_id, attempt=attempt).annotate(
        silent=ExpressionWrapper(
            Q(state=ShareState.RUNNING, heartbeat_at__lt=_before(lost_after))
            | Q(state=ShareState.SENT, sent_at__lt=_before(start_within)),
            output_field=BooleanField(),
        )
    )
    failed, lost, silent, live, gone = [], [], [], 0, []
    for rank, state, error, is_silent, host, host_id in shares.values_list(
        "node_rank", "state", "error", "silent", "host__name", "host_id"
    ):
        if state == ShareState.FAILED:
            failed.append((rank, error))
        elif state == ShareState.LOST:
            lost.append((rank, error))
        elif is_silent:
            silent.append((rank, host or "a host no longer registered"))
        elif state != ShareState.COMPLETED:
            live += 1
        if host_id is not None and (state == ShareState.LOST or is_silent):
            gone.append(host_id)
    return ShareReport(failed=failed, lost=lost, silent=silent, live=live, gone_hosts=tuple(gone))
