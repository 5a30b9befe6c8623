"""No orphan, no double use of a GPU: a trainer dies with its supervisor, however it dies.

The whole chain is real in the last test: a Celery worker (a subprocess, on this test's
database and broker) trains a two-rank run on two simulated GPUs, and is killed with
SIGKILL. The trainer's launcher and its ranks (each in a session of its own, as torch
elastic starts them) must go within seconds, the run must end ``lost``, and the GPUs
must not be leasable while any process of the trainer still runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import service_processes
from django.conf import settings as django_settings

from modelcore.config import RunConfig, preset
from modelcore.parent_death import DIE_WITH_PARENT_ENV
from webapp.accounts.models import Team
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus
from workers import gpus, job_processes
from workers.sweep import sweep_lost_runs
from workers.tasks import launch_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runs_dir() -> Path:
    """The worker's run directories (under the shared data directory), not a per-test folder."""
    return django_settings.RUNS_DIR


@pytest.fixture
def records(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return job_processes.records_dir()


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def _sleeper(tag: str, *, die_with_parent: bool = False) -> list[str]:
    """argv of a process that sleeps; with ``die_with_parent`` it sets the signal as a rank does."""
    code = "import time\n"
    if die_with_parent:
        code += (
            "from modelcore.parent_death import die_with_parent_if_asked\nassert die_with_parent_if_asked()\n"
        )
    code += "print('up', flush=True)\ntime.sleep(600)\n"
    return [sys.executable, "-c", code]


def _tagged_env(tag: str) -> dict[str, str]:
    return {**os.environ, **job_processes.job_env(tag), "PYTHONPATH": str(ROOT)}


def test_a_launcher_and_its_ranks_die_with_the_supervisor(tmp_path):
    """supervisor -> launcher (preexec) -> rank in its own session (sets the signal itself)."""
    tag = job_processes.new_tag("run", 0)
    (tmp_path / "rank.py").write_text(_sleeper(tag, die_with_parent=True)[2])
    (tmp_path / "launcher.py").write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'rank.py')!r}], start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    (tmp_path / "supervisor.py").write_text(
        "import subprocess, sys, time\n"
        "from modelcore.parent_death import die_with_parent_preexec\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'launcher.py')!r}], start_new_session=True,\n"
        "                 preexec_fn=die_with_parent_preexec())\n"
        "print('started', flush=True)\n"
        "time.sleep(600)\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, str(tmp_path / "supervisor.py")],
        env=_tagged_env(tag),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert supervisor.stdout.readline().strip() == "started"
        # supervisor, launcher and rank: three sessions, one tag
        _wait_until(lambda: len(job_processes.tagged_processes(tag)) == 3, 20, "the rank to start")
        supervisor.kill()
        supervisor.wait()
        _wait_until(lambda: job_processes.tagged_processes(tag) == [], 5, "the launcher and rank to die")
    finally:
        job_processes.kill_tagged(tag)


def test_a_rank_started_by_hand_keeps_its_parent_death_signal_off():
    env = {k: v for k, v in os.environ.items() if k != DIE_WITH_PARENT_ENV}
    code = "from modelcore.parent_death import die_with_parent_if_asked as d; print(d())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True
    )
    assert out.stdout.decode().strip() == "False"


def _record(records: Path, tag: str, supervisor: psutil.Process, pgid: int, boot: str | None = None) -> Path:
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"{tag}.json"
    data = {
        "tag": tag,
        "pgid": pgid,
        "supervisor_pid": supervisor.pid,
        "supervisor_started": supervisor.create_time(),
        "boot_id": job_processes.boot_id() if boot is None else boot,
        "job": "test",
    }
    path.write_text(json.dumps(data))
    return path


