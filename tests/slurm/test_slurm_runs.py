"""Runs through the real test cluster: sbatch, srun + torchrun with c10d, the supervisor's ingestion.

Each run is the tiny CPU preset on 2 gloo ranks (one node, 2 processes), a few steps.
"""

from __future__ import annotations

import subprocess

import pytest
from slurm_runs import DEADLINE_SECONDS, claimed_run, job_output, supervise_in_thread, tiny_config, wait_for

from webapp.metrics.models import MetricPoint
from webapp.runs.models import Checkpoint, Run, RunStatus
from workers import slurm
from workers.supervisor import supervise


def test_a_two_process_run_trains_through_sbatch_and_streams_into_the_database(db, slurm_launcher):
    run = claimed_run(tiny_config())
    status = supervise(run, poll_seconds=0.2)
    run.refresh_from_db()
    assert status == RunStatus.COMPLETED, run.error + job_output(run)
    assert run.slurm_job_id.isdigit() and run.slurm_state == "COMPLETED"
    assert run.step == 8
    losses = MetricPoint.objects.filter(run=run, key="train/loss").order_by("step")
    assert list(losses.values_list("step", flat=True)) == list(range(1, 9))
    script = (run.run_dir / slurm.JOB_SCRIPT).read_text()
    assert "srun" in script and "torch.distributed.run" in script and "--rdzv-backend=c10d" in script
    assert "--nproc-per-node=2" in script


@pytest.mark.django_db(transaction=True)
def test_cancel_sends_sigterm_through_scancel_and_the_trainer_checkpoints(slurm_launcher):
    run = claimed_run(tiny_config(max_steps=100_000))
    thread, result = supervise_in_thread(run)
    try:
        wait_for(
            lambda: Run.objects.get(pk=run.id).step >= 2, "the run to stream its first steps", slurm_launcher
        )
        Run.objects.filter(pk=run.id).update(cancel_requested=True)
    finally:
        thread.join(DEADLINE_SECONDS)
    run.refresh_from_db()
    assert result == [RunStatus.CANCELLED], run.error + job_output(run)
    assert run.error == ""
    # The checkpoint came from the trainer's SIGTERM handler (checkpoint_every is 0).
    assert Checkpoint.objects.filter(run=run, step__gte=2).exists()
    # torchrun exits non-zero after passing the SIGTERM on, so Slurm may call the job FAILED;
    # the run's status is the trainer's word (its cancelled event), as for a local run.
    assert run.slurm_state in slurm.FINAL_STATES


@pytest.mark.django_db(transaction=True)
def test_a_node_failure_marks_the_run_lost(slurm_launcher):
    run = claimed_run(tiny_config(max_steps=100_000))
    thread, result = supervise_in_thread(run)
    try:
        wait_for(lambda: Run.objects.get(pk=run.id).step >= 1, "the run to start training", slurm_launcher)
        slurm_launcher.set_node("down", reason="runwright-test")
    finally:
        thread.join(DEADLINE_SECONDS)
        slurm_launcher.resume_node()
    run.refresh_from_db()
    assert result == [RunStatus.LOST], run.error + job_output(run)
    assert run.slurm_state == "NODE_FAIL"
    assert "NODE_FAIL" in run.error and run.slurm_job_id in run.error


@pytest.mark.django_db(transaction=True)
def test_a_pending_job_shows_slurm_s_reason_and_a_cancel_needs_no_checkpoint(slurm_launcher):
    slurm_launcher.set_node("drain", reason="runwright-test")
    run = claimed_run(tiny_config())
    thread, result = supervise_in_thread(run)
    try:
        pending = wait_for(
            lambda: Run.objects.filter(pk=run.id, slurm_state="PENDING").exclude(slurm_reason="").first(),
            "the pending reason",
            slurm_launcher,
            timeout=30,
        )
    finally:
        Run.objects.filter(pk=run.id).update(cancel_requested=True)
        thread.join(60)
        slurm_launcher.resume_node()
    # Slurm's words for a drained node vary with its version and timing.
    assert any(why in pending.slurm_reason for why in ("DRAINED", "ReqNodeNotAvail", "Resources")), (
        pending.slurm_reason
    )
    assert result == [RunStatus.CANCELLED]
    run.refresh_from_db()
    assert run.slurm_state == "CANCELLED" and run.slurm_reason == ""


@pytest.mark.django_db(transaction=True)
def test_the_time_limit_is_met_with_a_checkpoint_and_a_resubmission(slurm_launcher, sent_tasks):
    config = tiny_config(max_steps=100_000, max_restarts=1)
    config["launcher"] = {"time_limit_min": 10}
    run = claimed_run(config)
    thread, result = supervise_in_thread(run)
    try:
        job_id = wait_for(
            lambda: Run.objects.filter(pk=run.id, step__gte=2).values_list("slurm_job_id", flat=True).first(),
            "the run to train",
            slurm_launcher,
        )
        # The limit cut to a minute: less than the job's --signal=TERM@60 is left, so Slurm sends
        # the trainer its SIGTERM at its next periodic check, as it would a minute before any limit.
        updated = slurm_launcher.scontrol("update", f"jobid={job_id}", "TimeLimit=1")
        assert updated.returncode == 0, updated.stderr
    finally:
        thread.join(DEADLINE_SECONDS)
    run.refresh_from_db()
    assert Checkpoint.objects.filter(run=run, step__gte=2).exists(), run.error + job_output(run)
    # Lost, then queued again by the lost-run recovery: a new job resumes from the checkpoint.
    assert result == [RunStatus.LOST], run.error
    assert "time limit" in run.error
    assert run.status == RunStatus.QUEUED and run.start_kind == "recovery"
    assert ("workers.tasks.launch_run", (run.id,)) in [(name, args) for name, args, _ in sent_tasks]


@pytest.mark.django_db
def test_a_new_attempt_cancels_the_earlier_attempt_s_job_first(slurm_launcher, tmp_path):
    stale = subprocess.run(
        ["sbatch", "--parsable", "-o", str(tmp_path / "stale.out"), "--wrap", "sleep 300"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    run = claimed_run(tiny_config(max_steps=2))
    Run.objects.filter(pk=run.id).update(slurm_job_id=stale)  # the attempt whose supervisor died
    run.refresh_from_db()
    assert supervise(run, poll_seconds=0.2) == RunStatus.COMPLETED, run.error
    assert slurm.query_state(stale)[0] == "CANCELLED"
    run.refresh_from_db()
    assert run.slurm_job_id != stale and run.slurm_state == "COMPLETED"
