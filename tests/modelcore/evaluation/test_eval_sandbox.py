"""Task templates are data: they render in Jinja's sandbox, and lm-eval's own templates render the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jinja2 import meta

from modelcore.evaluation.prompts import TemplateSecurityError, render
from modelcore.evaluation.runner import EvalSettings, build_docs
from modelcore.evaluation.taskconfig import TaskConfigError, load_task_config

ROOT = Path(__file__).resolve().parents[3]
TRAIN = [{"q": f"train {i}", "choices": ["yes", "no"], "label": i % 2} for i in range(6)]
TEST = [{"q": f"test {i}", "choices": ["yes", "no"], "label": i % 2} for i in range(3)]


def _task(tmp_path: Path, **fields: str) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TEST))
    data = {
        "task": "sneaky",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": "train.jsonl", "test": "test.jsonl"}},
        "training_split": "train",
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Q: {{q}}\nA:",
        "doc_to_target": "label",
        "doc_to_choice": "choices",
        **fields,
    }
    path = tmp_path / "sneaky.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"doc_to_text": "{{ q.__class__.__mro__ }}"}, "doc_to_text"),
        ({"doc_to_target": "{{ ''.__class__.__subclasses__() }}"}, "doc_to_target"),
        ({"description": "{{ cycler.__init__.__globals__ }}"}, "description"),
        ({"doc_to_choice": "{{ choices.append('maybe') or choices }}"}, "doc_to_choice"),
        ({"doc_to_text": "{{ '{0.__class__.__base__}'.format(q) }}"}, "doc_to_text"),
        ({"doc_to_text": "{{ lipsum.__globals__['os'] }}"}, "doc_to_text"),
        (
            {"fewshot_config": {"doc_to_text": "{{ namespace.__init__.__globals__ }}"}},
            "fewshot_config.doc_to_text",
        ),
    ],
)
def test_templates_reaching_for_python_fail_naming_the_task_and_the_field(tmp_path, fields, key):
    cfg = load_task_config(_task(tmp_path, **fields))
    with pytest.raises(TemplateSecurityError) as caught:
        build_docs(cfg, EvalSettings(num_fewshot=1))
    message = str(caught.value)
    assert f"task sneaky: {key}: the template reaches outside the document" in message
    assert message.startswith(str(cfg.source))


def test_a_refused_mutation_leaves_the_document_as_it_was():
    doc = {"choices": ["yes", "no"], "meta": {"k": 1}}
    for template in ("{{ choices.pop() }}", "{{ meta.update(k=2) }}", "{{ choices.sort() }}"):
        with pytest.raises(TemplateSecurityError):
            render(template, doc, "doc_to_text")
    assert doc == {"choices": ["yes", "no"], "meta": {"k": 1}}


def test_template_runtime_failures_are_task_errors_naming_the_key():
    with pytest.raises(TaskConfigError, match=r"^doc_to_target: ValueError: .*not in list"):
        render("{{ choices.index('maybe') }}", {"choices": ["yes", "no"]}, "doc_to_target")
    with pytest.raises(TaskConfigError, match=r"^doc_to_text: OverflowError: Range too big"):
        render("{% for i in range(10**9) %}{% endfor %}", {}, "doc_to_text")


def test_everyday_template_features_still_render():
    doc = {"q": " What is 2+2? ", "choices": ["three", "four"], "label": "1", "ctx": "a_b"}
    template = (
        "{% set ns = namespace(n=0) %}{% for c in choices %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        "{{ q.strip() }} ({{ ns.n }}) {{ choices | map('upper') | join(', ') }} "
        "{{ choices[label | int] }} {{ ctx.split('_') | length }} {{ ctx | regex_replace('_', ' ') }}\n"
    )
    assert render(template, doc) == "What is 2+2? (2) THREE, FOUR four 2 a b\n"


# --- every template lm-eval ships renders the same in the sandbox ---------------------------------


def _lm_eval_templates() -> list[str]:
    lm_eval = pytest.importorskip("lm_eval")

    class Loader(yaml.CSafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # !function hooks: not templates
    found: set[str] = set()
    for path in sorted((Path(lm_eval.__file__).parent / "tasks").rglob("*.yaml")):
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - safe subclass
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        fewshot = data.get("fewshot_config") if isinstance(data.get("fewshot_config"), dict) else {}
        for source in (data, fewshot):
            for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "description"):
                value = source.get(key)
                if isinstance(value, str) and ("{{" in value or "{%" in value):
                    found.add(value)
    return sorted(found)


def _docs_for(names: set[str]):
    """Stand-in documents of a few shapes; the first one a template renders with is compared."""
    words, items = "Alpha beta, gamma? delta", ["alpha one", "beta two", "gamma three", "delta four"]

    def guess(name: str):
        low = name.lower()
        if any(k in low for k in ("label", "answer", "gold", "idx", "index", "target")):
            return 1
        if any(k in low for k in ("choice", "option", "ending", "candidate")):
            return list(items)
        return words

    yield dict.fromkeys(names, words)
    yield {n: guess(n) for n in names}
    yield {n: list(items) for n in names}
    yield dict.fromkeys(names, 1)
    yield {n: {"text": list(items), "label": ["A", "B", "C", "D"]} for n in names}


def test_lm_eval_templates_render_identically_in_the_sandbox():
    from lm_eval.utils import apply_template
    from lm_eval.utils import env as lm_eval_env

    templates = _lm_eval_templates()
    compared, differ = 0, []
    for template in templates:
        try:
            names = meta.find_undeclared_variables(lm_eval_env.parse(template))
        except Exception:
            continue
        for doc in _docs_for(names):
            try:
                expected = apply_template(template, doc)
            except Exception:
                continue  # this stand-in document does not fit the template; try the next shape
            try:
                got = render(template, doc)
            except TaskConfigError as exc:
                got = exc
            compared += 1
            if got != expected:
                differ.append((template, got))
            break
    assert not differ, differ[:5]
    # Most of lm-eval's ~1,800 distinct templates render with a stand-in document.
    assert compared > 0.9 * len(templates) > 1000


def test_the_preview_renders_the_first_document_and_reports_a_refused_template(tmp_path):
    good = _task(tmp_path)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = _task(bad_dir, doc_to_text="{{ q.__class__ }}")
    # As the upload runs it, plus a last line saying whether torch was loaded (it must not be).
    code = (
        "import sys, json; from modelcore.evaluation.preview import main;"
        f"main(['--max-memory-mb', '2048', {str(good)!r}, {str(bad)!r}]);"
        "print(json.dumps({'torch': 'torch' in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    first, second, loaded = (json.loads(line) for line in out.splitlines())
    assert first["error"] is None and first["task"] == "sneaky"
    assert first["prompt"].startswith("Q: train ") and first["prompt"].endswith("Q: test 0\nA:")
    assert "task sneaky: doc_to_text: the template reaches outside the document" in second["error"]
    assert loaded == {"torch": False}
