"""A restarted worker takes back its runs whose Slurm job outlived their supervisor.

Under ``RUNWRIGHT_LAUNCHER=slurm`` the trainer is Slurm's job, not the worker's child: a worker
killed (``kill -9``, the OOM killer, a host reboot) takes its supervisors with it but the job
trains on. Left alone, the run's heartbeat stops, the beat marks it lost and, with
``train.max_restarts``, a new attempt cancels that job and submits another that resumes from
the last checkpoint: the steps since are trained twice, or the run just stays lost.

Instead, when the worker starts again (``workers.startup``), it finds the runs it had claimed
(``Run.worker``, its Celery node name) that are still supervised or lost with a Slurm job,
and sends itself one ``reattach_run`` per run. The task takes the run back (``take_back``) and
supervises the existing job (``SlurmJob.attach``): its events are read from the committed
byte offset on, so nothing the trainer wrote meanwhile is lost, and the run ends as it would
have. A job that ended while no one watched is read to its end and decided the same way.

``take_back`` is fenced like every supervisor write: the run's attempt and job must be the
ones seen at startup, and its heartbeat no later than seen then. A second delivery, a second restart, or a
supervisor that was alive after all (it beats) makes the heartbeat move, and the claim
matches nothing; a run relaunched meanwhile has another attempt.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket

from celery import shared_task
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from modelcore.config import ConfigError, RunConfig
from webapp.runs import config_paths, transitions
from webapp.runs.models import SUPERVISED_STATUSES, Run, RunStatus
from workers import slurm
from workers.jobs import Launch
from workers.supervisor import LAUNCHER_LOG, POLL_SECONDS, Supervisor, cancel_grace_seconds
from workers.tasks import RUN_TIME_LIMIT_SECONDS, STOP_GRACE_SECONDS

log = logging.getLogger(__name__)

REATTACH_TASK = "workers.slurm_reattach.reattach_run"
TAKEN_BACK_FROM = (*SUPERVISED_STATUSES, RunStatus.LOST)


def runs_to_reattach(worker: str) -> list[tuple[int, int, str, dt.datetime | None]]:
    """``(run id, attempt, Slurm job id, heartbeat)`` of the runs ``worker`` had claimed that may still train."""
    rows = Run.objects.filter(worker=worker[:200], status__in=TAKEN_BACK_FROM).exclude(slurm_job_id="")
    return list(rows.values_list("pk", "attempt", "slurm_job_id", "heartbeat_at"))


def take_back(
    run_id: int, attempt: int, job_id: str, heartbeat: dt.datetime | None, worker: str
) -> Run | None:
    """Make the run this worker's again (a lost one ``running``); None when it is not ours to take."""
    with transaction.atomic():
        # Not moved since it was seen (no equality: SQLite keeps the database clock's milliseconds only).
        unmoved = Q(heartbeat_at__lte=heartbeat) if heartbeat is not None else Q(heartbeat_at__isnull=True)
        mine = Run.objects.filter(
            unmoved, pk=run_id, attempt=attempt, slurm_job_id=job_id, status__in=TAKEN_BACK_FROM
        ).update(worker=worker[:200], heartbeat_at=Now())
        if mine != 1:
            return None
        run = Run.objects.get(pk=run_id)
        if run.status == RunStatus.LOST and not transitions.revive(run_id, attempt):
            return None
    return Run.objects.get(pk=run_id)


class ReattachedSupervisor(Supervisor):
    """The supervisor of a run whose Slurm job is already submitted: it watches, it starts nothing.

    ``prepare`` writes no file and cancels no earlier job (that job is this attempt's own), and
    ``started`` only beats: the job's id and state are on the run's row already.
    """

    def prepare(self) -> Launch:
        return Launch([], {}, cwd=self.run_dir, log_path=self.run_dir / LAUNCHER_LOG)

    def started(self, pid: int) -> None:
        transitions.heartbeat(self.run.id, self.run.attempt)


def reattach(run: Run, *, poll_seconds: float = POLL_SECONDS) -> str:
    """Supervise the run's existing Slurm job to its end; returns the final status written."""
    supervisor = ReattachedSupervisor(run, poll_seconds=poll_seconds)
    try:
        config = RunConfig.from_dict(run.config)
        config_paths.check_stored(run, config)
        supervisor.config = config
        supervisor.kill_after = cancel_grace_seconds(config)
        job = slurm.SlurmJob(
            supervisor.tag, slurm.job_spec(config, name="", stop_grace_s=supervisor.kill_after)
        )
        job.attach(run.slurm_job_id)
    except (ConfigError, ValueError, OSError) as exc:
        # The job trains on unwatched: stop it rather than leave it holding the allocation.
        slurm.cancel_earlier_job(run.slurm_job_id)
        return supervisor.finish(RunStatus.FAILED, f"Could not take back Slurm job {run.slurm_job_id}: {exc}")
    supervisor.process = job
    log.warning("run %s attempt %s: took back Slurm job %s", run.id, run.attempt, run.slurm_job_id)
    return supervisor.run_job()


@shared_task(
    bind=True,
    name=REATTACH_TASK,
    ignore_result=True,
    acks_late=True,
    soft_time_limit=RUN_TIME_LIMIT_SECONDS,
    time_limit=RUN_TIME_LIMIT_SECONDS + STOP_GRACE_SECONDS,
)
def reattach_run(self, run_id: int, attempt: int, job_id: str, heartbeat: str | None) -> str | None:
    """Take the run back and watch its Slurm job; a run no longer ours to take is left alone."""
    worker = self.request.hostname or socket.gethostname()
    seen = dt.datetime.fromisoformat(heartbeat) if heartbeat else None
    run = take_back(run_id, attempt, job_id, seen, worker)
    if run is None:
        log.info("run %s: not taken back (relaunched, ended or watched by another supervisor)", run_id)
        return None
    return reattach(run)


def send_reattachments(worker: str, queue: str) -> list[int]:
    """Send ``reattach_run`` for each run ``worker`` may take back, onto ``queue``; returns their ids."""
    sent = []
    for run_id, attempt, job_id, heartbeat in runs_to_reattach(worker):
        seen = heartbeat.isoformat() if heartbeat else None
        reattach_run.apply_async((run_id, attempt, job_id, seen), queue=queue)
        sent.append(run_id)
    return sent
