"""The state machines of runs, eval, sampling and export jobs: the tables, every illegal move refused, every legal one made."""

from __future__ import annotations

import itertools

import pytest
from django.db.models.functions import Now

from webapp.evals import transitions as eval_transitions
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus, ModelSource
from webapp.lifecycle import IllegalTransition, JobStateMachine
from webapp.runs import transitions as run_transitions
from webapp.runs.models import RUN_STATES, Run, RunStatus
from webapp.samples import transitions as sample_transitions
from webapp.samples.models import SAMPLE_STATES, SampleJob, SampleKind, SampleStatus

R = RunStatus
E = EvalStatus
S = SampleStatus

# The tables as a reader should find them: a change to a model's table must change this too.
RUN_TABLE = {
    R.QUEUED: {R.STARTING, R.FAILED, R.CANCELLED},
    R.STARTING: {R.RUNNING, R.COMPLETED, R.FAILED, R.CANCELLED, R.LOST},
    R.RUNNING: {R.COMPLETED, R.FAILED, R.CANCELLED, R.LOST},
    R.LOST: {R.RUNNING, R.COMPLETED, R.FAILED, R.CANCELLED, R.LOST, R.QUEUED},
    R.COMPLETED: set(),
    R.FAILED: {R.QUEUED},
    R.CANCELLED: {R.QUEUED},
}
EVAL_TABLE = {
    E.QUEUED: {E.RUNNING, E.FAILED, E.CANCELLED},
    E.RUNNING: {E.COMPLETED, E.FAILED, E.CANCELLED},
    E.COMPLETED: set(),
    E.FAILED: set(),
    E.CANCELLED: set(),
}

