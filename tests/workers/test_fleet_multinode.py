"""Multi-node runs on the fleet's own workers, with several hosts simulated on this machine.

Each host is a real Celery worker (``fleet_harness.fleet_worker``) with its own queue and one
declared fake GPU; the ranks are CPU processes on gloo that meet at 127.0.0.1 (each worker
registers that address). A run of ``launcher.nodes`` 2 × 1 process is placed on two hosts
at once; the first starts node rank 0 and sends node rank 1 to the other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import fleet_harness
import psutil
import pytest
from django.conf import settings
from fleet_harness import final, fleet_workers, launch, wait_until

from modelcore.config import RunConfig
from modelcore.launch import launch_command
from webapp.fleet.models import Host, NodeShare, Placement, ShareState
from webapp.runs.models import Run, RunAttempt, RunStatus
from webapp.runs.services import request_cancel
from workers import job_processes
from workers.jobs import engine_env

pytestmark = [pytest.mark.slow, pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

# The harness's fixtures, used here by name.
corpus_cache = fleet_harness.corpus_cache
scheduler_queue = fleet_harness.scheduler_queue
runs_dir = fleet_harness.runs_dir
member = fleet_harness.member

STEPS = 8
# This machine's torch has no CUDA: the fake GPUs' ranks are told to run on CPU (gloo), one thread each.
CPU_RANKS = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
TWO_NODES = {"parallel": {"num_processes": 2}, "launcher": {"nodes": 2}, "train": {"log_every": 1}}


def losses(run_dir: Path) -> dict[int, float]:
    """step → train/loss from a run directory's events (rank 0's)."""
    found = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "metric" and "train/loss" in event.get("values", {}):
            found[event["step"]] = event["values"]["train/loss"]
    return found


def one_node_losses(config: dict, run_dir: Path, cache: Path) -> dict[int, float]:
    """The same config trained by one host's two CPU processes (no fleet, the plain local launcher)."""
    parsed = RunConfig.from_dict({**config, "launcher": {**config["launcher"], "nodes": 1}})
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(parsed.to_json())
    argv, env = launch_command(parsed, run_dir, gpus_available=0)
    env = engine_env({**env, **CPU_RANKS, "RUNWRIGHT_CACHE_DIR": str(cache)})
    done = subprocess.run(argv, cwd=run_dir, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return losses(run_dir)


def tagged_alive(run: Run) -> list[psutil.Process]:
    """Processes of any of the run's trainers (any host, any attempt) still alive on this machine.

    Only this test's (its workers share our data directory): other test sessions have runs of the same id.
    """
    prefix = f"run-{run.pk}-"
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        ours = env.get("RUNWRIGHT_DATA_DIR") == str(settings.DATA_DIR)
        if ours and env.get(job_processes.TAG_ENV, "").startswith(prefix):
            found.append(proc)
    return found


def test_two_nodes_of_one_process_train_as_one_node_of_two(scheduler_queue, member, tmp_path, corpus_cache):
    names = ["node-a", "node-b"]
    with fleet_workers(
        tmp_path, names, "0", "NVIDIA H100", scheduler_queue, corpus_cache, **CPU_RANKS
    ) as hosts:
        a, b = (w.name for w in hosts)
        run = launch(member, "two-nodes", steps=STEPS, overrides=TWO_NODES)
        run = final(run)
        assert run.status == RunStatus.COMPLETED, run.error
        placement = Placement.objects.get(pk=run.pk)
        share = NodeShare.objects.get(placement=placement)
        # Node 0 on one host, node 1 on the other, both reserved and given back.
        assert {placement.host.name, share.host.name} == {a, b}
        assert (share.node_rank, share.attempt, share.state) == (1, 1, ShareState.COMPLETED), share.error
        assert RunAttempt.objects.get(run=run, number=1).worker == placement.host.name
        wait_until(
            "the hosts' GPUs to go back", lambda: not Host.objects.filter(name__in=[a, b], reserved__gt=0)
        )
        assert (run.run_dir / "launcher-node1.log").exists()
    two_nodes = losses(run.run_dir)
    one_node = one_node_losses(run.config, tmp_path / "one-node", corpus_cache)
    print("2 nodes x 1:", two_nodes, "\n1 node x 2:", one_node)
    assert sorted(two_nodes) == sorted(one_node) == list(range(1, STEPS + 1))
    for step, loss in one_node.items():
        assert abs(two_nodes[step] - loss) <= 1e-4, (step, two_nodes[step], loss)


def test_a_killed_node_makes_the_run_lost_it_resumes_on_other_hosts_and_a_cancel_stops_both(
    scheduler_queue, member, tmp_path, corpus_cache
):
    names = ["node-a", "node-b", "spare"]
    with fleet_workers(
        tmp_path, names, "0", "NVIDIA H100", scheduler_queue, corpus_cache, **CPU_RANKS
    ) as hosts:
        by_name = {w.name: w for w in hosts}
        overrides = {**TWO_NODES, "train": {"checkpoint_every": 3, "cancel_grace_s": 20}}
        run = launch(member, "node-lost", steps=400, max_restarts=1, overrides=overrides)

        def checkpointed():
            run.refresh_from_db()
            return run.status == RunStatus.RUNNING and run.checkpoints.filter(step__gte=3).exists()

        wait_until("a checkpoint of the two-node run", checkpointed)
        share = NodeShare.objects.select_related("host", "placement__host").get(placement_id=run.pk)
        first, second = share.placement.host.name, share.host.name
        assert share.state == ShareState.RUNNING
        first_attempt = tagged_alive(run)  # both nodes' launchers and ranks
        assert len(first_attempt) >= 4, first_attempt
        os.killpg(by_name[second].proc.pid, signal.SIGKILL)  # node 1's host is gone: no goodbye
        by_name[second].proc.wait(timeout=20)

        def first_ended():
            return RunAttempt.objects.filter(run=run, number=1).exclude(status="").first()

        attempt = wait_until("the first attempt to end", first_ended, timeout=60)
        assert attempt.status == RunStatus.LOST and "node 1" in attempt.reason, attempt.reason
        # Node 0's supervisor stopped its ranks, node 1's died with their worker: none is left.
        _, alive = psutil.wait_procs(first_attempt, timeout=10)
        assert not alive, alive

        # train.max_restarts resumes it (the supervisor that wrote lost queued it again); node 1's
        # host is silent, so the second attempt spans the two others, from the checkpoint.
        def resumed_and_training():
            run.refresh_from_db()
            return run.attempt == 2 and run.status == RunStatus.RUNNING

        wait_until("the second attempt to train", resumed_and_training)
        placement = Placement.objects.get(pk=run.pk)
        share = NodeShare.objects.select_related("host").get(placement=placement)
        assert {placement.host.name, share.host.name} == set(by_name) - {second}
        assert first in {placement.host.name, share.host.name}
        assert RunAttempt.objects.get(run=run, number=2).from_step >= 3
        second_attempt = tagged_alive(run)
        assert len(second_attempt) >= 4, second_attempt

        # A cancel stops both nodes' shares: they checkpoint together and exit. It is sent once the
        # resumed attempt trains (both nodes past their start-up); a cancel that lands while the
        # ranks still start is the next test's.
        resumed_from = RunAttempt.objects.get(run=run, number=2).from_step

        def trained_a_step():
            run.refresh_from_db()
            return run.step > resumed_from

        wait_until("the resumed attempt to train a step", trained_a_step)
        request_cancel(user=member[0], run=run)
        run = final(run, attempt=2)
        assert run.status == RunStatus.CANCELLED, run.error
        share.refresh_from_db()
        assert (share.attempt, share.state) == (2, ShareState.COMPLETED), share.error
        _, alive = psutil.wait_procs(second_attempt, timeout=10)
        assert not alive, alive
        assert not tagged_alive(run)


def test_a_cancel_while_the_nodes_start_ends_both_shares_cleanly(
    scheduler_queue, member, tmp_path, corpus_cache
):
    with fleet_workers(
        tmp_path, ["node-a", "node-b"], "0", "NVIDIA H100", scheduler_queue, corpus_cache, **CPU_RANKS
    ):
        overrides = {**TWO_NODES, "train": {"cancel_grace_s": 20}}
        run = launch(member, "cancel-at-start", steps=400, overrides=overrides)

        def share_started():
            return NodeShare.objects.filter(placement_id=run.pk, state=ShareState.RUNNING).exists()

        # Both torchruns are starting (node 1's was just claimed): the SIGTERMs reach launchers
        # without ranks, or ranks whose handler is not set yet. Held until it is, not fatal.
        wait_until("node 1's share to start", share_started, timeout=120)
        request_cancel(user=member[0], run=run)
        run = final(run)
        assert run.status == RunStatus.CANCELLED, run.error
        share = NodeShare.objects.get(placement_id=run.pk)
        assert share.state == ShareState.COMPLETED, share.error
        logs = [run.run_dir / "launcher.log", run.run_dir / "launcher-node1.log"]
        for log in logs:
            text = log.read_text()
            assert "ChildFailedError" not in text and "Signal 15" not in text, (log.name, text[-3000:])
        assert not tagged_alive(run)


def test_a_node_whose_ranks_fail_fails_the_run_and_stops_the_other(
    scheduler_queue, member, tmp_path, corpus_cache
):
    # Equal hosts are chosen by name: "node-z" is node 1, and only its ranks fail (at step 3).
    with (
        fleet_workers(
            tmp_path, ["node-a"], "0", "NVIDIA H100", scheduler_queue, corpus_cache, **CPU_RANKS
        ) as (a,),
        fleet_workers(
            tmp_path,
            ["node-z"],
            "0",
            "NVIDIA H100",
            scheduler_queue,
            corpus_cache,
            RUNWRIGHT_FAIL_AT_STEP="3",
            **CPU_RANKS,
        ) as (z,),
    ):
        run = launch(member, "node-fails", steps=40, overrides={**TWO_NODES, "train": {"cancel_grace_s": 20}})
        run = final(run)
        share = NodeShare.objects.select_related("host", "placement__host").get(placement_id=run.pk)
        assert (share.placement.host.name, share.host.name) == (a.name, z.name)
        assert run.status == RunStatus.FAILED
        assert "Node 1's ranks failed" in run.error and "injected failure at step 3" in run.error, run.error
        assert share.state == ShareState.FAILED
        assert not tagged_alive(run)
