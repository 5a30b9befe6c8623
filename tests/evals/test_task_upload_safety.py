"""Uploaded task folders are data: names are names, archives cannot escape, templates are rendered
in the sandbox at upload (in a limited process), and a refused upload leaves nothing behind."""

from __future__ import annotations

import io
import time
import zipfile
import zlib

import pytest
from eval_fixtures import DOCS, TASK_YAML

from webapp.evals.sources import available_tasks, project_tasks_dir
from webapp.evals.taskupload import TaskUploadError, install_task_zip

pytestmark = pytest.mark.usefixtures("data_dir")


def _zip(files: dict[str, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    buf.seek(0)
    return buf


def _install(project, files: dict[str, str] | io.BytesIO):
    buf = files if isinstance(files, io.BytesIO) else _zip(files)
    return install_task_zip(project, buf, "trivia.zip", len(buf.getvalue()))


def _task(**replace: str) -> dict[str, str]:
    text = TASK_YAML
    for old, new in replace.items():
        text = text.replace(old, new)
    return {"t/task.yaml": text, "t/data/test.jsonl": DOCS}


def _nothing_installed(project) -> bool:
    root = project_tasks_dir(project)
    return not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("{{ question.__class__.__mro__ }}", "doc_to_text"),
        ("{{ ''.__class__.__subclasses__() }}", "doc_to_text"),
        ("{{ cycler.__init__.__globals__ }}", "doc_to_text"),
        ("{{ choices.append('z') }}", "doc_to_text"),
    ],
)
def test_a_template_reaching_for_python_is_refused_at_upload_naming_task_and_field(project, template, field):
    with pytest.raises(TaskUploadError) as caught:
        _install(project, _task(**{"Q: {{question}}": template}))
    message = str(caught.value)
    assert message.startswith(
        "task.yaml: task team_trivia: doc_to_text: the template reaches outside the document"
    )
    assert "/task_uploads/" not in message  # the staging folder is not shown, only the zip's paths
    assert _nothing_installed(project)


def test_few_shot_and_description_templates_are_rendered_at_upload_too(project):
    description = 'description: "{{ lipsum.__globals__ }}"\n'
    with pytest.raises(TaskUploadError, match="task team_trivia: description: the template reaches outside"):
        _install(project, {**_task(), "t/task.yaml": TASK_YAML + description})
    fewshot = 'fewshot_config:\n  doc_to_text: "{{ namespace.__init__ }}"\n'
    with pytest.raises(TaskUploadError, match="fewshot_config.doc_to_text: the template reaches outside"):
        _install(project, {**_task(), "t/task.yaml": TASK_YAML + fewshot})
    assert _nothing_installed(project)


def test_a_template_that_does_not_fit_the_data_is_refused_naming_the_field(project):
    with pytest.raises(TaskUploadError, match="task team_trivia: doc_to_text: 'query' is undefined"):
        _install(project, _task(**{"{{question}}": "{{query}}"}))


def test_a_template_that_never_finishes_is_stopped_and_refused(project, settings):
    settings.EVAL_TASK_PREVIEW_SECONDS = 3
    loop = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(
        TaskUploadError, match="task.yaml: rendering the first document's prompt did not finish"
    ):
        _install(project, _task(**{"{{question}}": loop}))
    assert time.monotonic() - started < 30
    assert _nothing_installed(project)


def test_a_template_building_a_huge_value_is_refused(project):
    with pytest.raises(
        TaskUploadError, match="doc_to_text: the template builds a value too large for memory"
    ):
        _install(project, _task(**{"{{question}}": "{{ (question * 100000) * 100000 }}"}))


def test_a_legitimate_template_with_filters_and_loops_installs(project):
    template = "{% for c in choices %}{{ loop.index }}. {{ c | upper }} {% endfor %}{{ question | regex_replace('q', 'Q') }}"
    assert _install(project, _task(**{"Q: {{question}}": template})) == ["team_trivia"]
    assert "team_trivia" in {t.name for t in available_tasks(project)}


@pytest.mark.parametrize(
    "name", ["../escape", "/abs/task", "sub/task", "..hidden", "~home", "a b", "x.yaml,y"]
)
def test_task_names_in_an_upload_must_be_names(project, name):
    with pytest.raises(TaskUploadError, match=r"task\.yaml: task: .* is not a task name"):
        _install(project, _task(**{"task: team_trivia": f"task: {name!r}"}))
    assert _nothing_installed(project)


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("t/../../escape.yaml", "paths must stay inside the folder"),
        ("/abs.yaml", "paths must stay inside the folder"),
        ("t\\..\\x.yaml", "paths must stay inside the folder"),
        ("C:/x.yaml", "paths must stay inside the folder"),
        ("t/new\nline.yaml", "control characters"),
    ],
)
def test_archive_member_names_must_stay_names_inside_the_folder(project, member, message):
    with pytest.raises(TaskUploadError, match=message):
        _install(project, {**_task(), member: TASK_YAML})
    assert _nothing_installed(project)


def test_a_symlinked_data_file_is_refused(project):
    buf = _zip(_task())
    with zipfile.ZipFile(buf, "a") as z:
        link = zipfile.ZipInfo("t/data/secret.jsonl")
        link.external_attr = 0o120777 << 16  # a symlink, as `zip --symlinks` stores it
        z.writestr(link, "/etc/passwd")
    buf.seek(0)
    with pytest.raises(TaskUploadError, match="links are not allowed"):
        _install(project, buf)
    assert _nothing_installed(project)


def test_a_corrupt_member_is_a_refusal_not_a_crash(project):
    buf = _zip(_task())
    raw = bytearray(buf.getvalue())
    data = zlib.compress(DOCS.encode())[2:-4]  # the raw deflate stream zipfile stored for the data file
    at = raw.find(data[:16])
    assert at > 0
    raw[at + 8] ^= 0xFF
    with pytest.raises(TaskUploadError, match="cannot be unpacked"):
        _install(project, io.BytesIO(bytes(raw)))
    assert _nothing_installed(project)


def test_a_member_stored_twice_is_refused(project):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name, text in _task().items():
            z.writestr(name, text)
        z.writestr("t/data/test.jsonl", '{"question": "other"}')
    buf.seek(0)
    with pytest.raises(TaskUploadError, match="holds this file twice"):
        _install(project, buf)
    assert _nothing_installed(project)


def test_upload_page_shows_a_refused_template_on_the_archive_field(client_for, alice, project):
    buf = _zip(_task(**{"{{question}}": "{{ question.__class__ }}"}))
    buf.name = "sneaky.zip"
    response = client_for(alice).post(f"/projects/{project.id}/evals/tasks", {"archive": buf})
    assert response.status_code == 400
    errors = response.context["form"].errors["archive"]
    assert any(
        "task team_trivia: doc_to_text: the template reaches outside the document" in e for e in errors
    )
