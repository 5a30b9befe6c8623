"""Path fields of web/API configs name only what the team may read; CPU ranks are capped.

Every refused case is a 400 naming the field, and no run is created; every allowed
case stores the real path the trainer will read.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from modelcore.config import SECTIONS, ConfigError, RunConfig, field_schema, resolve
from webapp.runs import config_paths
from webapp.runs.config_paths import SOURCES, check_stored, path_fields
from webapp.runs.models import Checkpoint, Run
from webapp.runs.services import create_run

# String fields that name no file; every other string field must carry a PathSpec: task names
# (resolved by the task registry) and sample prompts (only ever tokenized).
# resources.*: names the scheduler matches against registered hosts, limited to [A-Za-z0-9 ._@-].
# Slurm names (launcher.*) are limited to letters, digits and . _ - by the schema: never a path.
NOT_PATHS = {
    "eval.tasks",
    "train.sample_prompts",
    "resources.gpu_model",
    "resources.host",
    "launcher.partition",
    "launcher.account",
    "launcher.qos",
}
PATH_WORDS = re.compile(r"\b(path|file|folder|directory|dir)s?\b", re.IGNORECASE)


@pytest.fixture
def roots(settings, tmp_path) -> Path:
    """A dataset root, a models folder and a runs folder, with links that lead out of them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("another team's data")
    (outside / "hf").mkdir()
    (outside / "hf" / "config.json").write_text("{}")
    (outside / "hf" / "tokenizer.json").write_text("{}")

    datasets = tmp_path / "datasets"
    (datasets / "shards").mkdir(parents=True)
    (datasets / "wiki.txt").write_text("hello")
    (datasets / "shards" / "a.txt").write_text("a")
    (datasets / "escape.txt").symlink_to(outside / "secret.txt")
    (datasets / "leaky").mkdir()
    (datasets / "leaky" / "ok.txt").write_text("ok")
    (datasets / "leaky" / "stolen.txt").symlink_to(outside / "secret.txt")

    models = tmp_path / "models"
    (models / "llama").mkdir(parents=True)
    (models / "llama" / "config.json").write_text("{}")
    (models / "llama" / "tokenizer.json").write_text("{}")
    (models / "escape").symlink_to(outside / "hf")

    settings.DATASET_DIRS = [datasets]
    settings.MODELS_DIR = models
    settings.RUNS_DIR = tmp_path / "runs"
    settings.MAX_CPU_PROCESSES = 4
    return tmp_path


@pytest.fixture
def run_with_checkpoints(project, alice, roots) -> Run:
    run = Run.objects.create(
        project=project, name="source", config=resolve("tiny-cpu").to_dict(), created_by=alice
    )
    for step in (100, 200):
        Checkpoint.objects.create(run=run, step=step, path=f"checkpoints/step_{step:06d}")
    return run


@pytest.fixture
def charlies_project(charlie):
    from webapp.projects.models import Project

    return Project.objects.create(team=charlie.memberships.first().team, name="theirs", created_by=charlie)


def post_run(api, user, project, config: dict):
    return api(user, "POST", f"/api/v1/projects/{project.id}/runs", {"preset": "tiny-cpu", "config": config})


# --- the schema's markers ---------------------------------------------------------------


def test_every_string_field_that_could_name_a_file_carries_a_path_marker():
    marked = {f.path for f in path_fields()}
    assert {"data.corpus", "data.tokenizer", "train.init_from"} <= marked
    for section in field_schema():
        for meta in section["fields"]:
            if meta["type"] != "str" or meta["choices"] or meta["path"] in NOT_PATHS:
                continue
            # A new free-text field is a path until someone says otherwise here, with a reason.
            assert meta["path"] in marked, f"{meta['path']} takes free text: mark it with a PathSpec"
            assert PATH_WORDS.search(meta["help"]), meta["path"]


def test_every_marker_names_sources_the_policy_knows():
    for field in path_fields():
        assert field.spec.sources and set(field.spec.sources) <= set(SOURCES), field.path


