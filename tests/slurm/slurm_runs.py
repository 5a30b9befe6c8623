"""What the Slurm run tests share: the tiny CPU config, a claimed run, a supervisor in a thread, waits."""

from __future__ import annotations

import threading
import time

from modelcore.config import preset
from webapp.accounts.models import Team
from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Run
from workers import slurm
from workers.supervisor import supervise

DEADLINE_SECONDS = 240


def tiny_config(**train) -> dict:
    """The tiny CPU preset on 2 gloo ranks, a few steps, every step logged."""
    config = preset("tiny-cpu").to_dict()
    config["parallel"] |= {"num_processes": 2, "device": "cpu"}
    config["optim"]["warmup_steps"] = 2
    config["train"] |= {"max_steps": 8, "log_every": 1, "eval_every": 0, "checkpoint_every": 0, **train}
    return config


def claimed_run(config: dict, name: str = "on slurm") -> Run:
    project = Project.objects.create(team=Team.objects.create(name=f"slurm-{name}"), name="slurm")
    run = Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)
    claimed = transitions.claim_for_launch(run.id, "slurm-test-worker")
    assert claimed is not None
    return claimed


def supervise_in_thread(run: Run) -> tuple[threading.Thread, list[str]]:
    result: list[str] = []

    def target() -> None:
        from django.db import connection

        try:
            result.append(supervise(Run.objects.get(pk=run.id), poll_seconds=0.2))
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def wait_for(condition, what: str, cluster, timeout: float = DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{cluster.logs()}")


def job_output(run: Run) -> str:
    out, err = slurm.job_output_paths(run.run_dir, run.slurm_job_id)
    return "".join(p.read_text(errors="replace")[-3000:] for p in (out, err) if p.exists())


def streamed_losses(run: Run) -> dict[int, float]:
    """step → train/loss as the supervisor stored it."""
    rows = MetricPoint.objects.filter(run=run, key="train/loss").order_by("step")
    return dict(rows.values_list("step", "value"))