def test_a_starting_worker_reaps_jobs_whose_supervisor_is_dead(records):
    dead_tag, live_tag = job_processes.new_tag("run", 1), job_processes.new_tag("run", 2)
    # An orphan: a process of a job that escaped its parent-death signal.
    orphan = subprocess.Popen(
        _sleeper(dead_tag), env=_tagged_env(dead_tag), start_new_session=True, stdout=subprocess.PIPE
    )
    alive = subprocess.Popen(
        _sleeper(live_tag), env=_tagged_env(live_tag), start_new_session=True, stdout=subprocess.PIPE
    )
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_process = psutil.Process(gone.pid)
    gone.wait()
    try:
        assert orphan.stdout.readline() and alive.stdout.readline()
        # The dead supervisor's identity: pid and start time of a process that has exited.
        dead_record = records / f"{dead_tag}.json"
        records.mkdir(parents=True, exist_ok=True)
        dead_record.write_text(
            json.dumps(
                {
                    "tag": dead_tag,
                    "pgid": orphan.pid,
                    "supervisor_pid": gone_process.pid,
                    "supervisor_started": gone_process.create_time(),
                    "boot_id": job_processes.boot_id(),
                }
            )
        )
        live_record = _record(records, live_tag, psutil.Process(), alive.pid)  # supervised by this test
        old_boot = _record(
            records, job_processes.new_tag("run", 3), psutil.Process(), 1, boot="an-earlier-boot"
        )

        assert job_processes.reap_orphans() == [dead_tag]
        orphan.wait(timeout=5)  # killed (and already reaped by the reaper's wait: it is our child)
        assert job_processes.tagged_processes(dead_tag) == []
        assert not dead_record.exists() and not old_boot.exists()
        assert alive.poll() is None and live_record.exists()  # another supervisor's job is left alone
    finally:
        for proc in (orphan, alive):
            proc.kill()
            proc.wait()


