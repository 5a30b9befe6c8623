"""Sweeps: expanding a search, validating it through the config schema, launching runs within the
budget and the concurrency limit as runs end (driven through the runs' real transitions), successive
halving, and who may do what."""

from __future__ import annotations

import math
import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from modelcore.config import ConfigError, resolve
from webapp.metrics.services import Point, upsert_points
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from webapp.sweeps import search
from webapp.sweeps.models import RungResult, Sweep, SweepStatus
from webapp.sweeps.services import advance_sweep, cancel_sweep, create_sweep, kept_at_rung

LR_LOG = {"optim.lr": {"min": 1e-4, "max": 1e-2, "scale": "log"}}


def spec(**fields):
    return {
        "preset": "tiny-cpu",
        "method": "grid",
        "parameters": {"optim.lr": {"values": [1e-3, 3e-3]}, "model.n_layers": {"values": [1, 2]}},
        "concurrency": 2,
        **fields,
    }


def sweep_runs(sweep: Sweep) -> list[Run]:
    return list(Run.objects.filter(sweep=sweep).order_by("id"))


def start(run: Run) -> int:
    """A worker claims the run and its trainer reports that it trains; returns the attempt."""
    claimed = transitions.claim_for_launch(run.id, "worker-1")
    assert claimed is not None
    transitions.record_progress(run.id, claimed.attempt, transitions.Progress(offset=1, step=0, running=True))
    return claimed.attempt


def end(run: Run, status: str = RunStatus.COMPLETED) -> None:
    attempt = start(run) if Run.objects.get(pk=run.pk).status == RunStatus.QUEUED else run.attempt
    assert transitions.finish(run.id, Run.objects.get(pk=run.pk).attempt or attempt, status)


# --- the search itself -------------------------------------------------------------------------


def test_grid_is_the_product_of_the_value_lists_in_order():
    parsed = search.parse_spec(
        "grid", {"optim.lr": {"values": [1e-3, 1e-2]}, "model.n_layers": {"values": [1, 2, 3]}}, None
    )
    trials = search.expand(parsed)
    assert parsed.budget == 6
    assert trials[0] == {"optim.lr": 1e-3, "model.n_layers": 1}
    assert trials[-1] == {"optim.lr": 1e-2, "model.n_layers": 3}
    assert len({tuple(t.items()) for t in trials}) == 6


def test_grid_budget_takes_the_first_points():
    parsed = search.parse_spec("grid", {"model.n_layers": {"values": [1, 2, 3, 4]}}, 2)
    assert search.expand(parsed) == [{"model.n_layers": 1}, {"model.n_layers": 2}]


def test_random_search_is_seeded_and_log_uniform_within_bounds():
    parsed = search.parse_spec("random", {**LR_LOG, "model.n_layers": {"min": 1, "max": 3}}, 400, seed=7)
    trials = search.expand(parsed)
    assert trials == search.expand(search.parse_spec("random", parsed.parameters, 400, seed=7))
    lrs = [t["optim.lr"] for t in trials]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # Log-uniform: about half the draws fall below the geometric middle (1e-3), not ~9 %.
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.38 < below < 0.62
    assert {t["model.n_layers"] for t in trials} == {1, 2, 3}
    assert all(isinstance(t["model.n_layers"], int) for t in trials)


def test_linear_range_is_uniform():
    trials = search.expand(search.parse_spec("random", {"optim.lr": {"min": 1e-4, "max": 1e-2}}, 400, seed=1))
    below = sum(t["optim.lr"] < 1e-3 for t in trials) / len(trials)
    assert below < 0.2


