"""The fleet over the API, read-only: hosts, their GPUs, what holds them, their heartbeat.

The same reads as the fleet page (``webapp.fleet.selectors.fleet_for``): every signed-in
person sees the hosts; a run on them is named only where the caller may see it, otherwise
it is ``held_by_other`` / ``other_team`` with no name or id.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from webapp.api.schemas import answers
from webapp.fleet.selectors import HostView, fleet_for
from webapp.runs.models import Run

router = Router(tags=["fleet"])


class RunRef(Schema):
    id: int
    name: str
    status: str
    project: int


class GpuOut(Schema):
    index: str
    model: str
    memory_mb: int
    run: RunRef | None = Field(description="the run holding it, if you may see that run")
    held_by_other: bool = Field(description="held by a run of a team you are not in")


class PlacedRun(Schema):
    run: RunRef | None = Field(description="null: another team's run")
    count: int = Field(description="GPUs (or CPU slots) it holds here")


class HostOut(Schema):
    name: str
    queue: str
    alive: bool = Field(description="its worker beat within the fleet's lost-after window")
    heartbeat_at: str | None
    registered_at: str
    capacity: int = Field(description="GPUs, or CPU slots on a host without any")
    reserved: int
    gpus: list[GpuOut]
    runs: list[PlacedRun]


class HostList(Schema):
    hosts: list[HostOut]


def _run(run: Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"id": run.id, "name": run.name, "status": run.status, "project": run.project_id}


def host_json(view: HostView) -> dict[str, Any]:
    host = view.host
    return {
        "name": host.name,
        "queue": host.queue,
        "alive": view.alive,
        "heartbeat_at": host.heartbeat_at.isoformat() if host.heartbeat_at else None,
        "registered_at": host.registered_at.isoformat(),
        "capacity": view.capacity,
        "reserved": host.reserved,
        "gpus": [
            {
                "index": g.index,
                "model": g.model,
                "memory_mb": g.memory_mb,
                "run": _run(g.run),
                "held_by_other": g.held_by_other,
            }
            for g in view.gpus
        ],
        "runs": [{"run": _run(run), "count": count} for run, count in view.runs],
    }


@router.get("fleet/hosts", response=answers({200: HostList}), url_name="fleet_hosts")
def fleet_hosts(request: HttpRequest) -> dict[str, Any]:
    """Every registered host (a handful: not paged) with its GPUs and the runs placed on it."""
    return {"hosts": [host_json(view) for view in fleet_for(request.user)]}
