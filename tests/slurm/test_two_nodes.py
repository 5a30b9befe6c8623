"""Jobs that span nodes and ask for GPUs, on the real two-node test cluster (``slurm_two_nodes``).

The two nodes are two ``slurmd`` on this machine (``-N n1``, ``-N n2``, both at 127.0.0.1), each
with two fake GPUs declared as ``gres/gpu``. A run of ``launcher.nodes`` 2 × 1 CPU process goes
through the worker's whole path (sbatch → srun → one torchrun per node, the c10d rendezvous at
the first node's address) and must train as one node of two processes does. GPU jobs are
checked up to where torchrun would start: this machine has no GPU to train on, so the job
script's interpreter is a probe that records what Slurm gave each node.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import GPUS_PER_NODE, TWO_NODES
from slurm_runs import (
    DEADLINE_SECONDS,
    claimed_run,
    job_output,
    streamed_losses,
    supervise_in_thread,
    tiny_config,
    wait_for,
)

from modelcore.config import RunConfig
from webapp.runs.models import Run, RunStatus
from workers import slurm
from workers.jobs import Launch
from workers.supervisor import supervise

STEPS = 8


def job_field(job_id: str, name: str) -> str:
    """One ``Name=value`` of ``scontrol show job`` (the controller keeps ended jobs for MinJobAge)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    return next((item.split("=", 1)[1] for item in shown.split() if item.startswith(f"{name}=")), "")


def ran_a_step_on(cluster, node: str, job_id: str) -> bool:
    """Whether that node's slurmd launched a task of the job's first step (its own log says so)."""
    log = (cluster.root / "log" / f"slurmd-{node}.log").read_text(errors="replace")
    return f"launch task StepId={job_id}.0 " in log


@pytest.mark.django_db(transaction=True)
def test_two_nodes_of_one_process_train_as_one_node_of_two(slurm_two_nodes_launcher):
    cluster = slurm_two_nodes_launcher
    two_nodes = claimed_run(tiny_config(max_steps=STEPS) | {"launcher": {"nodes": 2}}, "two nodes")
    one_node = claimed_run(tiny_config(max_steps=STEPS), "one node")
    assert two_nodes.config["parallel"]["num_processes"] == one_node.config["parallel"]["num_processes"] == 2
    # Both at once (the cluster has room): two jobs, each its own rendezvous, one on each node
    # or both on one, as Slurm places them.
    supervisors = [supervise_in_thread(run) for run in (two_nodes, one_node)]
    try:
        # Streamed while Slurm still runs the job, not read at its end.
        wait_for(
            lambda: Run.objects.filter(pk=two_nodes.pk, slurm_state="RUNNING", step__gte=1).exists(),
            "the two-node run's first steps while its job runs",
            cluster,
        )
    finally:
        for thread, _ in supervisors:
            thread.join(DEADLINE_SECONDS)
    two_nodes.refresh_from_db()
    one_node.refresh_from_db()
    assert [result for _, result in supervisors] == [[RunStatus.COMPLETED]] * 2, (
        two_nodes.error + job_output(two_nodes) + one_node.error + job_output(one_node)
    )
    job = two_nodes.slurm_job_id
    assert two_nodes.step == one_node.step == STEPS
    # Slurm gave the job both nodes and each slurmd started its torchrun.
    assert job_field(job, "NumNodes") == "2" and job_field(job, "NodeList") == "n[1-2]"
    assert all(ran_a_step_on(cluster, node, job) for node in TWO_NODES), cluster.logs()
    assert (
        "--nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d"
        in (two_nodes.run_dir / slurm.JOB_SCRIPT).read_text()
    )
    assert job_field(one_node.slurm_job_id, "NumNodes") == "1"

    split, whole = streamed_losses(two_nodes), streamed_losses(one_node)
    print("2 nodes x 1:", split, "\n1 node x 2:", whole)
    assert sorted(split) == sorted(whole) == list(range(1, STEPS + 1))
    for step, loss in whole.items():
        assert abs(split[step] - loss) <= 1e-4, (step, split[step], loss)


PROBE = """#!/bin/bash
# Started by the job script in the interpreter's place. Its one-liner (the free port) goes to
# Python; torchrun's start, on each node, is recorded instead.
if [ "$1" = -c ]; then exec "$RUNWRIGHT_PROBE_PYTHON" "$@"; fi
{
  echo "node=$SLURMD_NODENAME"
  echo "argv=$*"
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
  echo "SLURM_GPUS_ON_NODE=${SLURM_GPUS_ON_NODE-unset}"
  echo "SLURM_STEP_GPUS=${SLURM_STEP_GPUS-unset}"
} > "$RUNWRIGHT_PROBE_DIR/$SLURMD_NODENAME.env"
"""