SAMPLE_TABLE = {
    S.QUEUED: {S.RUNNING, S.FAILED, S.CANCELLED},
    S.RUNNING: {S.COMPLETED, S.FAILED, S.CANCELLED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}


def _make_run(project, status: str) -> Run:
    return Run.objects.create(project=project, name=f"r-{status}", config={}, status=status, attempt=1)


def _make_job(project, status: str) -> EvalJob:
    return EvalJob.objects.create(
        project=project, source=ModelSource.HF, hf_path="m", tasks=["t"], status=status
    )


def _make_sample_job(project, status: str, kind: str = SampleKind.SAMPLE) -> SampleJob:
    run = Run.objects.create(project=project, name=f"s-{status}", config={}, status=R.COMPLETED)
    return SampleJob.objects.create(run=run, checkpoint_step=1, prompt="p", status=status, kind=kind)


def _make_export_job(project, status: str) -> SampleJob:
    return _make_sample_job(project, status, SampleKind.EXPORT)


MACHINES = {
    "run": (RUN_STATES, RUN_TABLE, Run, _make_run),
    "eval": (EVAL_STATES, EVAL_TABLE, EvalJob, _make_job),
    "sample": (SAMPLE_STATES, SAMPLE_TABLE, SampleJob, _make_sample_job),
    "export": (SAMPLE_STATES, SAMPLE_TABLE, SampleJob, _make_export_job),
}


def _all_pairs(table):
    return list(itertools.product(table, repeat=2))


def test_the_tables_are_the_declared_ones():
    assert {s: set(t) for s, t in RUN_STATES.moves.items()} == RUN_TABLE
    assert {s: set(t) for s, t in EVAL_STATES.moves.items()} == EVAL_TABLE
    assert set(RUN_STATES.states) == set(RunStatus.values) and set(EVAL_STATES.states) == set(
        EvalStatus.values
    )
    assert set(RUN_STATES.final) == {R.COMPLETED}  # failed, cancelled and lost runs can be resumed
    assert RUN_STATES.initial == {R.QUEUED, R.RUNNING} and EVAL_STATES.initial == {E.QUEUED, E.COMPLETED}
    assert {s: set(t) for s, t in SAMPLE_STATES.moves.items()} == SAMPLE_TABLE
    assert set(SAMPLE_STATES.states) == set(SampleStatus.values) and SAMPLE_STATES.initial == {S.QUEUED}


@pytest.mark.parametrize("kind", MACHINES)
def test_every_illegal_move_is_refused_and_changes_nothing(kind, project):
    machine, table, model, make = MACHINES[kind]
    illegal = [(a, b) for a, b in _all_pairs(table) if b not in table[a]]
    assert illegal, "a table that allows everything protects nothing"
    for source, target in illegal:
        row = make(project, source)
        before = model.objects.filter(pk=row.pk).values().get()
        with pytest.raises(IllegalTransition, match=repr(target)):
            machine.move(
                model.objects.filter(pk=row.pk), target, sources=[source], error="x", finished_at=Now()
            )
        assert model.objects.filter(pk=row.pk).values().get() == before, (source, target)


@pytest.mark.parametrize("kind", MACHINES)
def test_every_legal_move_is_made_only_from_its_source(kind, project):
    machine, table, model, make = MACHINES[kind]
    for source, target in _all_pairs(table):
        if target not in table[source]:
            continue
        row = make(project, source)
        bystander = make(project, next(s for s in table if s != source))  # in another state
        moved = machine.move(model.objects.filter(pk__in=[row.pk, bystander.pk]), target, sources=[source])
        assert moved == 1, (source, target)
        row.refresh_from_db()
        assert row.status == target
        assert model.objects.get(pk=bystander.pk).status == bystander.status


def test_a_move_without_sources_takes_every_allowed_one_and_no_other(project):
    rows = {status: _make_run(project, status) for status in RUN_TABLE}
    assert RUN_STATES.move(Run.objects.all(), R.CANCELLED) == 4  # queued, starting, running, lost
    after = dict(Run.objects.values_list("pk", "status"))
    for status, row in rows.items():
        assert after[row.pk] == (R.CANCELLED if R.CANCELLED in RUN_TABLE[status] else status)


def test_a_table_naming_an_undeclared_state_is_refused():
    with pytest.raises(ValueError, match="declared"):
        JobStateMachine(initial=["a"], moves={"a": ["b"]})


# --- the named writes keep their guarantees ---------------------------------------


def test_a_claim_is_idempotent_and_fences_the_attempt(project):
    run = _make_run(project, R.QUEUED)
    claimed = run_transitions.claim_for_launch(run.id, "w1")
    assert (claimed.status, claimed.attempt) == (R.STARTING, 2)
    assert run_transitions.claim_for_launch(run.id, "w2") is None
    # An older attempt's supervisor can neither heartbeat nor finish the new attempt.
    assert not run_transitions.heartbeat(run.id, 1)
    assert not run_transitions.finish(run.id, 1, R.COMPLETED)
    assert run_transitions.finish(run.id, 2, R.COMPLETED)
    assert not run_transitions.finish(run.id, 2, R.FAILED)  # final stays final
    run.refresh_from_db()
    assert run.status == R.COMPLETED and run.finished_at is not None


def test_queued_only_writes_leave_a_claimed_run_alone(project):
    run = _make_run(project, R.QUEUED)
    run_transitions.claim_for_launch(run.id, "w")
    assert not run_transitions.cancel_queued(run.id) and not run_transitions.fail_queued(run.id, "x")
    assert Run.objects.get(pk=run.id).status == R.STARTING
    other = _make_run(project, R.QUEUED)
    assert run_transitions.cancel_queued(other.id)
    other.refresh_from_db()
    assert other.status == R.CANCELLED and other.cancel_requested and other.finished_at is not None


def test_an_eval_claim_is_idempotent_and_a_finished_job_stays_finished(project):
    job = _make_job(project, E.QUEUED)
    assert eval_transitions.JOBS.claim(job.id, "w1") is not None
    assert eval_transitions.JOBS.claim(job.id, "w2") is None
    assert not eval_transitions.JOBS.cancel_queued(job.id)  # claimed: its runner stops it
    assert eval_transitions.finish(job.id, E.CANCELLED)
    assert not eval_transitions.finish(job.id, E.COMPLETED, results={"results": {}})
    assert EvalJob.objects.get(pk=job.id).status == E.CANCELLED
    with pytest.raises(IllegalTransition):
        eval_transitions.finish(job.id, E.QUEUED)


# The process jobs that are not runs share their writes (webapp.process_jobs): each kind's
# named writes keep the same guarantees.
PROCESS_JOBS = {
    "eval": (eval_transitions, _make_job, EvalJob),
    "sample": (sample_transitions, _make_sample_job, SampleJob),
    "export": (sample_transitions, _make_export_job, SampleJob),
}


@pytest.mark.parametrize("kind", PROCESS_JOBS)
def test_a_process_job_claim_is_idempotent_and_a_finished_job_stays_finished(kind, project):
    transitions, make, model = PROCESS_JOBS[kind]
    job = make(project, E.QUEUED)
    claimed = transitions.JOBS.claim(job.id, "w1")
    assert claimed is not None and claimed.status == E.RUNNING and claimed.worker == "w1"
    assert transitions.JOBS.claim(job.id, "w2") is None
    assert not transitions.JOBS.fail_queued(job.id, "x")  # claimed: only its runner ends it
    assert transitions.JOBS.request_cancel(job.id)  # flagged for its runner, still running
    row = model.objects.get(pk=job.id)
    assert row.status == E.RUNNING and row.cancel_requested
    assert transitions.finish(job.id, E.CANCELLED)
    assert not transitions.finish(job.id, E.COMPLETED)
    assert not transitions.JOBS.request_cancel(job.id)  # ended
    row = model.objects.get(pk=job.id)
    assert row.status == E.CANCELLED and row.finished_at is not None and row.pid is None
    with pytest.raises(IllegalTransition):
        transitions.finish(job.id, E.QUEUED)


@pytest.mark.parametrize("kind", PROCESS_JOBS)
def test_a_cancelled_queued_process_job_is_never_claimed(kind, project):
    transitions, make, model = PROCESS_JOBS[kind]
    job = make(project, E.QUEUED)
    assert transitions.JOBS.request_cancel(job.id)
    assert model.objects.get(pk=job.id).status == E.CANCELLED
    assert transitions.JOBS.claim(job.id, "w") is None
    other = make(project, E.QUEUED)
    assert transitions.JOBS.fail_queued(other.id, "no broker")
    row = model.objects.get(pk=other.id)
    assert (row.status, row.error) == (E.FAILED, "no broker")