@pytest.mark.parametrize(
    ("method", "parameters", "budget", "field"),
    [
        ("sideways", {"optim.lr": {"values": [1e-3]}}, 2, "method"),
        ("grid", {}, None, "parameters"),
        ("grid", {"optim.nope": {"values": [1]}}, None, "parameters.optim.nope"),
        ("grid", {"optim.lr": {"min": 1e-4, "max": 1e-2}}, None, "parameters.optim.lr"),
        ("random", {"optim.lr": {"min": 0, "max": 1e-2, "scale": "log"}}, 3, "parameters.optim.lr.min"),
        ("random", {"optim.lr": {"min": 1e-2, "max": 1e-4}}, 3, "parameters.optim.lr"),
        (
            "random",
            {"optim.lr": {"min": 1e-4, "max": 1e-2, "scale": "cubic"}},
            3,
            "parameters.optim.lr.scale",
        ),
        ("random", {"optim.lr": {"min": 1e-4, "max": float("inf")}}, 3, "parameters.optim.lr.max"),
        ("random", {"optim.schedule": {"min": 1, "max": 2}}, 3, "parameters.optim.schedule"),
        ("random", {"model.n_layers": {"min": 1.5, "max": 3}}, 3, "parameters.model.n_layers"),
        ("random", LR_LOG, None, "budget"),
        ("random", LR_LOG, 0, "budget"),
        ("random", LR_LOG, 100_000, "budget"),
        ("grid", {"optim.lr": {"values": []}}, None, "parameters.optim.lr"),
    ],
)
def test_bad_search_names_the_field(method, parameters, budget, field):
    with pytest.raises(ConfigError) as caught:
        search.parse_spec(method, parameters, budget)
    assert field in caught.value.errors


def test_kept_at_rung_keeps_the_top_share():
    assert kept_at_rung([3.0], 3.0, 3, "min")  # the first run to arrive is kept
    assert not kept_at_rung([1.0, 3.0], 3.0, 3, "min")
    assert kept_at_rung([1.0, 2.0, 3.0, 4.0], 2.0, 3, "min")  # ceil(4/3) = 2 kept
    assert not kept_at_rung([1.0, 2.0, 3.0, 4.0], 3.0, 3, "min")
    assert kept_at_rung([1.0, 2.0, 3.0, 4.0], 4.0, 2, "max")


# --- creating a sweep ---------------------------------------------------------------------------


def test_every_trial_is_validated_before_anything_launches(alice, project, sent_tasks):
    # n_heads (4 in tiny-cpu) must divide d_model: 6 does not; the error names the field and value.
    bad = spec(parameters={"model.d_model": {"values": [64, 6]}})
    with pytest.raises(ConfigError) as caught:
        create_sweep(user=alice, project=project, spec=bad)
    assert any(key.startswith("parameters.model.") for key in caught.value.errors)
    assert "6" in " ".join(caught.value.errors.values())
    assert not Sweep.objects.exists() and not Run.objects.exists() and not sent_tasks


def test_bad_base_config_names_its_field(alice, project):
    with pytest.raises(ConfigError) as caught:
        create_sweep(user=alice, project=project, spec=spec(config={"optim": {"lr": -1}}))
    assert "config.optim.lr" in caught.value.errors


def test_unknown_preset_and_spec_field_are_refused(alice, project):
    with pytest.raises(ConfigError) as caught:
        create_sweep(user=alice, project=project, spec=spec(preset="gpt-9"))
    assert "preset" in caught.value.errors
    with pytest.raises(ConfigError) as caught:
        create_sweep(user=alice, project=project, spec=spec(colour="red"))
    assert "colour" in caught.value.errors
    with pytest.raises(ConfigError) as caught:
        create_sweep(user=alice, project=project, spec=spec(halving_eta=3))
    assert "halving_step" in caught.value.errors


def test_created_runs_carry_the_trial_config_and_belong_to_the_sweep(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(config={"train": {"max_steps": 30}}))
    runs = sweep_runs(sweep)
    assert len(runs) == 2 and sweep.launched == 2 and sweep.run_ids == [r.id for r in runs]
    assert (
        runs[0].config
        == resolve(
            "tiny-cpu", {"optim": {"lr": 1e-3}, "model": {"n_layers": 1}, "train": {"max_steps": 30}}
        ).to_dict()
    )
    assert runs[1].config["model"]["n_layers"] == 2
    assert [name for name, _, _ in sent_tasks].count(sent_tasks[0][0]) == 2  # two launches sent, after commit


# --- budget and concurrency ---------------------------------------------------------------------


