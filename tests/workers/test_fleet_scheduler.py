"""The scheduler's decisions on the real database: placement, priority and submission order,
quotas, wait reasons, releases, hosts that go silent, and races between two schedulers.

Hosts are registered rows (what a worker writes when it joins); no worker runs here, so the
launches the scheduler sends after commit never leave this test's transaction.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from modelcore.config import ConfigError, RunConfig, preset
from webapp.accounts.models import Team
from webapp.fleet import services
from webapp.fleet.models import Host, Placement, TeamQuota
from webapp.fleet.selectors import queue_position, waiting_in_order
from webapp.fleet.services import GpuInfo
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus
from workers import scheduler


def host(name: str, gpus: int = 0, model: str = "H100", slots: int = 0) -> Host:
    return services.register_host(
        name=name,
        queue=f"host.{name}",
        cpu_slots=slots,
        gpus=[GpuInfo(index=str(i), model=model, memory_mb=81920) for i in range(gpus)],
    )


def gpu_run(project: Project, name: str, gpus: int = 1, *, priority: int = 0, **resources) -> Run:
    config = preset("tiny-cpu").to_dict()
    config["parallel"].update(num_processes=gpus, device="auto")
    config["resources"].update(priority=priority, **resources)
    run = Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)
    return run


def placed_on(run: Run) -> str | None:
    return Placement.objects.filter(pk=run.pk).values_list("host__name", flat=True).first()


def test_best_fit_model_and_host_constraints(project):
    host("big", gpus=8, model="NVIDIA H100 80GB HBM3")
    host("small", gpus=2, model="NVIDIA A100-SXM4-40GB")
    two = gpu_run(project, "two", 2)
    eight = gpu_run(project, "eight", 8)
    a100 = gpu_run(project, "a100", 1, gpu_model="A100")
    named = gpu_run(project, "named", 1, host="big")

    result = scheduler.schedule()

    assert placed_on(two) == "small"  # the fewest free GPUs that fit: the 8-GPU host stays whole
    assert placed_on(eight) == "big"
    assert placed_on(a100) is None  # the A100 host is full
    assert placed_on(named) is None
    assert {run_id for run_id, _ in result.placed} == {two.pk, eight.pk}
    assert Host.objects.get(name="big").reserved == 8 and Host.objects.get(name="small").reserved == 2
    a100_entry = Placement.objects.get(pk=a100.pk)
    assert a100_entry.reason == "needs 1 × A100, 0 free" and queue_position(a100_entry) == 1


def test_priority_then_submission_order(project):
    host("h", gpus=2)
    first_low = gpu_run(project, "low-1", 1, priority=0)
    second_low = gpu_run(project, "low-2", 1, priority=0)
    high = gpu_run(project, "high", 1, priority=50)
    third_low = gpu_run(project, "low-3", 1, priority=0)

    scheduler.schedule()

    assert placed_on(high) == "h" and placed_on(first_low) == "h"
    assert placed_on(second_low) is None and placed_on(third_low) is None
    waiting = list(waiting_in_order())
    assert [(p.run_id, queue_position(p)) for p in waiting] == [(second_low.pk, 1), (third_low.pk, 2)]

    Run.objects.filter(pk=high.pk).update(status=RunStatus.COMPLETED)
    result = scheduler.schedule()
    assert result.released == [high.pk]
    assert placed_on(second_low) == "h" and placed_on(third_low) is None


def test_a_waiting_large_run_holds_its_hosts_but_not_others(project):
    host("h100s", gpus=4, model="H100")
    host("a100s", gpus=1, model="A100")
    blocker = gpu_run(project, "blocker", 2, gpu_model="H100")
    scheduler.schedule()
    big = gpu_run(project, "big", 4, gpu_model="H100")
    small_anywhere = gpu_run(project, "small", 1)
    a100 = gpu_run(project, "a100", 1, gpu_model="A100")

    scheduler.schedule()

    assert placed_on(blocker) == "h100s"
    assert placed_on(big) is None
    # 2 H100s are free, but using one would starve the 4-GPU run ahead of it; the A100 host is open.
    assert placed_on(small_anywhere) == "a100s"
    assert placed_on(a100) is None
    assert Placement.objects.get(pk=a100.pk).reason == "needs 1 × A100, 0 free"
    assert Placement.objects.get(pk=big.pk).reason == "needs 4 × H100, 2 free"


def test_team_quota_limits_what_a_team_holds_at_once(project, alice):
    host("h", gpus=8)
    rivals = Project.objects.create(team=Team.objects.create(name="other"), name="p")
    staff = get_user_model().objects.create_user("operator", is_staff=True)
    services.set_team_quota(actor=staff, team=project.team, max_gpus=3)
    runs = [gpu_run(project, f"r{i}", 2) for i in range(3)]
    other = gpu_run(rivals, "other", 2)

    scheduler.schedule()

    assert [placed_on(r) for r in runs] == ["h", None, None]
    assert placed_on(other) == "h"  # another team's run goes past the quota-held ones
    assert Placement.objects.get(pk=runs[1].pk).reason == "team quota: 2 of 3 in use, needs 2 more"
    assert TeamQuota.objects.get(pk=project.team_id).in_use == 2

    Run.objects.filter(pk=runs[0].pk).update(status=RunStatus.FAILED)
    scheduler.schedule()
    assert placed_on(runs[1]) == "h" and placed_on(runs[2]) is None
    assert TeamQuota.objects.get(pk=project.team_id).in_use == 2

    with pytest.raises(PermissionDenied):
        services.set_team_quota(actor=alice, team=project.team, max_gpus=100)
    with pytest.raises(InputError) as bad:
        services.set_team_quota(actor=staff, team=project.team, max_gpus="lots")
    assert "max_gpus" in bad.value.errors


def test_two_schedulers_with_the_same_view_cannot_overfill_a_host_or_place_a_run_twice(project):
    h = host("h", gpus=1)
    first, second = gpu_run(project, "a", 1), gpu_run(project, "b", 1)
    services.enter_queue()

    # Both schedulers read "1 free" before either wrote; each decides for a different run.
    assert services.place(first.pk, h.pk, 1, project.team_id, 1) == services.Outcome.PLACED
    assert services.place(second.pk, h.pk, 1, project.team_id, 1) == services.Outcome.HOST_FULL
    # And two decisions for the same run: only one holds.
    host("h2", gpus=1)
    h2 = Host.objects.get(name="h2")
    assert services.place(first.pk, h2.pk, 1, project.team_id, 1) == services.Outcome.TAKEN
    assert Host.objects.get(pk=h.pk).reserved == 1 and Host.objects.get(pk=h2.pk).reserved == 0
    assert TeamQuota.objects.get(pk=project.team_id).in_use == 1
    # A release happens once, however many passes see the run ended.
    Run.objects.filter(pk=first.pk).update(status=RunStatus.CANCELLED)
    assert services.release(first.pk) is True and services.release(first.pk) is False
    assert Host.objects.get(pk=h.pk).reserved == 0


def test_runs_placed_on_a_silent_host_and_not_started_go_elsewhere(project, settings):
    settings.FLEET_HOST_LOST_SECONDS = 30
    gone = host("gone", gpus=1)
    run = gpu_run(project, "r", 1)
    scheduler.schedule()
    assert placed_on(run) == "gone"

    Host.objects.filter(pk=gone.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=5))
    host("fresh", gpus=1)
    result = scheduler.schedule()

    assert result.requeued == [run.pk]
    assert placed_on(run) == "fresh"
    assert Host.objects.get(pk=gone.pk).reserved == 0
    assert not scheduler.placed_here(run.pk, "gone") and scheduler.placed_here(run.pk, "fresh")


def test_cpu_runs_take_slots_of_hosts_without_gpus(project):
    host("gpu-host", gpus=4)
    host("cpu-host", slots=2)
    cpu = Run.objects.create(
        project=project, name="cpu", preset="tiny-cpu", config=preset("tiny-cpu").to_dict()
    )
    too_big = gpu_run(project, "too-big", 16)

    scheduler.schedule()

    assert placed_on(cpu) == "cpu-host"
    assert Placement.objects.get(pk=too_big.pk).reason == "needs 16 × GPU: no alive host has that many"


def test_a_cancelled_waiting_run_leaves_the_queue(project):
    host("h", gpus=1)
    holder, waiter = gpu_run(project, "a", 1), gpu_run(project, "b", 1)
    scheduler.schedule()
    Run.objects.filter(pk=waiter.pk).update(status=RunStatus.CANCELLED)
    scheduler.schedule()
    assert Placement.objects.get(pk=waiter.pk).released_at is not None
    assert Host.objects.get(name="h").reserved == 1  # still the holder's
    assert placed_on(holder) == "h"


def test_config_resources_name_their_field_when_hostile():
    with pytest.raises(ConfigError) as bad:
        RunConfig.from_dict({"resources": {"host": "$(reboot)", "gpu_model": "x" * 101, "priority": -1}})
    assert set(bad.value.errors) == {"resources.host", "resources.gpu_model", "resources.priority"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_passes_never_overfill_a_host_nor_leak_a_reservation(project):
    """Four schedulers at once on their own connections (PostgreSQL: SQLite serialises writers)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (CI's second pass)")
    for i in range(8):
        host(f"h{i}", gpus=4)
    runs = [gpu_run(project, f"r{i}", 1 + i % 3) for i in range(80)]
    errors: list[str] = []

    def one_pass() -> None:
        from django.db import connection as own

        try:
            scheduler.schedule()
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            own.close()

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for h in Host.objects.prefetch_related("gpus"):
        held = sum(Placement.objects.filter(host=h, released_at__isnull=True).values_list("count", flat=True))
        assert h.reserved == held <= len(h.gpus.all()), h.name
    placed = Placement.objects.filter(pk__in=[r.pk for r in runs], host__isnull=False).count()
    assert placed >= 3  # 32 GPUs, runs of 1-3 GPUs: some fit, however the passes interleave
    assert TeamQuota.objects.get(pk=project.team_id).in_use == sum(
        Placement.objects.filter(host__isnull=False, released_at__isnull=True).values_list("count", flat=True)
    )