def test_builtin_values_of_each_path_field_are_accepted_unchanged(alice, project, roots):
    run = create_run(
        user=alice,
        project=project,
        preset="tiny-cpu",
        overrides={"data": {"corpus": "stdlib", "tokenizer": "byte"}, "train": {"init_from": ""}},
    )
    assert run.config["data"]["corpus"] == "stdlib" and run.config["train"]["init_from"] == ""


# --- refused: 400 naming the field, no run --------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "hint"),
    [
        ({"data": {"corpus": "/etc/passwd"}}, "data.corpus", "outside the dataset folders"),
        ({"data": {"corpus": "../outside/secret.txt"}}, "data.corpus", "outside the dataset folders"),
        ({"data": {"corpus": "shards/../../outside/secret.txt"}}, "data.corpus", "outside"),
        ({"data": {"corpus": "escape.txt"}}, "data.corpus", "outside the dataset folders"),
        ({"data": {"corpus": "leaky"}}, "data.corpus", "stolen.txt links outside"),
        ({"data": {"corpus": "missing.txt"}}, "data.corpus", "no such file"),
        ({"data": {"tokenizer": "/etc"}}, "data.tokenizer", "inside the models folder"),
        ({"data": {"tokenizer": "../outside/hf"}}, "data.tokenizer", "inside the models folder"),
        ({"data": {"tokenizer": "escape"}}, "data.tokenizer", "inside the models folder"),
        ({"train": {"init_from": "escape"}}, "train.init_from", "inside the models folder"),
        ({"train": {"init_from": "/etc"}}, "train.init_from", "inside the models folder"),
        ({"train": {"init_from": "run:abc"}}, "train.init_from", "run:<id> or run:<id>:<step>"),
        ({"train": {"init_from": "run:١٢"}}, "train.init_from", "run:<id> or run:<id>:<step>"),
        ({"train": {"init_from": "run:99999999999999999999999"}}, "train.init_from", "run:<id>"),
        ({"train": {"init_from": "run:424242"}}, "train.init_from", "no run 424242 that you can see"),
    ],
)
def test_api_refuses_paths_outside_what_the_team_may_read(api, alice, project, roots, config, field, hint):
    response = post_run(api, alice, project, config)
    assert response.status_code == 400, response.content
    message = response.json()["errors"][field]
    assert hint in message and "allowed:" in message
    assert not Run.objects.exists()


def test_runs_are_named_by_reference_never_by_path(api, alice, project, run_with_checkpoints):
    for value in (str(run_with_checkpoints.run_dir), str(run_with_checkpoints.run_dir / "checkpoints")):
        response = post_run(api, alice, project, {"train": {"init_from": value}})
        assert response.status_code == 400
        assert "by reference" in response.json()["errors"]["train.init_from"]
    assert Run.objects.count() == 1


def test_another_teams_run_is_refused_as_if_it_did_not_exist(
    api, charlie, charlies_project, run_with_checkpoints
):
    for ref in (f"run:{run_with_checkpoints.id}", f"run:{run_with_checkpoints.id}:100"):
        response = post_run(api, charlie, charlies_project, {"train": {"init_from": ref}})
        assert response.status_code == 400
        assert (
            f"no run {run_with_checkpoints.id} that you can see"
            in response.json()["errors"]["train.init_from"]
        )
    assert not Run.objects.filter(project=charlies_project).exists()


def test_a_missing_checkpoint_step_lists_the_steps_there_are(api, alice, project, run_with_checkpoints):
    response = post_run(api, alice, project, {"train": {"init_from": f"run:{run_with_checkpoints.id}:150"}})
    assert response.status_code == 400
    assert "no checkpoint at step 150 (it has: 100, 200)" in response.json()["errors"]["train.init_from"]