def test_runs_launch_as_earlier_ones_end_within_budget_and_concurrency(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(concurrency=2))
    assert len(sweep_runs(sweep)) == 2
    first, second = sweep_runs(sweep)
    with django_capture_on_commit_callbacks(execute=True):
        attempt = start(first)
    assert len(sweep_runs(sweep)) == 2  # progress frees no slot
    with django_capture_on_commit_callbacks(execute=True):
        transitions.finish(first.id, attempt, RunStatus.COMPLETED)
    assert len(sweep_runs(sweep)) == 3
    with django_capture_on_commit_callbacks(execute=True):
        transitions.cancel_queued(second.id)  # a cancelled queued run frees its slot too
    runs = sweep_runs(sweep)
    assert len(runs) == 4
    assert Run.objects.filter(sweep=sweep, status__in=("queued", "starting", "running")).count() == 2
    # The budget is spent: ending the rest launches nothing more and completes the sweep.
    for run in runs[2:]:
        with django_capture_on_commit_callbacks(execute=True):
            transitions.finish(run.id, start(run), RunStatus.FAILED)
    sweep.refresh_from_db()
    assert len(sweep_runs(sweep)) == 4 and sweep.launched == 4
    assert sweep.status == SweepStatus.COMPLETED and sweep.finished_at is not None


def test_advance_is_idempotent(alice, project, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(concurrency=1))
    for _ in range(3):
        assert advance_sweep(sweep.id) == []
    assert len(sweep_runs(sweep)) == 1


def test_lost_runs_free_their_slots(alice, project, sent_tasks, django_capture_on_commit_callbacks):
    import datetime as dt

    from django.utils import timezone

    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(concurrency=1))
        start(sweep_runs(sweep)[0])
    with django_capture_on_commit_callbacks(execute=True):
        lost = transitions.mark_lost_runs(
            dt.timedelta(seconds=60), now=timezone.now() + dt.timedelta(hours=1)
        )
    assert lost == [sweep_runs(sweep)[0].id]
    assert len(sweep_runs(sweep)) == 2


def test_cancel_stops_launching_and_cancels_active_runs(
    alice, bob, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(concurrency=2))
        first, second = sweep_runs(sweep)
        start(first)
    with pytest.raises(PermissionDenied):
        cancel_sweep(user=bob, sweep=sweep)
    with django_capture_on_commit_callbacks(execute=True):
        cancel_sweep(user=alice, sweep=sweep)
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.status == RunStatus.CANCELLED  # queued: cancelled at once
    assert first.cancel_requested  # running: its supervisor stops it
    with django_capture_on_commit_callbacks(execute=True):
        transitions.finish(first.id, first.attempt, RunStatus.CANCELLED)
    assert len(sweep_runs(sweep)) == 2  # nothing more is launched
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.CANCELLED


# --- successive halving -------------------------------------------------------------------------


def test_successive_halving_cancels_runs_outside_the_top_share_at_the_step(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    halving = spec(
        method="grid",
        parameters={"optim.lr": {"values": [1e-3, 2e-3, 3e-3, 4e-3]}},
        concurrency=4,
        halving_step=10,
        halving_eta=2,
        metric="val/loss",
    )
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=halving)
        runs = sweep_runs(sweep)
        attempts = [start(r) for r in runs]
    losses = [2.0, 4.0, 1.0, 3.0]  # arrival order: 2.0 (kept, first), 4.0 (cut), 1.0 (kept), 3.0 (cut)
    for run, attempt, loss in zip(runs, attempts, losses, strict=True):
        upsert_points(run.id, [Point("val/loss", 5, 9.0, 0.0), Point("val/loss", 10, loss, 0.0)])
        with django_capture_on_commit_callbacks(execute=True):
            transitions.record_progress(run.id, attempt, transitions.Progress(offset=2, step=12))
    decided = {r.run_id: (r.value, r.kept) for r in RungResult.objects.all()}
    assert decided == {
        runs[0].id: (2.0, True),
        runs[1].id: (4.0, False),
        runs[2].id: (1.0, True),
        runs[3].id: (3.0, False),
    }
    cancel_asked = {r.id: r.cancel_requested for r in Run.objects.filter(sweep=sweep)}
    assert cancel_asked == {runs[0].id: False, runs[1].id: True, runs[2].id: False, runs[3].id: True}
    # A decision is made once: more progress changes nothing.
    with django_capture_on_commit_callbacks(execute=True):
        transitions.record_progress(runs[1].id, attempts[1], transitions.Progress(offset=3, step=20))
    assert RungResult.objects.count() == 4


