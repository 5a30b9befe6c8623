"""Multi-node runs in the scheduler and the share rows, on the real database (no worker runs here).

A run of ``launcher.nodes`` N is reserved on N distinct hosts in one transaction or not at
all; its release and its return to the queue give back every host's share; the first
node's view of its shares (failed, lost, silent on the database's clock) decides the run.
"""

from __future__ import annotations

import datetime as dt
import sys

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from modelcore.config import ConfigError, RunConfig, preset
from modelcore.launch import node_command
from webapp.accounts.models import Role
from webapp.accounts.services import add_member
from webapp.fleet import services, shares
from webapp.fleet.models import Host, NodeShare, Placement, ShareState, TeamQuota
from webapp.fleet.selectors import fleet_for
from webapp.fleet.services import GpuInfo
from webapp.projects.models import Project
from webapp.runs.limits import compute_errors
from webapp.runs.models import Run, RunStatus
from workers import first_node, scheduler
from workers.node_share import ShareSupervisor


def host(name: str, gpus: int = 1, address: str = "") -> Host:
    return services.register_host(
        name=name,
        queue=f"host.{name}",
        address=address,
        gpus=[GpuInfo(index=str(i), model="NVIDIA H100", memory_mb=81920) for i in range(gpus)],
    )


def multi_node_run(project: Project, name: str, nodes: int, per_node: int = 1, **resources) -> Run:
    config = preset("tiny-cpu").to_dict()
    config["parallel"].update(num_processes=nodes * per_node, device="auto")
    config["launcher"].update(nodes=nodes)
    config["resources"].update(resources)
    return Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)


def hosts_of(run: Run) -> list[str]:
    """Node rank order: the placement's host, then each share's."""
    placement = Placement.objects.filter(pk=run.pk, host__isnull=False).select_related("host").first()
    if placement is None:
        return []
    return [placement.host.name] + [s.host.name for s in placement.shares.select_related("host")]


def reserved() -> dict[str, int]:
    return dict(Host.objects.values_list("name", "reserved"))


def test_a_multi_node_run_is_reserved_on_distinct_hosts_at_once_and_given_back(project):
    host("a", gpus=2)
    host("b", gpus=2)
    host("c", gpus=4)
    two = multi_node_run(project, "two-by-two", nodes=2, per_node=2)
    three = multi_node_run(project, "three-by-two", nodes=3, per_node=2)

    scheduler.schedule()

    assert hosts_of(two) == ["a", "b"]  # best fit: the two-GPU hosts, the four-GPU one kept whole
    assert hosts_of(three) == []  # c alone has room now: nothing of it is reserved
    assert reserved() == {"a": 2, "b": 2, "c": 0}
    assert TeamQuota.objects.get(pk=project.team_id).in_use == 4  # the run's total, not one node's
    waiting = Placement.objects.get(pk=three.pk)
    assert waiting.nodes == 3 and waiting.reason == "needs 2 × GPU on each of 3 hosts, 1 host(s) have room"
    assert list(NodeShare.objects.filter(placement_id=two.pk).values_list("node_rank", "state")) == [
        (1, ShareState.PLACED)
    ]

    Run.objects.filter(pk=two.pk).update(status=RunStatus.COMPLETED)
    scheduler.schedule()

    assert reserved() == {"a": 2, "b": 2, "c": 2}  # two's GPUs back on both hosts, three placed on all
    assert sorted(hosts_of(three)) == ["a", "b", "c"]
    assert TeamQuota.objects.get(pk=project.team_id).in_use == 6


def test_a_run_naming_a_host_starts_there_and_too_few_hosts_say_so(project):
    host("a")
    host("b")
    pinned = multi_node_run(project, "pinned", nodes=2, host="b")
    too_big = multi_node_run(project, "too-big", nodes=3)

    scheduler.schedule()

    assert hosts_of(pinned) == ["b", "a"]  # resources.host names node 0; the others go anywhere
    assert (
        Placement.objects.get(pk=too_big.pk).reason
        == "needs 1 × GPU on each of 3 hosts: 2 alive host(s) could hold a share"
    )


def test_a_placement_whose_share_host_went_silent_is_taken_back_whole(project, settings):
    settings.FLEET_HOST_LOST_SECONDS = 30
    host("a")
    gone = host("b")
    run = multi_node_run(project, "stranded", nodes=2)
    scheduler.schedule()
    assert hosts_of(run) == ["a", "b"]

    Host.objects.filter(pk=gone.pk).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=5))
    host("c")
    result = scheduler.schedule()

    assert result.requeued == [run.pk]
    assert hosts_of(run) == ["a", "c"]
    assert reserved() == {"a": 1, "b": 0, "c": 1}
    assert NodeShare.objects.filter(placement_id=run.pk).count() == 1