def probe_job(tmp_path: Path, config: RunConfig) -> tuple[slurm.SlurmJob, Path]:
    """The worker's Slurm job for ``config`` (its sbatch arguments and job script), the probe as interpreter."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    probe = tmp_path / "probe-python"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    argv, env = slurm.node_command(config, run_dir)
    job = slurm.SlurmJob("gpu-probe", slurm.job_spec(config, name="runwright-gpu-probe", stop_grace_s=30))
    launch = Launch(
        [str(probe), *argv[1:]],
        {**env, "RUNWRIGHT_PROBE_DIR": str(run_dir), "RUNWRIGHT_PROBE_PYTHON": sys.executable},
        cwd=run_dir,
        log_path=run_dir / "launcher.log",
    )
    job.start(launch, "gpu probe")
    return job, run_dir


def ended(job: slurm.SlurmJob, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not job.exited() and time.monotonic() < deadline:
        time.sleep(0.2)
    return job.state


def test_a_gpu_job_is_scheduled_with_its_gpus_and_each_node_sees_them(slurm_two_nodes, monkeypatch, tmp_path):
    config = RunConfig.from_dict(
        {"parallel": {"num_processes": 4, "device": "cuda"}, "launcher": {"nodes": 2}}
    )
    # A worker with no GPU of its own hides its devices (sbatch exports its environment):
    # Slurm's choice must win on the nodes.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    job, run_dir = probe_job(tmp_path, config)
    state = ended(job)
    out, err = slurm.job_output_paths(run_dir, job.job_id)
    assert state == "COMPLETED", state + out.read_text() + err.read_text() + slurm_two_nodes.logs()
    assert job.spec.gpus_per_node == GPUS_PER_NODE
    # The controller took the request as two GPUs on each of two nodes.
    assert job_field(job.job_id, "TresPerNode") == f"gres:gpu:{GPUS_PER_NODE}"
    assert job_field(job.job_id, "NodeList") == "n[1-2]"
    endpoints = set()
    for node in TWO_NODES:
        seen = dict(
            line.split("=", 1) for line in (run_dir / f"{node}.env").read_text().splitlines() if "=" in line
        )
        assert seen["CUDA_VISIBLE_DEVICES"] == "0,1" and seen["SLURM_GPUS_ON_NODE"] == "2", seen
        argv = seen["argv"].split()
        assert {"--nnodes=2", "--nproc-per-node=2", f"--rdzv-id={job.job_id}"} <= set(argv), argv
        assert argv[-4:] == ["-m", "modelcore.train", "--run-dir", str(run_dir.resolve())]
        endpoints |= {a for a in argv if a.startswith("--rdzv-endpoint=")}
    # One rendezvous for both nodes, at the first node's NodeAddr (its name, n1, is no host's).
    assert len(endpoints) == 1 and re.fullmatch(r"--rdzv-endpoint=127\.0\.0\.1:[1-9]\d*", endpoints.pop())


@pytest.mark.django_db
def test_more_gpus_than_a_node_has_fails_the_run_with_slurm_s_answer(slurm_two_nodes_launcher):
    config = tiny_config()
    config["parallel"] |= {"num_processes": 2 * GPUS_PER_NODE, "device": "cuda"}
    run = claimed_run(config, "too many gpus")
    assert supervise(run, poll_seconds=0.2) == RunStatus.FAILED
    run.refresh_from_db()
    assert "sbatch refused the job" in run.error, run.error
    assert "Requested node configuration is not available" in run.error, run.error
    assert run.slurm_job_id == ""


@pytest.mark.django_db(transaction=True)
def test_the_second_node_failing_ends_the_two_node_run_lost(slurm_two_nodes_launcher):
    cluster = slurm_two_nodes_launcher
    run = claimed_run(tiny_config(max_steps=100_000) | {"launcher": {"nodes": 2}}, "node lost")
    thread, result = supervise_in_thread(run)
    try:
        wait_for(lambda: Run.objects.get(pk=run.pk).step >= 1, "the two-node run to train", cluster)
        cluster.set_node("down", reason="runwright-test", node=TWO_NODES[1])
    finally:
        thread.join(DEADLINE_SECONDS)
        cluster.resume_node()
    run.refresh_from_db()
    assert result == [RunStatus.LOST], run.error + job_output(run)
    assert run.slurm_state == "NODE_FAIL" and run.slurm_job_id in run.error
    # Slurm ended the whole job: no step of it is left on the node that stayed up.
    assert job_field(run.slurm_job_id, "JobState") == "NODE_FAIL"