def test_a_run_before_the_halving_step_is_not_judged(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(halving_step=50, concurrency=1))
        run = sweep_runs(sweep)[0]
        attempt = start(run)
    upsert_points(run.id, [Point("val/loss", 10, 1.0, 0.0)])
    with django_capture_on_commit_callbacks(execute=True):
        transitions.record_progress(run.id, attempt, transitions.Progress(offset=2, step=10))
    assert not RungResult.objects.exists()


# --- permissions --------------------------------------------------------------------------------


def test_viewer_cannot_create_a_sweep(bob, project):
    with pytest.raises(PermissionDenied):
        create_sweep(user=bob, project=project, spec=spec())


def test_api_create_list_get_and_cancel(api, alice, bob, charlie, project, sent_tasks):
    created = api(alice, "POST", f"/api/v1/projects/{project.id}/sweeps", spec(name="lr sweep"))
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "lr sweep" and body["budget"] == 4 and len(body["trials"]) == 4
    assert body["trials"][0]["status"] == "queued" and body["trials"][3]["status"] == "pending"
    sweep_id = body["id"]
    assert api(bob, "POST", f"/api/v1/projects/{project.id}/sweeps", spec()).status_code == 403
    assert api(charlie, "POST", f"/api/v1/projects/{project.id}/sweeps", spec()).status_code == 404
    assert [s["id"] for s in api(bob, "GET", f"/api/v1/projects/{project.id}/sweeps").json()["sweeps"]] == [
        sweep_id
    ]
    assert api(bob, "GET", f"/api/v1/sweeps/{sweep_id}").status_code == 200
    assert api(charlie, "GET", f"/api/v1/sweeps/{sweep_id}").status_code == 404
    assert api(bob, "POST", f"/api/v1/sweeps/{sweep_id}/cancel").status_code == 403
    assert api(charlie, "POST", f"/api/v1/sweeps/{sweep_id}/cancel").status_code == 404
    assert api(alice, "POST", f"/api/v1/sweeps/{sweep_id}/cancel").json()["status"] == "cancelled"


def test_api_bad_field_is_a_400_naming_it(api, alice, project):
    bad = spec(parameters={"optim.lr": {"values": [1e-3]}, "model.bogus": {"values": [1]}})
    response = api(alice, "POST", f"/api/v1/projects/{project.id}/sweeps", bad)
    assert response.status_code == 400
    assert "parameters.model.bogus" in response.json()["errors"]
    response = api(
        alice,
        "POST",
        f"/api/v1/projects/{project.id}/sweeps",
        spec(parameters={"optim.lr": {"values": [-1.0]}}),
    )
    assert response.status_code == 400 and "parameters.optim.lr" in response.json()["errors"]
    assert not Sweep.objects.exists()


def test_web_form_creates_a_sweep_and_shows_errors_on_fields(client_for, alice, bob, project, sent_tasks):
    client = client_for(alice)
    form = {
        "name": "web sweep",
        "preset": "tiny-cpu",
        "config": '{"train": {"max_steps": 20}}',
        "method": "random",
        "parameters": '{"optim.lr": {"min": 0.0001, "max": 0.01, "scale": "log"}}',
        "budget": "3",
        "concurrency": "1",
        "seed": "0",
        "metric": "val/loss",
        "goal": "min",
    }
    bad = client.post(
        f"/projects/{project.id}/sweeps/new", {**form, "parameters": '{"optim.nope": {"values": [1]}}'}
    )
    assert bad.status_code == 400 and b"optim.nope" in bad.content
    response = client.post(f"/projects/{project.id}/sweeps/new", form)
    assert response.status_code == 302
    sweep = Sweep.objects.get()
    assert sweep.budget == 3 and len(sweep_runs(sweep)) == 1
    assert all(1e-4 <= t["optim.lr"] <= 1e-2 for t in sweep.trials)
    page = client.get(f"/sweeps/{sweep.id}/")
    assert page.status_code == 200 and b"sweep-plot" in page.content
    data = client.get(f"/sweeps/{sweep.id}/data").json()
    assert data["trials"][0]["run_id"] == sweep_runs(sweep)[0].id
    assert math.isclose(data["trials"][0]["values"]["optim.lr"], sweep.trials[0]["optim.lr"])
    assert client_for(bob).get(f"/projects/{project.id}/sweeps/new").status_code == 403