def test_a_run_without_checkpoints_cannot_be_started_from(alice, project, roots):
    empty = Run.objects.create(
        project=project, name="e", config=resolve("tiny-cpu").to_dict(), created_by=alice
    )
    with pytest.raises(ConfigError, match="has no checkpoint yet"):
        create_run(
            user=alice,
            project=project,
            preset="tiny-cpu",
            overrides={"train": {"init_from": f"run:{empty.id}"}},
        )


def test_every_bad_field_is_reported_at_once(api, alice, project, roots):
    response = post_run(
        api,
        alice,
        project,
        {
            "data": {"corpus": "/etc/passwd", "tokenizer": "/etc"},
            "parallel": {"num_processes": 5, "device": "cpu"},
        },
    )
    assert set(response.json()["errors"]) == {"data.corpus", "data.tokenizer", "parallel.num_processes"}


def test_a_dataset_root_never_exposes_the_runs_folder(settings, alice, project, run_with_checkpoints):
    settings.DATASET_DIRS = [Path(settings.RUNS_DIR).parent]  # an operator who listed DATA_DIR itself
    with pytest.raises(ConfigError) as info:
        create_run(
            user=alice,
            project=project,
            preset="tiny-cpu",
            overrides={"data": {"corpus": str(run_with_checkpoints.run_dir)}},
        )
    assert "outside the dataset folders" in info.value.errors["data.corpus"]


# --- allowed: the run stores the real path -----------------------------------------------


def test_a_dataset_is_stored_as_its_real_path(api, alice, project, roots):
    for value, expected in (
        ("wiki.txt", roots / "datasets" / "wiki.txt"),
        (str(roots / "datasets" / "shards"), roots / "datasets" / "shards"),
        ("shards/../wiki.txt", roots / "datasets" / "wiki.txt"),  # '..' that stays inside is fine
    ):
        response = post_run(api, alice, project, {"data": {"corpus": value}})
        assert response.status_code == 201, response.content
        assert Run.objects.get(pk=response.json()["id"]).config["data"]["corpus"] == str(expected.resolve())


def test_a_link_between_dataset_roots_is_followed(settings, alice, project, roots):
    second = roots / "more-datasets"
    second.mkdir()
    (second / "books.txt").write_text("books")
    (roots / "datasets" / "books.txt").symlink_to(second / "books.txt")
    settings.DATASET_DIRS = [roots / "datasets", second]
    run = create_run(
        user=alice, project=project, preset="tiny-cpu", overrides={"data": {"corpus": "books.txt"}}
    )
    assert run.config["data"]["corpus"] == str((second / "books.txt").resolve())


def test_model_folders_and_run_references_become_real_paths(alice, project, roots, run_with_checkpoints):
    run = create_run(
        user=alice,
        project=project,
        preset="tiny-cpu",
        overrides={
            "data": {"tokenizer": "llama"},
            "train": {"init_from": f"run:{run_with_checkpoints.id}:100"},
        },
    )
    assert run.config["data"]["tokenizer"] == str((roots / "models" / "llama").resolve())
    checkpoint = run_with_checkpoints.run_dir / "checkpoints" / "step_000100"
    assert run.config["train"]["init_from"] == str(checkpoint.resolve())

    latest = create_run(
        user=alice,
        project=project,
        preset="tiny-cpu",
        overrides={"train": {"init_from": f"run:{run_with_checkpoints.id}"}},
    )
    # The run folder: the trainer starts from its latest checkpoint (modelcore.init_from).
    assert latest.config["train"]["init_from"] == str(run_with_checkpoints.run_dir.resolve())

    hf = create_run(
        user=alice, project=project, preset="tiny-cpu", overrides={"train": {"init_from": "llama"}}
    )
    assert hf.config["train"]["init_from"] == str((roots / "models" / "llama").resolve())