def test_the_first_node_sees_failed_lost_and_silent_shares(project, settings):
    settings.FLEET_HOST_LOST_SECONDS = 30
    settings.HEARTBEAT_SECONDS = 1
    for name in "abcd":
        host(name, address="10.0.0.1" if name == "a" else "")
    run = multi_node_run(project, "four", nodes=4)
    scheduler.schedule()
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempt=1)

    sent = shares.open_rendezvous(run.pk, 1, "10.0.0.1", 29511)
    assert sent == [(1, "host.b"), (2, "host.c"), (3, "host.d")]
    assert shares.rendezvous(run.pk) == shares.Rendezvous(4, "10.0.0.1", 29511)
    assert shares.start_share(run.pk, 1, 1, "b")
    assert not shares.start_share(run.pk, 1, 1, "b")  # a redelivered launch does nothing
    assert not shares.start_share(run.pk, 1, 2, "b")  # not b's share
    assert not shares.start_share(run.pk, 2, 2, "c")  # not this attempt's
    assert shares.start_share(run.pk, 1, 2, "c") and shares.start_share(run.pk, 1, 3, "d")
    node = first_node.FirstNode(run.pk, 1)
    assert node.stop_reason() == "" and node.report.live == 3

    # Node 2 stops beating: silent once its last beat is older than the lost time.
    NodeShare.objects.filter(node_rank=2).update(heartbeat_at=timezone.now() - dt.timedelta(minutes=1))
    assert node.stop_reason() == "node-lost"
    assert node.decide(RunStatus.FAILED)[0] == RunStatus.LOST
    assert "node 2 (c)" in node.decide(RunStatus.FAILED)[1]
    assert node.decide(RunStatus.COMPLETED) is None  # a completed trainer is completed
    assert shares.beat_share(run.pk, 1, 2) is False  # it comes back: alive, not asked to stop
    assert node.stop_reason() == ""

    assert shares.end_share(run.pk, 1, 3, ShareState.FAILED, "Its ranks exited with code 1. boom")
    assert not shares.end_share(run.pk, 1, 3, ShareState.COMPLETED)  # ended once
    assert node.stop_reason() == "node-failed"
    status, error = node.decide(RunStatus.CANCELLED)
    assert status == RunStatus.FAILED and "Node 3's ranks failed" in error and "boom" in error

    assert shares.stop_shares(run.pk, 1) == 2  # the two still running
    assert shares.beat_share(run.pk, 1, 1) is True and shares.stop_requested(run.pk, 1, 2) is True
    assert shares.stop_requested(run.pk, 2, 2) is None  # an earlier attempt's share is gone
    shares.end_share(run.pk, 1, 1, ShareState.COMPLETED)
    shares.end_share(run.pk, 1, 2, ShareState.LOST, "the worker of node 2 shut down while the run trained.")
    report = node.stop_and_wait(grace=0)
    assert report.all_ended and report.lost == [(2, "the worker of node 2 shut down while the run trained.")]


def test_a_run_lost_to_a_silent_share_is_placed_again_away_from_that_host(project, settings):
    # The share goes silent on its own clock (3 heartbeats) while its host still looks alive to
    # the scheduler (30 s): the resume must not reuse the placement with that host's share.
    settings.FLEET_HOST_LOST_SECONDS = 30
    settings.HEARTBEAT_SECONDS = 1
    host("a")
    host("b")
    run = multi_node_run(project, "resumed", nodes=2)
    scheduler.schedule()
    assert hosts_of(run) == ["a", "b"]
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempt=1)
    shares.open_rendezvous(run.pk, 1, "127.0.0.1", 29500)
    assert shares.start_share(run.pk, 1, 1, "b")
    host("c")  # the spare
    NodeShare.objects.update(heartbeat_at=timezone.now() - dt.timedelta(minutes=1))
    assert [h.name for h in scheduler.alive_hosts()] == ["a", "b", "c"]
    node = first_node.FirstNode(run.pk, 1)
    assert node.stop_reason() == "node-lost"
    assert node.stop_and_wait(grace=0).gone_hosts == (Host.objects.get(name="b").pk,)
    assert node.decide(RunStatus.FAILED)[0] == RunStatus.LOST

    Run.objects.filter(pk=run.pk).update(status=RunStatus.LOST)
    assert node.release_lost_nodes()
    assert not node.release_lost_nodes()  # taken off once
    services.release_ended()  # a pass that saw it lost before the recovery: the marks outlive it
    assert reserved() == {"a": 0, "b": 0, "c": 0}
    assert [h.name for h in scheduler.alive_hosts()] == ["a", "c"]  # gone until it beats again
    services.beat_host("b")  # a beat in flight (or a worker that lives): b looks alive again
    assert [h.name for h in scheduler.alive_hosts()] == ["a", "b", "c"]
    Run.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)  # the automatic recovery
    assert scheduler.placed_queue(run.pk) is None  # its launch is not sent to the old placement
    result = scheduler.schedule()

    assert result.placed == [(run.pk, "a")]
    assert hosts_of(run) == ["a", "c"]
    assert reserved() == {"a": 1, "b": 0, "c": 1}


