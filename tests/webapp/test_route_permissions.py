"""Every URL pattern, web and API, against a permission matrix: who gets what, method by method.

The patterns come from the URL resolver, so a new route without an entry here fails
``test_every_route_has_an_entry``. Each entry builds the URL for objects of team A and
says what Alice (admin of team A), Bob (viewer of team A), Charlie (admin of team B)
and an anonymous visitor get for each method:

- another team's object is a 404 (never a 403: that would confirm it exists);
- a viewer's write is a 403, and so is opening a write form;
- anonymous is sent to the login page (web) or gets a 401 (API and the SSE stream);
- public routes (login, logout, the vendored Plotly file, the home redirect) say so.

Every request by someone other than Alice must leave team A's data as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from modelcore.config import resolve
from webapp.accounts.models import ApiToken, Invite, Membership, Role, Team
from webapp.accounts.services import create_api_token, create_invite
from webapp.alerts.models import AlertFiring, AlertRule
from webapp.annotations.models import NoteRevision, RunTag
from webapp.evals.models import EvalJob, EvalStatus, Report
from webapp.projects.models import Project
from webapp.runs.models import Checkpoint, Run, RunStatus
from webapp.samples.models import SampleJob, SampleKind, SampleStatus
from webapp.sweeps.models import Sweep, SweepStatus

LOGIN = "login"  # a redirect to the login page
PEOPLE = ("alice", "bob", "charlie", "anonymous")


@dataclass(frozen=True)
class Access:
    """The status each person gets; LOGIN for a redirect to the login page."""

    alice: int
    bob: int
    charlie: int
    anonymous: int | str


@dataclass(frozen=True)
class Route:
    kwargs: Callable[[dict], dict[str, Any]]
    methods: dict[str, Access]
    query: Callable[[dict], str] = lambda w: ""
    body: Callable[[dict], dict[str, Any]] = lambda w: {}
    public: bool = False
    api: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # People whose request may change team A's data: their own membership (leaving, joining).
    may_change: tuple[str, ...] = ()


def web_read(alice: int = 200) -> Access:
    return Access(alice, alice, 404, LOGIN)


def web_write(alice: int) -> Access:
    """A form or an action: Bob is a viewer (403), Charlie is in another team (404)."""
    return Access(alice, 403, 404, LOGIN)


def api_read() -> Access:
    return Access(200, 200, 404, 401)


def api_write(alice: int) -> Access:
    return Access(alice, 403, 404, 401)


def project(w: dict) -> dict:
    return {"project_id": w["project"].id}


def run(w: dict) -> dict:
    return {"run_id": w["run"].id}


def job(w: dict) -> dict:
    return {"job_id": w["job"].id}


def report(w: dict) -> dict:
    return {"report_id": w["report"].id}


def sweep(w: dict) -> dict:
    return {"sweep_id": w["sweep"].id}


def none(w: dict) -> dict:
    return {}


def team(w: dict) -> dict:
    return {"team_id": w["team"].id}


def invite(w: dict) -> dict:
    return {"team_id": w["team"].id, "invite_id": w["invite"].id}


def member(who: Callable[[dict], int]) -> Callable[[dict], dict]:
    return lambda w: {"team_id": w["team"].id, "user_id": who(w)}


def alice_id(w: dict) -> int:
    return w["people"]["alice"].id


def bob_id(w: dict) -> int:
    return w["people"]["bob"].id


def alice_token(w: dict) -> dict:
    return {"token_id": w["alice_token"].id}


def compared(w: dict) -> str:
    return f"run={w['run'].id}&run={w['run2'].id}"


def alert_rule(w: dict) -> dict:
    return {"rule_id": w["rule"].id}


MATRIX: dict[str, Route] = {
    # --- public ------------------------------------------------------------------
    # Everyone signed in has a home page of their own teams; a visitor is sent to log in.
    ":home": Route(none, {"GET": Access(200, 200, 200, LOGIN)}),
    # A logged-in visitor is sent on to the projects; the form re-renders with its errors.
    ":login": Route(
        none, {"GET": Access(302, 302, 302, 200), "POST": Access(302, 302, 302, 200)}, public=True
    ),
    # Logging out ends on the login page, for everyone.
    ":logout": Route(none, {"POST": Access(LOGIN, LOGIN, LOGIN, LOGIN)}, public=True),
    ":plotly_js": Route(none, {"GET": Access(200, 200, 200, 200)}, public=True),
    ":plotly_basic_js": Route(none, {"GET": Access(200, 200, 200, 200)}, public=True),
    # --- projects ----------------------------------------------------------------
    "projects:list": Route(
        none,
        # Charlie names team A: not among his choices, a form error. Bob may launch in no
        # team, so the form offers none and his project goes to a personal team, not A.
        {"GET": Access(200, 200, 200, LOGIN), "POST": Access(302, 302, 400, LOGIN)},
        body=lambda w: {"name": "new", "team": w["team"].id, "description": ""},
    ),
    "projects:detail": Route(project, {"GET": web_read()}),
    "projects:delete": Route(project, {"GET": web_write(200), "POST": web_write(302)}),
    "projects:runs_json": Route(project, {"GET": web_read()}),
    # An EventSource cannot follow a redirect to a login page: 401.
    "projects:runs_stream": Route(project, {"GET": Access(200, 200, 404, 401)}),
    # --- runs --------------------------------------------------------------------
    "runs:new": Route(project, {"GET": web_write(200), "POST": web_write(400)}),
    "runs:compare": Route(project, {"GET": web_read()}, query=compared),
    "runs:compare_series": Route(
        project, {"GET": web_read()}, query=lambda w: compared(w) + "&key=train/loss"
    ),
    "runs:detail": Route(run, {"GET": web_read()}),
    "runs:series": Route(run, {"GET": web_read()}),
    "runs:series_csv": Route(run, {"GET": web_read()}, query=lambda w: "key=train/loss"),
    "runs:samples": Route(run, {"GET": web_read()}),
    "runs:checkpoints": Route(run, {"GET": web_read()}),
    # The world's run has no files on disk: a 404 for everyone who may see it.
    "runs:file": Route(lambda w: {**run(w), "name": "config.json"}, {"GET": Access(404, 404, 404, LOGIN)}),
    "runs:checkpoint_download": Route(
        lambda w: {**run(w), "step": 100}, {"GET": Access(404, 404, 404, LOGIN)}
    ),
    # Sampling and export (webapp.samples): members start jobs (the world's checkpoint is not on
    # disk: a 400 naming the step), viewers read them; the world's export job left no files (404).
    "runs:sample_start": Route(run, {"POST": web_write(400)}, body=lambda w: {"step": 20, "prompt": "Hi"}),
    "runs:checkpoint_export": Route(lambda w: {**run(w), "step": 20}, {"POST": web_write(400)}),
    "runs:sample_jobs": Route(run, {"GET": web_read()}),
    "runs:sample_status": Route(lambda w: {"job_id": w["sample_job"].id}, {"GET": web_read()}),
    "runs:sample_stream": Route(
        lambda w: {"job_id": w["sample_job"].id}, {"GET": Access(200, 200, 404, 401)}
    ),
    # The world's sample job has ended: Alice's cancel is refused with a field error.
    "runs:sample_cancel": Route(lambda w: {"job_id": w["sample_job"].id}, {"POST": web_write(400)}),
    "runs:sample_archive": Route(
        lambda w: {"job_id": w["sample_job"].id}, {"GET": Access(404, 404, 404, LOGIN)}
    ),
    "runs:compare_series_csv": Route(
        project, {"GET": web_read()}, query=lambda w: compared(w) + "&key=train/loss"
    ),
    "runs:cancel": Route(run, {"POST": web_write(302)}),
    # The world's run is completed: Alice's resume or restart is refused on the run page (302).
    "runs:resume": Route(run, {"POST": web_write(302)}),
    "runs:restart": Route(run, {"POST": web_write(302)}),
    "runs:archive": Route(run, {"POST": web_write(302)}),
    "runs:unarchive": Route(run, {"POST": web_write(302)}),
    # Deleting is a team admin's: Bob (a viewer) sees neither the confirmation nor the delete.
    "runs:delete": Route(run, {"GET": web_write(200), "POST": web_write(302)}),
    # An EventSource cannot follow a redirect to a login page: 401.
    "runs:stream": Route(run, {"GET": Access(200, 200, 404, 401)}),
    # --- tags and notes (runs table and run page) --------------------------------
    # Alice's empty tag request names the field it misses; her empty note is saved.
    "annotations:tags": Route(run, {"POST": web_write(400)}),
    "annotations:note": Route(run, {"POST": web_write(302)}, body=lambda w: {"text": "*why*"}),
    # --- alerts -------------------------------------------------------------------
    # Alice's empty rule names the field it misses.
    "alerts:project": Route(project, {"GET": web_read(), "POST": web_write(400)}),
    "alerts:delete": Route(alert_rule, {"POST": web_write(302)}),
    "api:project_alerts": Route(
        project,
        {"GET": api_read(), "POST": api_write(201)},
        body=lambda w: {"kind": "above", "key": "val/loss", "threshold": 4.0, "after_step": 10},
        api=True,
    ),
    "api:project_alert": Route(
        lambda w: {**project(w), **alert_rule(w)}, {"DELETE": api_write(204)}, api=True
    ),
    "api:run_alerts": Route(run, {"GET": api_read()}, api=True),
    # --- fleet: hosts are the operator's, seen by everyone signed in; quotas are staff's ---
    "fleet:fleet": Route(none, {"GET": Access(200, 200, 200, LOGIN)}),
    "fleet:set_quota": Route(team, {"POST": Access(403, 403, 403, LOGIN)}),
    "fleet:data": Route(none, {"GET": Access(200, 200, 200, LOGIN)}),
    "fleet:stream": Route(none, {"GET": Access(200, 200, 200, 401)}),
    # --- sweeps: the world's sweep has ended, so a cancel changes nothing; an empty form is a 400 ---
    "sweeps:project": Route(project, {"GET": web_read()}),
    "sweeps:new": Route(project, {"GET": web_write(200), "POST": web_write(400)}),
    "sweeps:detail": Route(sweep, {"GET": web_read()}),
    "sweeps:data": Route(sweep, {"GET": web_read()}),
    "sweeps:stream": Route(sweep, {"GET": Access(200, 200, 404, 401)}),
    "sweeps:cancel": Route(sweep, {"POST": web_write(302)}),
    # --- evals -------------------------------------------------------------------
    "evals:project": Route(project, {"GET": web_read()}),
    "evals:new": Route(project, {"GET": web_write(200), "POST": web_write(400)}),
    "evals:upload_tasks": Route(project, {"GET": web_write(200), "POST": web_write(400)}),
    "evals:import": Route(project, {"GET": web_write(200), "POST": web_write(400)}),
    "evals:report_new": Route(project, {"POST": web_write(400)}),
    "evals:run_evaluate": Route(run, {"GET": web_write(200), "POST": web_write(400)}),
    "evals:run_panel": Route(run, {"GET": web_read()}),
    "evals:job": Route(job, {"GET": web_read()}),
    "evals:job_status": Route(job, {"GET": web_read()}),
    # Like the run stream: an EventSource cannot follow a redirect to a login page.
    "evals:job_stream": Route(job, {"GET": Access(200, 200, 404, 401)}),
    "evals:job_cancel": Route(job, {"POST": web_write(302)}),
    "evals:job_results": Route(job, {"GET": web_read()}),
    "evals:report": Route(report, {"GET": web_read()}),
    "evals:report_edit": Route(report, {"GET": web_write(200), "POST": web_write(400)}),
    "evals:report_delete": Route(report, {"POST": web_write(302)}),
    "evals:disagreements": Route(report, {"GET": web_read()}),
    "evals:report_export": Route(lambda w: {**report(w), "fmt": "csv"}, {"GET": web_read()}),
    # MLflow's API (webapp.mlflow_api) takes a bearer token only: a session cookie is a 401
    # for everyone (a cross-site form cannot log into a run). Its own tests: test_mlflow_api.py.
    "mlflow:endpoint": Route(lambda w: {"path": "runs/search"}, {"POST": Access(401, 401, 401, 401)}),
    "mlflow_ajax:endpoint": Route(lambda w: {"path": "runs/search"}, {"POST": Access(401, 401, 401, 401)}),
    # --- API ---------------------------------------------------------------------
    "api:projects": Route(
        none,
        # Everyone lists their own projects; creating one in team A is Alice's alone.
        # Charlie naming team A's id gets a field error, as for a team that does not exist.
        {"GET": Access(200, 200, 200, 401), "POST": Access(201, 403, 400, 401)},
        body=lambda w: {"name": "new", "team": w["team"].id},
        api=True,
    ),
    # Team A's project has only ended runs: Alice (admin) deletes it; a viewer may not.
    "api:project": Route(project, {"GET": api_read(), "DELETE": api_write(204)}, api=True),
    "api:project_runs": Route(
        project, {"GET": api_read(), "POST": api_write(201)}, body=lambda w: {"preset": "tiny-cpu"}, api=True
    ),
    "api:run": Route(run, {"GET": api_read(), "DELETE": api_write(204)}, api=True),
    # The world's run is launched: its points come from its trainer, not the API (400, after the role).
    "api:run_metrics": Route(
        run, {"GET": api_read(), "POST": api_write(400)}, query=lambda w: "key=train/loss", api=True
    ),
    "api:run_events": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_logs": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_heartbeat": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_status": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_params": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_cancel": Route(run, {"POST": api_write(200)}, api=True),
    # A completed run is not resumed: a 400 naming its status, after the role check.
    "api:run_resume": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_restart": Route(run, {"POST": api_write(400)}, api=True),
    "api:run_archive": Route(run, {"POST": api_write(200)}, api=True),
    "api:run_unarchive": Route(run, {"POST": api_write(200)}, api=True),
    # Validates a config for whoever asks; it reads and writes nothing of any team.
    "api:config_estimate": Route(
        none, {"POST": Access(200, 200, 200, 401)}, body=lambda w: {"preset": "tiny-cpu"}, api=True
    ),
    "api:teams": Route(
        none, {"GET": Access(200, 200, 200, 401), "POST": Access(400, 400, 400, 401)}, api=True
    ),
    "api:project_evals": Route(
        project,
        {"GET": api_read(), "POST": api_write(201)},
        body=lambda w: {"models": [f"ckpt:{w['run'].id}:20"], "tasks": ["rw_arith"]},
        api=True,
    ),
    "api:eval_job": Route(job, {"GET": api_read()}, api=True),
    "api:eval_job_cancel": Route(job, {"POST": api_write(200)}, api=True),
    # An empty spec is a 400 naming the search method, after the role check.
    "api:project_sweeps": Route(project, {"GET": api_read(), "POST": api_write(400)}, api=True),
    "api:sweep": Route(sweep, {"GET": api_read()}, api=True),
    "api:sweep_cancel": Route(sweep, {"POST": api_write(200)}, api=True),
    "api:run_tags": Route(
        run, {"GET": api_read(), "POST": api_write(200)}, body=lambda w: {"tags": ["baseline"]}, api=True
    ),
    "api:run_note": Route(
        run, {"GET": api_read(), "POST": api_write(200)}, body=lambda w: {"text": "# note"}, api=True
    ),
    # --- teams, invites, tokens, audit log (issue 11) -------------------------------
    # An empty name is a field error for everyone; creating a team is anyone's right.
    "accounts:teams": Route(
        none, {"GET": Access(200, 200, 200, LOGIN), "POST": Access(400, 400, 400, LOGIN)}
    ),
    "accounts:team": Route(team, {"GET": web_read()}),
    "accounts:invite_create": Route(
        team, {"POST": web_write(200)}, body=lambda w: {"role": "member", "expires_in_days": 7}
    ),
    "accounts:invite_revoke": Route(invite, {"POST": web_write(302)}),
    "accounts:member_role": Route(
        member(bob_id), {"POST": web_write(302)}, body=lambda w: {"role": "member"}
    ),
    # Alice removing herself, the last admin, is refused with the reason (400).
    "accounts:member_remove": Route(member(alice_id), {"POST": web_write(400)}),
    # Bob may leave (his own membership); Alice, the last admin, may not.
    "accounts:team_leave": Route(team, {"POST": Access(400, 302, 404, LOGIN)}, may_change=("bob",)),
    # Alice administers no other team to move the project to: a form error.
    "accounts:project_move": Route(
        lambda w: {**team(w), **project(w)},
        {"POST": web_write(400)},
        body=lambda w: {"team": w["other_team"].id},
    ),
    "accounts:team_audit": Route(team, {"GET": web_write(200)}),
    "accounts:team_rename": Route(team, {"POST": web_write(302)}, body=lambda w: {"name": "ml renamed"}),
    # Team A still has a project: the delete is refused with its name (400); the GET asks first.
    "accounts:team_delete": Route(team, {"GET": web_write(200), "POST": web_write(400)}),
    # The link itself is the permission: Charlie joins team A with it, after which it is used up (410).
    # Bob is already a member (400); an anonymous visitor sees the sign-up form.
    "accounts:invite": Route(
        lambda w: {"token": w["invite_secret"]},
        {"GET": Access(200, 200, 200, 200), "POST": Access(410, 400, 302, 410)},
        may_change=("charlie",),
    ),
    # Sign-up is through invites only unless RUNWRIGHT_OPEN_SIGNUP=1; signed-in people go home.
    "accounts:signup": Route(
        none, {"GET": Access(302, 302, 302, 403), "POST": Access(302, 302, 302, 403)}, public=True
    ),
    # Each person manages their own tokens only.
    "accounts:tokens": Route(
        none,
        {"GET": Access(200, 200, 200, LOGIN), "POST": Access(200, 200, 200, LOGIN)},
        body=lambda w: {"name": "ci"},
    ),
    "accounts:token_revoke": Route(alice_token, {"POST": Access(302, 404, 404, LOGIN)}),
    "api:team": Route(
        team,
        {"GET": api_read(), "PATCH": api_write(200), "DELETE": api_write(400)},
        body=lambda w: {"name": "ml renamed"},
        api=True,
    ),
    "api:team_invites": Route(
        team,
        {"GET": Access(200, 403, 404, 401), "POST": Access(201, 403, 404, 401)},
        body=lambda w: {"role": "member"},
        api=True,
    ),
    "api:team_invite": Route(invite, {"DELETE": Access(204, 403, 404, 401)}, api=True),
    # A token that names no invite: a field error for anyone signed in.
    "api:invite_accept": Route(
        lambda w: {"token": "inv_nothing"}, {"POST": Access(400, 400, 400, 401)}, api=True
    ),
    "api:team_members": Route(team, {"GET": api_read()}, api=True),
    # Alice is the last admin: she can neither demote nor remove herself (400).
    "api:team_member": Route(
        member(alice_id),
        {"PATCH": Access(400, 403, 404, 401), "DELETE": Access(400, 403, 404, 401)},
        body=lambda w: {"role": "member"},
        api=True,
    ),
    "api:team_audit": Route(team, {"GET": Access(200, 403, 404, 401)}, api=True),
    "api:tokens": Route(
        none,
        {"GET": Access(200, 200, 200, 401), "POST": Access(201, 201, 201, 401)},
        body=lambda w: {"name": "ci"},
        api=True,
    ),
    "api:token": Route(alice_token, {"DELETE": Access(204, 404, 404, 401)}, api=True),
    # --- the API's schema and docs page: public, they describe the API and hold no data ---
    "api:openapi_json": Route(none, {"GET": Access(200, 200, 200, 200)}, public=True, api=True),
    "api:docs": Route(none, {"GET": Access(200, 200, 200, 200)}, public=True, api=True),
    # --- fleet (read-only): hosts are seen by everyone signed in, other teams' runs unnamed ---
    "api:fleet_hosts": Route(none, {"GET": Access(200, 200, 200, 401)}, api=True),
    # --- sampling and export over the API: the world's checkpoint is not on disk (400 naming
    # the step, after the role); the world's export job has ended (a cancel is a 400) ---
    "api:run_samples": Route(
        run,
        {"GET": api_read(), "POST": api_write(400)},
        body=lambda w: {"step": 20, "prompt": "Hi"},
        api=True,
    ),
    "api:run_exports": Route(run, {"POST": api_write(400)}, body=lambda w: {"step": 20}, api=True),
    "api:sample_job": Route(lambda w: {"job_id": w["sample_job"].id}, {"GET": api_read()}, api=True),
    # The world's export job left no files: a 404 for everyone who may see it.
    "api:sample_job_archive": Route(
        lambda w: {"job_id": w["sample_job"].id}, {"GET": Access(404, 404, 404, 401)}, api=True
    ),
    "api:sample_job_cancel": Route(
        lambda w: {"job_id": w["sample_job"].id}, {"POST": api_write(400)}, api=True
    ),
}


def _route_names() -> set[str]:
    names = set()

    def walk(patterns, namespace: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or namespace)
            elif isinstance(p, URLPattern):
                assert p.name, f"the pattern {p.pattern} has no name: name it and add it to MATRIX"
                names.add(f"{namespace}:{p.name}")

    walk(get_resolver().url_patterns, "")
    return names


def test_every_route_has_an_entry():
    routes = _route_names()
    assert sorted(routes - set(MATRIX)) == [], "routes with no entry in the permission matrix"
    assert sorted(set(MATRIX) - routes) == [], "matrix entries for routes that no longer exist"
    assert all(r.api == name.startswith("api:") for name, r in MATRIX.items())


@pytest.fixture
def world(settings, tmp_path, team, other_team, alice, bob, charlie, project) -> dict:
    """Team A's objects: a finished run with a checkpoint, a finished eval job with results, a report."""
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"
    config = resolve("tiny-cpu").to_dict()
    made = {"project": project, "team": team, "other_team": other_team}
    for key in ("run", "run2"):
        made[key] = Run.objects.create(
            project=project,
            name=key,
            preset="tiny-cpu",
            config=config,
            status=RunStatus.COMPLETED,
            created_by=alice,
        )
    Checkpoint.objects.create(run=made["run"], step=20, path="checkpoints/step_000020")
    made["sample_job"] = SampleJob.objects.create(
        run=made["run"], checkpoint_step=20, kind=SampleKind.EXPORT, status=SampleStatus.COMPLETED
    )
    results = {
        "results": {"rw_arith": {"alias": "rw_arith", "acc,none": 0.5, "acc_stderr,none": 0.1}},
        "n-shot": {"rw_arith": 0},
        "higher_is_better": {"rw_arith": {"acc": True}},
        "versions": {"rw_arith": 1.0},
        "config": {"model": "hf"},
    }
    made["job"] = EvalJob.objects.create(
        project=project,
        source="checkpoint",
        run=made["run"],
        checkpoint_step=20,
        tasks=["rw_arith"],
        status=EvalStatus.COMPLETED,
        progress=1.0,
        results=results,
    )
    made["job"].job_dir.mkdir(parents=True)
    made["job"].results_file.write_text(json.dumps(results))
    made["report"] = Report.objects.create(project=project, name="report", created_by=alice)
    made["report"].jobs.add(made["job"])
    made["rule"] = AlertRule.objects.create(project=project, kind="failed")
    made["people"] = {"alice": alice, "bob": bob, "charlie": charlie, "anonymous": None}
    made["invite"], made["invite_secret"] = create_invite(actor=alice, team=team, role=Role.MEMBER)
    create_api_token(alice, "world")
    made["alice_token"] = ApiToken.objects.get(user=alice, name="world")
    made["sweep"] = Sweep.objects.create(
        project=project,
        name="sweep",
        created_by=alice,
        status=SweepStatus.COMPLETED,
        method="grid",
        parameters={"optim.lr": {"values": [0.001]}},
        trials=[{"optim.lr": 0.001}],
        concurrency=1,
        metric="val/loss",
        goal="min",
    )
    return made