def test_a_viewer_of_the_source_team_can_start_from_its_run_in_another_team(
    alice, bob, charlie, charlies_project, run_with_checkpoints
):
    """What counts is seeing the source run's project, not owning it."""
    from webapp.accounts.models import Membership, Role

    Membership.objects.create(team=run_with_checkpoints.project.team, user=charlie, role=Role.VIEWER)
    run = create_run(
        user=charlie,
        project=charlies_project,
        preset="tiny-cpu",
        overrides={"train": {"init_from": f"run:{run_with_checkpoints.id}"}},
    )
    assert run.config["train"]["init_from"] == str(run_with_checkpoints.run_dir.resolve())


# --- the web form ---------------------------------------------------------------------


def form_data(**changes) -> dict:
    from webapp.runs.forms import initial_for

    data = {k: v for k, v in initial_for("tiny-cpu").items() if v is not False}
    data.update(changes)
    data["name"] = "form run"
    return data


def test_form_shows_the_path_error_next_to_its_field(client_for, alice, project, roots):
    response = client_for(alice).post(
        f"/projects/{project.id}/runs/new", form_data(**{"data.corpus": "/etc/passwd"})
    )
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'data-error-for="data\.corpus">([^<]*)<', html)
    assert error and "outside the dataset folders" in error[1]
    assert not Run.objects.exists()


def test_form_offers_datasets_model_folders_and_visible_runs(
    client_for, alice, charlie, project, charlies_project, roots, run_with_checkpoints
):
    theirs = Run.objects.create(
        project=charlies_project, name="theirs", config=resolve("tiny-cpu").to_dict(), created_by=charlie
    )
    Checkpoint.objects.create(run=theirs, step=1, path="checkpoints/step_000001")
    html = client_for(alice).get(f"/projects/{project.id}/runs/new").content.decode()
    assert 'list="choices-data.corpus"' in html
    datasets = (roots / "datasets").resolve()
    corpus = _datalist(html, "data.corpus")
    assert {"stdlib", str(datasets / "wiki.txt"), str(datasets / "shards" / "a.txt")} <= corpus
    assert str(datasets / "escape.txt") not in corpus  # a link out of the root is not offered
    assert {"byte", "bpe", "llama"} <= _datalist(html, "data.tokenizer")
    init = _datalist(html, "train.init_from")
    assert {f"run:{run_with_checkpoints.id}", "llama"} <= init
    assert f"run:{theirs.id}" not in init and "escape" not in init


def test_form_limits_cpu_ranks(client_for, alice, project, roots):
    data = form_data(**{"parallel.num_processes": "5", "parallel.device": "cpu"})
    response = client_for(alice).post(f"/projects/{project.id}/runs/new", data)
    assert response.status_code == 400
    error = re.search(r'data-error-for="parallel\.num_processes">([^<]*)<', response.content.decode())
    assert error and "at most 4" in error[1]
    assert not Run.objects.exists()


def _datalist(html: str, path: str) -> set[str]:
    block = re.search(rf'<datalist id="choices-{re.escape(path)}">(.*?)</datalist>', html, re.S)
    assert block, f"no datalist for {path}"
    return set(re.findall(r'<option value="([^"]*)"', block[1]))


# --- CPU ranks ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_api_refuses_more_cpu_ranks_than_the_limit(api, alice, project, roots, monkeypatch, device):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this host has no GPU: auto means CPU ranks
    response = post_run(api, alice, project, {"parallel": {"num_processes": 5, "device": device}})
    assert response.status_code == 400
    message = response.json()["errors"]["parallel.num_processes"]
    assert "at most 4" in message and "RUNWRIGHT_MAX_CPU_PROCESSES" in message
    assert not Run.objects.exists()
    assert (
        post_run(api, alice, project, {"parallel": {"num_processes": 4, "device": device}}).status_code == 201
    )


