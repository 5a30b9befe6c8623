"""Pages: visibility (404 for another team), roles (viewers read, members launch), field errors, reports, exports."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from eval_fixtures import mc_samples, results_payload, write_results_file

from webapp.evals.models import EvalJob, EvalStatus, ModelSource, Report

pytestmark = pytest.mark.usefixtures("data_dir")

DATA = Path(__file__).with_name("data")
LM_EVAL_SAMPLES = "samples_rw_facts_2026-11-25T20-17-36.170579.jsonl"


def completed_job(project, run=None, step=None, scores=None, samples=None, label="", n_shot=0):
    job = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT if run else ModelSource.IMPORTED,
        run=run,
        checkpoint_step=step,
        label=label,
        tasks=list(scores),
        status=EvalStatus.COMPLETED,
        progress=1.0,
        results=results_payload(scores, n_shot=n_shot),
        has_samples=samples is not None,
    )
    if samples is not None:
        write_results_file(job, results_payload(scores, samples, n_shot=n_shot))
    return job


@pytest.fixture
def report(project, run, alice) -> Report:
    # A is right on 0..29, B on 0..9 only; both wrong on 30..39: McNemar 20 vs 0.
    a = completed_job(
        project,
        run,
        20,
        {"rw_arith": {"acc": 0.75, "acc_stderr": 0.07}, "rw_heldout_ppl": {"bits_per_byte": 2.5}},
        samples={"rw_arith": mc_samples([1] * 30 + [0] * 10)},
    )
    b = completed_job(
        project,
        run,
        40,
        {"rw_arith": {"acc": 0.25, "acc_stderr": 0.07}, "rw_heldout_ppl": {"bits_per_byte": 2.1}},
        samples={"rw_arith": mc_samples([1] * 10 + [0] * 30)},
    )
    c = completed_job(project, None, None, {"rw_arith": {"acc": 0.5, "acc_stderr": 0.08}}, label="pythia-70m")
    report = Report.objects.create(project=project, name="Arith sweep", created_by=alice)
    report.jobs.set([a, b, c])
    return report


URLS = [
    "/projects/{p}/evals/",
    "/projects/{p}/evals/new",
    "/projects/{p}/evals/tasks",
    "/projects/{p}/evals/import",
    "/runs/{r}/evaluate",
    "/evals/{j}/",
    "/evals/{j}/status",
    "/evals/{j}/results.json",
    "/reports/{rep}/",
    "/reports/{rep}/edit",
    "/reports/{rep}/disagreements",
    "/reports/{rep}/export.csv",
    "/reports/{rep}/export.json",
    "/reports/{rep}/export.html",
]


@pytest.mark.parametrize("url", URLS)
def test_charlie_gets_404_for_another_teams_eval_pages(client_for, charlie, project, run, report, url):
    job = report.jobs.first()
    response = client_for(charlie).get(url.format(p=project.id, r=run.id, j=job.id, rep=report.id))
    assert response.status_code == 404
    assert b"Traceback" not in response.content


@pytest.mark.parametrize(
    "url", ["/evals/{j}/cancel", "/reports/{rep}/delete", "/projects/{p}/reports/new", "/runs/{r}/evaluate"]
)
def test_charlie_cannot_post_to_another_teams_eval_objects(client_for, charlie, project, run, report, url):
    job = report.jobs.first()
    response = client_for(charlie).post(url.format(p=project.id, r=run.id, j=job.id, rep=report.id))
    assert response.status_code == 404
    assert Report.objects.filter(pk=report.pk).exists()


@pytest.mark.parametrize(
    "url", ["/projects/{p}/evals/", "/evals/{j}/", "/reports/{rep}/", "/reports/{rep}/export.csv"]
)
def test_viewer_reads_eval_pages(client_for, bob, project, report, url):
    job = report.jobs.first()
    assert client_for(bob).get(url.format(p=project.id, j=job.id, rep=report.id)).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/projects/{p}/evals/new",
        "/projects/{p}/evals/tasks",
        "/projects/{p}/evals/import",
        "/runs/{r}/evaluate",
        "/reports/{rep}/edit",
    ],
)
def test_viewer_cannot_open_launch_forms(client_for, bob, project, run, report, url):
    response = client_for(bob).get(url.format(p=project.id, r=run.id, rep=report.id))
    assert response.status_code == 403
    assert b"member role" in response.content


def test_viewer_cannot_launch_or_delete(client_for, bob, project, run, report):
    client = client_for(bob)
    response = client.post(
        f"/projects/{project.id}/evals/new", {"models": [f"ckpt:{run.id}:20"], "tasks": ["rw_arith"]}
    )
    assert response.status_code == 403
    client.post(f"/reports/{report.id}/delete")
    assert Report.objects.filter(pk=report.pk).exists()
    assert EvalJob.objects.filter(status=EvalStatus.QUEUED).count() == 0


def test_member_launches_from_the_form_and_lands_on_the_job_page(client_for, alice, project, run):
    response = client_for(alice).post(
        f"/projects/{project.id}/evals/new",
        {"models": [f"ckpt:{run.id}:40"], "tasks": ["rw_arith", "rw_facts"], "limit": "5"},
    )
    job = EvalJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/evals/{job.id}/"
    assert (job.run, job.checkpoint_step, job.tasks, job.limit) == (run, 40, ["rw_arith", "rw_facts"], 5)
    page = client_for(alice).get(f"/evals/{job.id}/")
    assert b'id="progress-bar"' in page.content and b"job.js" in page.content


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tasks": ["rw_arith"]}, b"This field is required"),
        ({"models": ["ckpt:999:20"], "tasks": ["rw_arith"]}, b"not one of the available choices"),
        ({"models": ["{ckpt}"], "tasks": ["nope"]}, b"not one of the available choices"),
        ({"models": ["{ckpt}"], "tasks": ["rw_arith"], "limit": "-3"}, b"greater than or equal to 1"),
        ({"models": ["{ckpt}"], "tasks": ["rw_arith"], "num_fewshot": "lots"}, b"Enter a whole number"),
    ],
)
def test_bad_eval_form_input_shows_field_errors(client_for, alice, project, run, data, field):
    data = {
        k: [v.format(ckpt=f"ckpt:{run.id}:20") for v in vs] if isinstance(vs, list) else vs
        for k, vs in data.items()
    }
    response = client_for(alice).post(f"/projects/{project.id}/evals/new", data)
    assert response.status_code == 400
    assert field in response.content
    assert not EvalJob.objects.exists()


def test_run_page_form_evaluates_a_checkpoint(client_for, alice, run):
    response = client_for(alice).post(f"/runs/{run.id}/evaluate", {"step": "20", "tasks": ["rw_facts"]})
    job = EvalJob.objects.get()
    assert response["Location"] == f"/evals/{job.id}/" and job.checkpoint_step == 20
    bad = client_for(alice).post(f"/runs/{run.id}/evaluate", {"step": "21", "tasks": ["rw_facts"]})
    assert bad.status_code == 400 and b"not one of the available choices" in bad.content


def test_run_eval_panel_include_renders_for_members_and_viewers(rf, alice, bob, run):
    from django.template import Context, Template

    template = Template("{% load evals %}{% run_eval_panel run %}")
    for user, has_form in ((alice, True), (bob, False)):
        request = rf.get("/")
        request.user = user
        html = template.render(Context({"run": run, "request": request}))
        assert 'id="run-evals"' in html
        assert ('id="run-eval-form"' in html) is has_form


def test_job_status_json_and_cancel(client_for, alice, project, run):
    job = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=20,
        tasks=["rw_arith"],
        status=EvalStatus.RUNNING,
        progress=0.42,
        current_task="rw_arith",
    )
    state = client_for(alice).get(f"/evals/{job.id}/status").json()
    assert state["progress"] == 0.42 and state["is_active"] and state["current_task"] == "rw_arith"
    client_for(alice).post(f"/evals/{job.id}/cancel")
    job.refresh_from_db()
    assert job.cancel_requested and job.status == EvalStatus.RUNNING  # the worker stops it


def test_report_table_marks_best_and_runs_paired_tests(client_for, bob, report):
    a, b, c = report.jobs.order_by("id")
    response = client_for(bob).get(f"/reports/{report.id}/?a={a.id}&b={b.id}")
    html = response.content.decode()
    assert response.status_code == 200
    assert "0.7500 ± 0.0700" in html and "0.2500 ± 0.0700" in html
    # acc: higher is better -> A; bits_per_byte: lower is better -> B.
    context = response.context
    rows = {r.task: r for r in context["data"].tasks}
    assert [cell.best for cell in rows["rw_arith"].cells] == [True, False, False]
    assert [cell.best for cell in rows["rw_heldout_ppl"].cells] == [False, True, False]
    pair = {p.task: p for p in context["pair"]}
    assert pair["rw_arith"].mcnemar.only_a == 20 and pair["rw_arith"].mcnemar.only_b == 0
    assert pair["rw_arith"].mcnemar.p_value < 1e-5
    assert pair["rw_arith"].bootstrap.difference == pytest.approx(0.5)
    assert "per-sample records are missing" in pair["rw_heldout_ppl"].note
    assert 'id="report-data"' in html and "report.js" in html and "/vendor/plotly-basic.min.js" in html
    payload = json.loads(html.split('id="report-data" type="application/json">')[1].split("</script>")[0])
    assert payload["steps"][0]["steps"] == [20, 40] and payload["steps"][0]["values"] == [0.75, 0.25]


def test_bad_pair_parameters_fall_back_instead_of_failing(client_for, alice, report):
    response = client_for(alice).get(f"/reports/{report.id}/?a=abc&b=999999")
    assert response.status_code == 200 and response.context["pair"] is not None


def test_disagreements_list_samples_where_models_differ(client_for, alice, report):
    a, b, _ = report.jobs.order_by("id")
    response = client_for(alice).get(f"/reports/{report.id}/disagreements?a={a.id}&b={b.id}&task=rw_arith")
    assert response.status_code == 200
    assert response.context["differing"] == 20 and response.context["shared"] == 40
    assert [s["doc_id"] for s in response.context["samples"]] == list(range(10, 30))
    assert client_for(alice).get(f"/reports/{report.id}/disagreements?task=nope").status_code == 404


def test_csv_export_has_every_metric_with_best_flags(client_for, alice, report):
    response = client_for(alice).get(f"/reports/{report.id}/export.csv")
    assert response["Content-Disposition"] == 'attachment; filename="arith-sweep.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    acc = [r for r in rows if r["task"] == "rw_arith" and r["metric"] == "acc"]
    assert [(r["step"], r["value"], r["best"]) for r in acc] == [
        ("20", "0.75", "True"),
        ("40", "0.25", "False"),
        ("", "0.5", "False"),
    ]


def test_json_export_holds_table_significance_and_raw_results(client_for, alice, report):
    a, b, _ = report.jobs.order_by("id")
    data = json.loads(client_for(alice).get(f"/reports/{report.id}/export.json?a={a.id}&b={b.id}").content)
    assert data["report"]["name"] == "Arith sweep"
    assert data["significance"]["a"] == a.id and data["significance"]["tasks"][0]["mcnemar"]["only_a"] == 20
    assert set(data["results"]) == {str(a.id), str(b.id), str(report.jobs.order_by("id")[2].id)}


def test_html_export_is_self_contained(client_for, alice, report):
    html = client_for(alice).get(f"/reports/{report.id}/export.html").content.decode()
    assert "<script src=" not in html and '<link rel="stylesheet"' not in html
    assert "Plotly" in html and len(html) > 1_000_000  # plotly.min.js is inlined
    assert "Arith sweep" in html and "0.7500 ± 0.0700" in html
    assert client_for(alice).get(f"/reports/{report.id}/export.pdf").status_code == 404


def test_report_create_edit_and_admin_delete(client_for, alice, project, report):
    a = report.jobs.order_by("id").first()
    client = client_for(alice)
    response = client.post(f"/projects/{project.id}/reports/new", {"name": "Only A", "jobs": [str(a.id)]})
    new = Report.objects.get(name="Only A")
    assert response["Location"] == f"/reports/{new.id}/"
    bad = client.post(f"/projects/{project.id}/reports/new", {"name": "", "jobs": []})
    assert bad.status_code == 400 and b"This field is required" in bad.content
    client.post(f"/reports/{new.id}/edit", {"name": "Renamed", "jobs": [str(a.id)]})
    new.refresh_from_db()
    assert new.name == "Renamed"
    client.post(f"/reports/{new.id}/delete")
    assert not Report.objects.filter(pk=new.pk).exists()


def test_member_who_is_not_admin_cannot_delete_reports(client_for, project, report):
    from people import make_user

    from webapp.accounts.models import Role

    dana = make_user("dana", project.team, Role.MEMBER)
    client_for(dana).post(f"/reports/{report.id}/delete", follow=True)
    assert Report.objects.filter(pk=report.pk).exists()


def test_task_zip_upload_page(client_for, alice, project):
    from eval_fixtures import DOCS, TASK_YAML

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("trivia/team_trivia.yaml", TASK_YAML)
        z.writestr("trivia/data/test.jsonl", DOCS)
    buf.seek(0)
    buf.name = "trivia.zip"
    response = client_for(alice).post(f"/projects/{project.id}/evals/tasks", {"archive": buf}, follow=True)
    assert b"Installed task: team_trivia" in response.content
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../x.yaml", TASK_YAML)
    evil.seek(0)
    evil.name = "evil.zip"
    bad = client_for(alice).post(f"/projects/{project.id}/evals/tasks", {"archive": evil})
    assert bad.status_code == 400 and b"paths must stay inside the folder" in bad.content


def test_import_page_accepts_results_and_reports_bad_files(client_for, alice, project):
    good = io.BytesIO(json.dumps(results_payload({"hellaswag": {"acc": 0.3, "acc_stderr": 0.01}})).encode())
    good.name = "results_2025.json"
    response = client_for(alice).post(
        f"/projects/{project.id}/evals/import", {"results_file": good, "label": "gpt2"}
    )
    job = EvalJob.objects.get()
    assert response["Location"] == f"/evals/{job.id}/" and job.model_label == "gpt2"
    bad = io.BytesIO(b"\xff\xfe not text")
    bad.name = "x.json"
    response = client_for(alice).post(f"/projects/{project.id}/evals/import", {"results_file": bad})
    assert response.status_code == 400 and b"must be UTF-8 text" in response.content


def test_the_import_page_accepts_sample_files(client_for, alice, project):
    """The form's file field used to refuse the list of files its widget sends."""
    with (
        open(DATA / "lm_eval_results_rw_facts.json", "rb") as results,
        open(DATA / LM_EVAL_SAMPLES, "rb") as s,
    ):
        response = client_for(alice).post(
            f"/projects/{project.id}/evals/import",
            {"results_file": results, "sample_files": [s], "label": "lm-eval"},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = EvalJob.objects.get()
    assert job.has_samples and job.model_label == "lm-eval"