def team_a_state(team: Team) -> dict[str, list]:
    """Everything of team A that a request by someone else must not change."""
    rows = {
        "memberships": Membership.objects.filter(team=team),
        "projects": Project.objects.filter(team=team),
        "runs": Run.objects.filter(project__team=team),
        "checkpoints": Checkpoint.objects.filter(run__project__team=team),
        "jobs": EvalJob.objects.filter(project__team=team),
        "reports": Report.objects.filter(project__team=team),
        "run_tags": RunTag.objects.filter(run__project__team=team),
        "notes": NoteRevision.objects.filter(run__project__team=team),
        "alert_rules": AlertRule.objects.filter(project__team=team),
        "sweeps": Sweep.objects.filter(project__team=team),
        "alert_firings": AlertFiring.objects.filter(run__project__team=team),
        "invites": Invite.objects.filter(team=team),
        "sample_jobs": SampleJob.objects.filter(run__project__team=team),
    }
    state = {name: sorted(qs.values(), key=lambda r: r["id"]) for name, qs in rows.items()}
    state["report_jobs"] = sorted(
        Report.jobs.through.objects.filter(report__project__team=team).values_list()
    )
    return state


def request_as(client, world: dict, person: str, name: str, method: str):
    route = MATRIX[name]
    url = reverse(name.lstrip(":"), kwargs=route.kwargs(world))
    query = route.query(world)
    path = f"{url}?{query}" if query else url
    user = world["people"][person]
    body = route.body(world) if method in ("POST", "PATCH") else {}
    if route.api:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(user)}"} if user else {}
        if method == "GET":
            return client.get(path, **headers)
        if method == "DELETE":
            return client.delete(path, **headers)
        if method == "PATCH":
            return client.patch(path, json.dumps(body), content_type="application/json", **headers)
        return client.post(path, json.dumps(body), content_type="application/json", **headers)
    if user is not None:
        client.force_login(user)
    return client.get(path) if method == "GET" else client.post(path, body)


