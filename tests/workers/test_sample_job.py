"""Sampling from and exporting a run checkpoint on workers: the engine as a subprocess of the
job runner, its tokens stored as they come, the text kept; an export that transformers loads
with our logits; and a real ``celery -A workers worker`` running a sample job."""

from __future__ import annotations

import time

import pytest
import torch
from service_processes import celery_worker

from modelcore.checkpoint import save_weights_checkpoint
from modelcore.config import RunConfig
from modelcore.generate import generate
from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer
from webapp.accounts.models import Membership, Role
from webapp.runs.models import Checkpoint, Run
from webapp.samples.models import SampleJob, SampleKind, SampleStatus
from webapp.samples.services import create_sample_job
from workers import sample_jobs
from workers.sample_jobs import SampleRunner, run_sample_job

STEP = 4


@pytest.fixture
def checkpointed_run(make_run) -> tuple[Run, Transformer]:
    return make_checkpointed_run(make_run)


def make_checkpointed_run(make_run) -> tuple[Run, Transformer]:
    """A run with one kept checkpoint of a tiny random model (a known seed, to compare with)."""
    run = make_run("sampled")
    cfg = RunConfig.from_dict(run.config)
    torch.manual_seed(0)
    model = Transformer(cfg.model).eval()
    path = save_weights_checkpoint(run.run_dir, STEP, model, cfg, ByteTokenizer())
    Checkpoint.objects.create(run=run, step=STEP, path=str(path.relative_to(run.run_dir)))
    return run, model


def _job(run: Run, **fields) -> SampleJob:
    values = {"checkpoint_step": STEP, "status": SampleStatus.RUNNING, **fields}
    return SampleJob.objects.create(run=run, **values)


def test_sample_job_streams_its_text_and_keeps_it(checkpointed_run, monkeypatch):
    run, model = checkpointed_run
    job = _job(run, prompt="The cat", temperature=0.0, max_tokens=24)
    stored: list[str] = []
    record_text = sample_jobs.transitions.record_text

    def spy(job_id: int, text: str) -> bool:  # the real write; we only watch what it wrote
        stored.append(text)
        return record_text(job_id, text)

    monkeypatch.setattr(sample_jobs.transitions, "record_text", spy)
    assert SampleRunner(job).run_job() == SampleStatus.COMPLETED
    job.refresh_from_db()
    # Greedy decoding in the subprocess gives what the same weights give here.
    expected = generate(model, ByteTokenizer(), "The cat", max_new_tokens=24, temperature=0.0)
    assert job.status == SampleStatus.COMPLETED and job.error == ""
    assert job.text == expected and job.finished_at is not None and job.pid is None
    # The text was stored as it grew, not only at the end (each stored text a prefix of the next).
    growing = [t for t in stored if t]
    assert growing and all(expected.startswith(t) for t in growing)
    assert (run.run_dir / job.relative_dir / "job.log").is_file()


def test_task_claims_a_queued_job_once(checkpointed_run):
    run, _ = checkpointed_run
    job = _job(run, status=SampleStatus.QUEUED, prompt="a", temperature=0.0, max_tokens=3)
    assert run_sample_job(job.id) == SampleStatus.COMPLETED
    assert run_sample_job(job.id) is None  # a second delivery finds it claimed
    job.refresh_from_db()
    assert job.status == SampleStatus.COMPLETED and job.worker and len(job.text) <= 3


def test_a_missing_checkpoint_fails_the_job_with_the_engine_error(checkpointed_run):
    run, _ = checkpointed_run
    job = _job(run, checkpoint_step=999, prompt="a", max_tokens=3)
    assert SampleRunner(job).run_job() == SampleStatus.FAILED
    job.refresh_from_db()
    assert "exited with code 2" in job.error and "999" in job.error


def test_cancel_stops_the_sampler(checkpointed_run):
    run, _ = checkpointed_run
    job = _job(run, prompt="a", max_tokens=1024, cancel_requested=True)
    assert SampleRunner(job).run_job() == SampleStatus.CANCELLED
    assert SampleJob.objects.get(pk=job.pk).status == SampleStatus.CANCELLED


def test_export_job_makes_a_folder_transformers_loads_with_our_logits(checkpointed_run):
    transformers = pytest.importorskip("transformers")
    run, model = checkpointed_run
    job = _job(run, kind=SampleKind.EXPORT)
    assert SampleRunner(job).run_job() == SampleStatus.COMPLETED, SampleJob.objects.get(pk=job.pk).error
    assert job.export_dir.is_relative_to(run.run_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(job.export_dir, torch_dtype=torch.float32).eval()
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=1e-5)


def test_sweep_fails_a_job_whose_worker_went_silent(checkpointed_run):
    import datetime as dt

    from django.utils import timezone

    run, _ = checkpointed_run
    silent = _job(run, prompt="a", heartbeat_at=timezone.now() - dt.timedelta(minutes=10))
    alive = _job(run, prompt="b", heartbeat_at=timezone.now())
    assert sample_jobs.sweep_stale_sample_jobs() == [silent.id]
    silent.refresh_from_db()
    assert silent.status == SampleStatus.FAILED and "stopped responding" in silent.error
    assert SampleJob.objects.get(pk=alive.pk).status == SampleStatus.RUNNING


def test_a_job_queued_too_long_is_sent_again_once(checkpointed_run, monkeypatch, settings):
    import datetime as dt

    from django.utils import timezone

    from webapp import enqueue

    run, _ = checkpointed_run
    old = _job(run, status=SampleStatus.QUEUED, prompt="a")
    SampleJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(hours=1))
    fresh = _job(run, status=SampleStatus.QUEUED, prompt="b")
    sent = []
    monkeypatch.setattr(enqueue.app, "send_task", lambda name, args, **kw: sent.append((name, args)))
    assert sample_jobs.resend_queued_sample_jobs() == [old.id]
    assert sent == [(enqueue.RUN_SAMPLE_JOB, (old.id,))] and fresh.id not in sent[0][1]
    assert sample_jobs.resend_queued_sample_jobs() == []  # just sent: the next send waits


# --- a real Celery worker --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_celery_worker_runs_a_sample_job(tmp_path, make_run, settings, django_user_model):
    settings.RUNS_DIR = settings.DATA_DIR / "runs"  # where the worker (given our DATA_DIR) looks
    run, model = make_checkpointed_run(make_run)
    user = django_user_model.objects.create_user("sampler")
    Membership.objects.create(user=user, team=run.project.team, role=Role.MEMBER)
    with celery_worker(tmp_path / "worker.log"):
        job = create_sample_job(user=user, run=run, step=STEP, prompt="Once", temperature=0, max_tokens=16)
        deadline = time.monotonic() + 120
        while SampleJob.objects.get(pk=job.id).is_active and time.monotonic() < deadline:
            time.sleep(0.2)
    job.refresh_from_db()
    assert job.status == SampleStatus.COMPLETED, job.error
    assert job.text == generate(model, ByteTokenizer(), "Once", max_new_tokens=16, temperature=0.0)