def test_a_gpu_stays_leased_while_its_dead_holders_trainer_lives(tmp_path):
    leases = tmp_path / "leases"
    leases.mkdir()
    tag = job_processes.new_tag("run", 4)
    (leases / "gpu-0.lock").write_text(tag)  # left by a holder that died without letting go
    trainer = subprocess.Popen(
        _sleeper(tag), env=_tagged_env(tag), stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert trainer.stdout.readline()
        with pytest.raises(gpus.GpusBusy), gpus.lease(1, ["0"], leases, holder="next"):
            pass
    finally:
        trainer.kill()
        trainer.wait()
    with gpus.lease(1, ["0"], leases, holder="next") as got:
        assert got == ["0"] and (leases / "gpu-0.lock").read_text() == "next"
    assert (leases / "gpu-0.lock").read_text() == ""  # a clean release leaves no holder behind


# --- the real thing ------------------------------------------------------------


def _trainer_processes(run: Run) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if str(run.run_dir) in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkill_of_the_worker_kills_the_trainer_frees_its_gpus_after_it_and_loses_the_run(
    tmp_path, settings
):
    settings.LOST_AFTER_SECONDS = 5
    leases = tmp_path / "leases"
    # Ids no machine has: a GPU host's CUDA sees none, so the ranks train on CPU either way.
    simulated = ["90", "91"]
    data = preset("tiny-cpu").to_dict()
    data["parallel"].update(device="auto", num_processes=2)
    data["train"].update(max_steps=100_000, eval_every=0)
    team = Team.objects.create(name="orphans")
    run = Run.objects.create(
        project=Project.objects.create(team=team, name="orphans"),
        name="orphan",
        config=RunConfig.from_dict(data).to_dict(),
    )
    with service_processes.celery_worker(
        tmp_path / "worker.log",
        own_queue=True,
        RUNWRIGHT_GPUS=",".join(simulated),
        RUNWRIGHT_GPU_LOCK_DIR=str(leases),
        RUNWRIGHT_HEARTBEAT_SECONDS="1",
        RUNWRIGHT_CACHE_DIR=str(tmp_path / "cache"),
    ) as (queue, worker):
        launch_run.apply_async((run.id,), queue=queue)

        def training() -> bool:
            run.refresh_from_db()
            return run.status == RunStatus.RUNNING and run.step >= 2

        _wait_until(training, 150, f"run {run.id} to train")
        trainer = _trainer_processes(run)
        assert len(trainer) == 3, trainer  # the launcher (torch elastic's agent) and two ranks
        assert len({os.getsid(p.pid) for p in trainer}) == 3  # each in a session of its own
        with pytest.raises(gpus.GpusBusy), gpus.lease(1, simulated, leases):
            pass

        killed = time.monotonic()
        worker.kill()  # SIGKILL to the worker's main process: no handler runs
        worker.wait()
        gone_after = granted_after = None
        while gone_after is None or granted_after is None:
            assert time.monotonic() - killed < 15, f"trainer {_trainer_processes(run)}, lease {granted_after}"
            if gone_after is None and not _trainer_processes(run):
                gone_after = time.monotonic() - killed
            if granted_after is None:
                try:
                    with gpus.lease(2, simulated, leases):
                        # Granted: nothing of the trainer may run on these GPUs any more.
                        assert _trainer_processes(run) == []
                        granted_after = time.monotonic() - killed
                except gpus.GpusBusy:
                    pass
            time.sleep(0.02)
        print(f"trainer gone {gone_after:.2f} s after SIGKILL; GPUs leasable after {granted_after:.2f} s")
        assert gone_after < 10

    def lost() -> bool:
        sweep_lost_runs()
        run.refresh_from_db()
        return run.status == RunStatus.LOST

    _wait_until(lost, 60, f"run {run.id} to be marked lost")
    assert "no heartbeat" in run.error


# What a started job's first process reports about itself: its parent-death signal and tag.
REPORT = (
    "import ctypes, os; libc = ctypes.CDLL(None); sig = ctypes.c_int(0); "
    "libc.prctl(2, ctypes.byref(sig), 0, 0, 0); "  # PR_GET_PDEATHSIG
    "print('pdeathsig', sig.value, 'tag', os.environ.get('RUNWRIGHT_JOB_TAG'), "
    "'ranks', os.environ.get('RUNWRIGHT_DIE_WITH_PARENT'), flush=True)"
)


@pytest.mark.django_db(transaction=True)
def test_the_supervisor_starts_its_trainer_tagged_and_dying_with_it(make_run, records):
    from workers.supervisor import LAUNCHER_LOG, Supervisor

    run = transitions_claim(make_run())
    supervisor = Supervisor(run, command=lambda config, run_dir: ([sys.executable, "-c", REPORT], {}))
    supervisor.supervise()
    log = (run.run_dir / LAUNCHER_LOG).read_text()
    assert f"pdeathsig {int(signal.SIGKILL)} tag {supervisor.process_tag} ranks 1" in log
    assert list(records.glob("*.json")) == []  # forgotten once its processes were gone


@pytest.mark.django_db(transaction=True)
def test_the_eval_runner_starts_its_evaluator_tagged_and_dying_with_it(project, records):
    from webapp.evals.models import EvalJob, ModelSource
    from workers.eval_jobs import EvalRunner
    from workers.jobs import Launch

    job = EvalJob.objects.create(project=project, source=ModelSource.HF, hf_path="m", tasks=["t"])
    runner = EvalRunner(job)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    runner.process.start(Launch([sys.executable, "-c", REPORT], {}, job.job_dir, job.log_file), "eval")
    assert list(records.glob("*.json")) != []
    runner.proc.wait(timeout=30)
    runner.process.reap()
    assert f"pdeathsig {int(signal.SIGKILL)} tag {runner.tag}" in job.log_file.read_text()
    assert list(records.glob("*.json")) == []


def transitions_claim(run: Run) -> Run:
    from webapp.runs import transitions

    claimed = transitions.claim_for_launch(run.id, "w")
    assert claimed is not None
    return claimed