@pytest.mark.parametrize(
    ("name", "method"), [(name, method) for name, route in MATRIX.items() for method in route.methods]
)
def test_route_answers_each_person_as_the_matrix_says(client, world, name, method):
    wrong = []
    # Alice last: she is the only one whose request may change team A's data.
    for person in ("bob", "charlie", "anonymous", "alice"):
        client.logout()
        before = team_a_state(world["team"])
        response = request_as(client, world, person, name, method)
        expected = getattr(MATRIX[name].methods[method], person)
        got: int | str = response.status_code
        if got == 302 and response["Location"].startswith(reverse("login")):
            got = LOGIN
        if got != expected:
            wrong.append(f"{person}: {got}, expected {expected}: {response.content[:200]!r}")
        if not response.streaming:
            assert b"Traceback" not in response.content
        if MATRIX[name].api and response.status_code >= 400:
            assert response.json()["error" if response.status_code != 400 else "errors"]
        if (
            person != "alice"
            and person not in MATRIX[name].may_change
            and team_a_state(world["team"]) != before
        ):
            wrong.append(f"{person}'s request changed team A's data")
    assert not wrong, f"{method} {name}:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        (name, method)
        for name, route in MATRIX.items()
        if not route.public
        for method in ("GET", "POST")
        if method not in route.methods
    ],
)
def test_methods_outside_the_matrix_are_refused(client, world, name, method):
    # The matrix is the whole surface of a route: a method it does not list is a 405.
    route = MATRIX[name]
    url = reverse(name.lstrip(":"), kwargs=route.kwargs(world))
    response = request_as(client, world, "alice", name, method) if route.api else None
    if response is None:
        client.force_login(world["people"]["alice"])
        response = client.get(url) if method == "GET" else client.post(url)
    assert response.status_code == 405


def test_alice_cannot_create_a_project_in_charlies_team_by_its_id(api, client_for, alice, other_team):
    response = api(alice, "POST", "/api/v1/projects", {"name": "planted", "team": other_team.id})
    assert response.status_code == 400 and "team" in response.json()["errors"]
    web = client_for(alice).post("/projects/", {"name": "planted", "team": other_team.id})
    assert web.status_code == 400 and b"Select a valid choice" in web.content
    assert not Project.objects.filter(name="planted").exists()
    assert not Project.objects.filter(team=other_team).exists()


def test_a_viewer_who_names_team_a_on_the_web_gets_a_personal_project(client_for, bob, team):
    # Bob may launch nowhere, so the form offers no team: his project lands in a team of his own.
    response = client_for(bob).post("/projects/", {"name": "mine", "team": team.id})
    assert response.status_code == 302
    created = Project.objects.get(name="mine")
    assert created.team != team and created.team.memberships.get().user == bob
    assert created.team.memberships.get().role == Role.ADMIN
