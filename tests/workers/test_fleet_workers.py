"""Several hosts simulated as several real Celery workers on this machine, with the fleet on.

Each worker has its own queue, lock folder and a declared fake GPU inventory
(``RUNWRIGHT_GPUS`` + ``RUNWRIGHT_GPU_MODEL``); it registers and beats like a GPU host. The
runs are real tiny-CPU trainings of one process each (``device auto`` with a leased fake GPU
trains on CPU here). Launches take the web's path: ``create_run``'s send goes to the
scheduler task on its queue, which places the run and sends its launch to the host's queue.
The workers and helpers are ``fleet_harness``'s.
"""

from __future__ import annotations

import os
import signal

import fleet_harness
import pytest
from fleet_harness import final, fleet_worker, launch, lock_holders, wait_until

from webapp.fleet.models import Host, Placement
from webapp.runs.models import AttemptKind, Run, RunAttempt, RunStatus
from workers import sweep

pytestmark = [pytest.mark.slow, pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

# The harness's fixtures, used here by name.
corpus_cache = fleet_harness.corpus_cache
scheduler_queue = fleet_harness.scheduler_queue
runs_dir = fleet_harness.runs_dir
member = fleet_harness.member


def test_runs_are_placed_by_model_then_priority_and_never_share_a_gpu(
    scheduler_queue, member, tmp_path, corpus_cache
):
    with (
        fleet_worker(tmp_path, "h100", "0,1", "NVIDIA H100", scheduler_queue, corpus_cache) as (big, _),
        fleet_worker(tmp_path, "a100", "0", "NVIDIA A100", scheduler_queue, corpus_cache) as (small, _),
    ):
        assert set(Host.objects.values_list("name", flat=True)) >= {big, small}
        h1 = launch(member, "h100-1", steps=16, gpu_model="H100")
        h2 = launch(member, "h100-2", steps=16, gpu_model="H100")
        a1 = launch(member, "a100-1", steps=8, gpu_model="A100")
        wait_until(
            "the first A100 run to be placed",
            lambda: Placement.objects.filter(pk=a1.pk, host__isnull=False).exists(),
        )
        low = launch(member, "a100-low", steps=6, gpu_model="A100", priority=0)
        high = launch(member, "a100-high", steps=6, gpu_model="A100", priority=90)

        # Both H100 runs train at once on the two-GPU host, each on a GPU of its own.
        def both_running():
            return Run.objects.filter(pk__in=[h1.pk, h2.pk], status=RunStatus.RUNNING).count() == 2

        wait_until("both H100 runs to run", both_running)
        holders = lock_holders(tmp_path, big)
        assert sorted(holders) == ["gpu-0.lock", "gpu-1.lock"]
        assert {t.split("-")[1] for t in holders.values()} == {str(h1.pk), str(h2.pk)}, holders
        # The A100 host holds one run; the others wait with the reason on their placement.
        waiting = Placement.objects.get(pk=low.pk)
        assert waiting.host is None and "needs 1 × A100" in waiting.reason

        for run in (h1, h2, a1, low, high):
            assert final(run).status == RunStatus.COMPLETED, run.error
        # An ended run's GPUs go back at the scheduler's next pass, not with its final status.
        wait_until(
            "both hosts' GPUs to be given back",
            lambda: set(Host.objects.filter(name__in=[big, small]).values_list("reserved", flat=True)) == {0},
        )

    def attempt(run: Run) -> RunAttempt:
        return RunAttempt.objects.get(run=run, number=1)

    assert {attempt(h1).worker, attempt(h2).worker} == {big}
    assert {attempt(r).worker for r in (a1, low, high)} == {small}
    # One GPU on the A100 host: its runs ran one after the other, the higher priority first.
    order = sorted((a1, low, high), key=lambda r: attempt(r).started_at)
    assert [r.name for r in order] == ["a100-1", "a100-high", "a100-low"]
    for before, after in zip(order, order[1:], strict=False):
        assert attempt(before).ended_at <= attempt(after).started_at


def test_a_run_on_a_killed_worker_is_recovered_on_another(
    scheduler_queue, member, tmp_path, corpus_cache, settings
):
    with fleet_worker(tmp_path, "doomed", "0", "NVIDIA H100", scheduler_queue, corpus_cache) as (
        doomed,
        proc,
    ):
        run = launch(member, "survivor", steps=24, max_restarts=1)

        def checkpointed():
            run.refresh_from_db()
            return run.status == RunStatus.RUNNING and run.checkpoints.filter(step__gte=4).exists()

        wait_until("a checkpoint on the doomed host", checkpointed)
        os.killpg(proc.pid, signal.SIGKILL)  # the host is gone: no goodbye
        proc.wait(timeout=20)
    # The spare host joins only now: the run must not finish on the doomed one meanwhile.
    with fleet_worker(tmp_path, "spare", "0", "NVIDIA H100", scheduler_queue, corpus_cache) as (spare, _):
        settings.LOST_AFTER_SECONDS = 3
        wait_until("the sweep to mark the run lost", lambda: run.pk in sweep.sweep_lost_runs(), timeout=60)

        def resumed():  # beat's sweep, run here: it resumes the run one LOST_AFTER later
            sweep.sweep_lost_runs()
            return Run.objects.filter(pk=run.pk, attempt=2).exists()

        wait_until("the sweep to resume the lost run", resumed, timeout=30)
        run = final(run, attempt=2)
    assert run.status == RunStatus.COMPLETED and run.attempt == 2, run.error
    first, second = RunAttempt.objects.filter(run=run).order_by("number")
    assert (first.worker, first.status) == (doomed, RunStatus.LOST)
    assert (second.worker, second.kind, second.status) == (spare, AttemptKind.RECOVERY, RunStatus.COMPLETED)
    assert Placement.objects.get(pk=run.pk).host.name == spare
    assert Host.objects.get(name=doomed).reserved == 0