def test_a_path_the_team_may_not_read_is_refused_before_launch(alice, project, sent_tasks):
    # The same check create_run makes, made for every trial before the sweep is stored.
    bad = spec(parameters={"data.corpus": {"values": ["stdlib", "/etc/passwd"]}})
    with pytest.raises(ConfigError) as caught:
        create_sweep(user=alice, project=project, spec=bad)
    assert "parameters.data.corpus" in caught.value.errors
    assert not Sweep.objects.exists() and not Run.objects.exists() and not sent_tasks


def test_a_range_too_wide_is_refused():
    with pytest.raises(ConfigError) as caught:
        search.parse_spec("random", {"optim.lr": {"min": 1e-4, "max": 1e300, "scale": "log"}}, 3)
    assert "parameters.optim.lr" in caught.value.errors


def test_a_sweeps_run_names_its_sweep_on_its_page_and_in_the_api(api, client_for, alice, project, sent_tasks):
    sweep = create_sweep(user=alice, project=project, spec=spec(name="depth", concurrency=1))
    run = sweep_runs(sweep)[0]
    page = client_for(alice).get(f"/runs/{run.id}/")
    assert page.status_code == 200
    assert f'href="/sweeps/{sweep.id}/" id="run-sweep">depth</a>'.encode() in page.content
    assert api(alice, "GET", f"/api/v1/runs/{run.id}").json()["sweep"] == sweep.id


@pytest.mark.django_db(transaction=True)
def test_runs_ending_at_the_same_moment_launch_each_trial_once_within_the_limit(
    team, alice, project, sent_tasks
):
    """Threads on their own connections (PostgreSQL in CI pass 2): the sweep's row lock serialises advances."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race is exercised on PostgreSQL")
    grid = spec(parameters={"model.n_layers": {"values": [1, 2, 3, 4, 5, 6]}}, concurrency=3)
    sweep = create_sweep(user=alice, project=project, spec=grid)
    running = sweep_runs(sweep)
    attempts = [start(run) for run in running]
    barrier = threading.Barrier(len(running) + 3)

    def end_one(run: Run, attempt: int) -> None:
        try:
            barrier.wait()
            transitions.finish(run.id, attempt, RunStatus.COMPLETED)  # advances after its commit
        finally:
            connection.close()

    def advance() -> None:
        try:
            barrier.wait()
            advance_sweep(sweep.id)
        finally:
            connection.close()

    threads = [threading.Thread(target=end_one, args=pair) for pair in zip(running, attempts, strict=True)]
    threads += [threading.Thread(target=advance) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sweep.refresh_from_db()
    runs = sweep_runs(sweep)
    assert len(runs) == 6 and sweep.launched == 6 and sorted(sweep.run_ids) == [r.id for r in runs]
    assert sorted(r.config["model"]["n_layers"] for r in runs) == [1, 2, 3, 4, 5, 6]
    assert Run.objects.filter(sweep=sweep, status=RunStatus.QUEUED).count() == 3


def test_a_sweep_whose_creator_lost_the_member_role_fails_with_the_reason(
    alice, bob, project, sent_tasks, django_capture_on_commit_callbacks
):
    from webapp.accounts.models import Membership, Role

    Membership.objects.filter(user=bob, team=project.team).update(role=Role.MEMBER)
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=bob, project=project, spec=spec(concurrency=1))
        attempt = start(sweep_runs(sweep)[0])
    Membership.objects.filter(user=bob, team=project.team).update(role=Role.VIEWER)
    with django_capture_on_commit_callbacks(execute=True):
        transitions.finish(sweep_runs(sweep)[0].id, attempt, RunStatus.COMPLETED)
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.FAILED and "Trial 2 could not start" in sweep.error
    assert "member role" in sweep.error
    assert len(sweep_runs(sweep)) == 1


def test_rung_value_is_the_last_at_the_step_or_else_the_first_after(run):
    from webapp.sweeps.services import rung_value

    assert rung_value(run, "val/loss", 10) is None
    upsert_points(run.id, [Point("val/loss", 15, 2.0, 0.0), Point("val/loss", 30, 1.0, 0.0)])
    assert rung_value(run, "val/loss", 10) == 2.0  # logged less often than the rung
    upsert_points(run.id, [Point("val/loss", 5, 3.0, 0.0), Point("val/loss", 10, 2.5, 0.0)])
    assert rung_value(run, "val/loss", 10) == 2.5
    assert rung_value(run, "val/loss", 20) == 2.0