def test_auto_runs_on_a_gpu_host_are_not_capped_as_cpu_runs(api, alice, project, roots, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    response = post_run(api, alice, project, {"parallel": {"num_processes": 8, "device": "auto"}})
    assert response.status_code == 201, response.content
    cpu = post_run(api, alice, project, {"parallel": {"num_processes": 8, "device": "cpu"}})
    assert cpu.status_code == 400


# --- the worker's re-check of a stored config ------------------------------------------------


def stored(**sections) -> RunConfig:
    return RunConfig.from_dict(sections, base=resolve("tiny-cpu"))


def test_recheck_accepts_what_the_web_stored(alice, project, roots, run_with_checkpoints):
    run = create_run(
        user=alice,
        project=project,
        preset="tiny-cpu",
        overrides={
            "data": {"corpus": "shards", "tokenizer": "llama"},
            "train": {"init_from": f"run:{run_with_checkpoints.id}:200"},
        },
    )
    check_stored(run, RunConfig.from_dict(run.config))


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"data": {"corpus": "/etc/passwd"}}, "data.corpus"),
        ({"data": {"corpus": "wiki.txt"}}, "data.corpus"),  # relative: not what the web writes
        ({"data": {"tokenizer": "/etc"}}, "data.tokenizer"),
        ({"train": {"init_from": "run:1"}}, "train.init_from"),
    ],
)
def test_recheck_refuses_tampered_paths(alice, project, roots, sections, field):
    run = Run.objects.create(
        project=project, name="t", config=resolve("tiny-cpu").to_dict(), created_by=alice
    )
    with pytest.raises(ConfigError) as info:
        check_stored(run, stored(**sections))
    assert set(info.value.errors) == {field}


def test_recheck_refuses_links_out_of_a_stored_dataset_folder(alice, project, roots):
    run = Run.objects.create(
        project=project, name="t", config=resolve("tiny-cpu").to_dict(), created_by=alice
    )
    with pytest.raises(ConfigError, match="stolen.txt"):
        check_stored(run, stored(data={"corpus": str(roots / "datasets" / "leaky")}))


def test_recheck_refuses_another_teams_run_folder(charlie, charlies_project, run_with_checkpoints):
    run = Run.objects.create(
        project=charlies_project, name="t", config=resolve("tiny-cpu").to_dict(), created_by=charlie
    )
    for path in (run_with_checkpoints.run_dir, run_with_checkpoints.run_dir / "checkpoints" / "step_000100"):
        with pytest.raises(ConfigError, match="cannot see"):
            check_stored(run, stored(train={"init_from": str(path)}))
    with pytest.raises(ConfigError, match="not a run folder"):
        check_stored(run, stored(train={"init_from": str(run_with_checkpoints.run_dir / "events.jsonl")}))


def test_recheck_without_a_creator_keeps_to_the_runs_team(project, charlies_project, run_with_checkpoints):
    ours = Run.objects.create(project=project, name="t", config=resolve("tiny-cpu").to_dict())
    check_stored(ours, stored(train={"init_from": str(run_with_checkpoints.run_dir)}))
    theirs = Run.objects.create(project=charlies_project, name="t", config=resolve("tiny-cpu").to_dict())
    with pytest.raises(ConfigError, match="cannot see"):
        check_stored(theirs, stored(train={"init_from": str(run_with_checkpoints.run_dir)}))


def test_the_policy_reads_every_marked_field(monkeypatch, alice, project, roots):
    """A path field added later is covered: the policy walks the markers, not a list of names."""
    corpus = next(f for f in path_fields() if f.path == "data.corpus")
    fake = dataclasses.replace(corpus, path="data.tokenizer")  # pretend tokenizer were a dataset field
    monkeypatch.setattr(config_paths, "path_fields", lambda: [fake])
    with pytest.raises(ConfigError) as info:
        create_run(user=alice, project=project, preset="tiny-cpu", overrides={"data": {"tokenizer": "llama"}})
    assert (
        set(info.value.errors) == {"data.tokenizer"}
        and "dataset folders" in info.value.errors["data.tokenizer"]
    )
    assert set(SECTIONS) >= {f.path.split(".")[0] for f in path_fields()}