def test_a_share_never_started_is_silent_after_the_start_time(project):
    host("a")
    host("b")
    run = multi_node_run(project, "unstarted", nodes=2)
    scheduler.schedule()
    shares.open_rendezvous(run.pk, 1, "127.0.0.1", 29500)
    assert first_node.FirstNode(run.pk, 1).stop_reason() == ""
    NodeShare.objects.update(
        sent_at=timezone.now() - dt.timedelta(seconds=first_node.SHARE_START_SECONDS + 1)
    )
    assert first_node.FirstNode(run.pk, 1).stop_reason() == "node-lost"


def test_node_command_is_one_torchrun_per_node_with_a_static_rendezvous(tmp_path):
    config = RunConfig.from_dict({"parallel": {"num_processes": 4}, "launcher": {"nodes": 2}})
    argv, env = node_command(config, tmp_path, node_rank=1, master_addr="10.0.0.1", master_port=29511)
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    for flag in (
        "--nnodes=2",
        "--nproc-per-node=2",
        "--node-rank=1",
        "--rdzv-backend=static",
        "--master-addr=10.0.0.1",
        "--master-port=29511",
    ):
        assert flag in argv
    assert argv[-4:] == ["-m", "modelcore.train", "--run-dir", str(tmp_path.resolve())]
    assert env["ACCELERATE_USE_CPU"] == "1"  # no GPU given: CPU ranks on gloo
    with pytest.raises(ValueError, match="2 processes per node asked for but only 1 GPU"):
        node_command(config, tmp_path, node_rank=0, master_addr="h", master_port=1, gpus_available=1)
    with pytest.raises(ValueError, match="node rank 2 is outside the run's 2 nodes"):
        node_command(config, tmp_path, node_rank=2, master_addr="h", master_port=1)
    with pytest.raises(ConfigError) as error:
        RunConfig.from_dict({"parallel": {"num_processes": 3}, "launcher": {"nodes": 2}})
    assert "launcher.nodes" in error.value.errors


def test_place_writes_nothing_when_any_of_the_run_s_hosts_is_full(project):
    a, b, c = host("a"), host("b"), host("c")
    Host.objects.filter(pk=c.pk).update(reserved=1)  # filled by another scheduler meanwhile
    run = multi_node_run(project, "three", nodes=3)
    services.enter_queue()

    outcome = services.place(run.pk, a.pk, 1, project.team_id, 1, [(b.pk, 1), (c.pk, 1)])

    assert outcome == services.Outcome.HOST_FULL
    assert reserved() == {"a": 0, "b": 0, "c": 1}
    assert Placement.objects.get(pk=run.pk).host is None
    assert not NodeShare.objects.exists() and TeamQuota.objects.get(pk=project.team_id).in_use == 0


def test_the_cpu_rank_cap_applies_to_each_host_s_share_on_the_fleet(settings):
    settings.MAX_CPU_PROCESSES = 2
    two_by_two = RunConfig.from_dict(
        {"parallel": {"num_processes": 4, "device": "cpu"}, "launcher": {"nodes": 2}}
    )
    settings.FLEET_ENABLED = False  # a lone worker runs every rank itself
    assert "parallel.num_processes" in compute_errors(two_by_two)
    settings.FLEET_ENABLED = True
    assert compute_errors(two_by_two) == {}
    two_by_three = RunConfig.from_dict(
        {"parallel": {"num_processes": 6, "device": "cpu"}, "launcher": {"nodes": 2}}
    )
    message = compute_errors(two_by_three)["parallel.num_processes"]
    assert "at most 4" in message and "over 2 hosts" in message


def test_the_fleet_page_lists_a_multi_node_run_on_each_of_its_hosts(project):
    host("a")
    host("b")
    host("c")
    run = multi_node_run(project, "spread", nodes=2)
    scheduler.schedule()
    member = get_user_model().objects.create_user("mia", password="x" * 12)
    add_member(project.team, member, Role.MEMBER)

    placed = {
        view.host.name: [(p.run.pk if p.run else None, p.count, p.node) for p in view.runs]
        for view in fleet_for(member)
    }

    assert placed == {"a": [(run.pk, 1, "node 0 of 2")], "b": [(run.pk, 1, "node 1 of 2")], "c": []}


def test_a_share_s_end_failed_only_when_its_own_ranks_failed(project, tmp_path, settings):
    settings.RUNS_DIR = tmp_path
    run = multi_node_run(project, "ends", nodes=2)
    config = RunConfig.from_dict(run.config)

    def ended(code: int, reason: str = "", killed: bool = False) -> str:
        share = ShareSupervisor(run, config, 1)
        share.stop.reason, share.stop.killed = reason, killed
        return share.decide(code)[0]

    assert ended(0) == ended(0, "cancel") == ShareState.COMPLETED
    assert ended(1) == ShareState.FAILED
    assert ended(1, "stop") == ShareState.FAILED  # asked to stop, but its ranks had failed first
    assert ended(-9, "cancel", killed=True) == ShareState.COMPLETED  # slow to exit after its checkpoint
    assert ended(-9, "shutdown", killed=True) == ended(0, "interrupted") == ShareState.LOST
