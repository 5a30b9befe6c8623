"""Task YAML loading: lm-eval's keys and defaults, and errors that name the key to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcore.evaluation.taskconfig import (
    TaskConfigError,
    discover_tasks,
    load_task_config,
    resolve_tasks,
)

BASE = """\
task: demo
dataset_path: json
dataset_kwargs:
  data_files:
    test: data.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_target: label
doc_to_choice: choices
"""


def _write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_minimal_multiple_choice_task_gets_lm_eval_defaults(tmp_path):
    cfg = load_task_config(_write(tmp_path, BASE))
    assert cfg.task == "demo"
    assert cfg.target_delimiter == " "
    assert cfg.fewshot_delimiter == "\n\n"
    assert [m.name for m in cfg.metric_list] == ["acc", "acc_norm"]
    assert cfg.version == "Yaml"
    assert cfg.fewshot_config.doc_to_text == "{{question}}"  # few-shot formatting inherits the task's


def test_generate_until_defaults_to_greedy_until_fewshot_delimiter(tmp_path):
    text = BASE.replace("output_type: multiple_choice", "output_type: generate_until").replace(
        "doc_to_choice: choices\n", ""
    )
    cfg = load_task_config(_write(tmp_path, text))
    assert cfg.generation_kwargs["until"] == ["\n\n"]
    assert cfg.generation_kwargs["max_gen_toks"] == 256
    assert [m.name for m in cfg.metric_list] == ["exact_match"]


def test_include_lays_the_task_over_its_base(tmp_path):
    _write(tmp_path, BASE.replace("task: demo\n", ""), "_base.yaml")
    cfg = load_task_config(_write(tmp_path, "include: _base.yaml\ntask: child\nnum_fewshot: 2\n"))
    assert (cfg.task, cfg.num_fewshot, cfg.output_type) == ("child", 2, "multiple_choice")


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda t: t.replace("task: demo\n", ""), "task:"),
        (lambda t: t.replace("dataset_path: json\n", ""), "dataset_path:"),
        (lambda t: t.replace("multiple_choice", "ranking"), "output_type:"),
        (lambda t: t.replace("doc_to_choice: choices\n", ""), "doc_to_choice:"),
        (lambda t: t.replace("test_split: test\n", ""), "test_split:"),
        (lambda t: t + "doc_to_txet: oops\n", "doc_to_txet:"),
        (lambda t: t + "process_docs: !function utils.process\n", "process_docs:"),
        (lambda t: t.replace('"{{question}}"', "!function utils.text"), "doc_to_text:"),
        (lambda t: t + "metric_list:\n  - metric: bleu\n", "metric_list[0].metric:"),
        (lambda t: t + "metric_list:\n  - aggregation: mean\n", "metric_list[0]:"),
        (lambda t: t + "num_fewshot: -1\n", "num_fewshot:"),
        (lambda t: t + "filter_list: []\n", "filter_list:"),
        (lambda t: t + "fewshot_config:\n  sampler: balanced\n", "fewshot_config.sampler:"),
        (lambda t: t + "target_delimiter: 3\n", "target_delimiter:"),
    ],
)
def test_errors_name_the_yaml_key(tmp_path, edit, key):
    path = _write(tmp_path, edit(BASE))
    with pytest.raises(TaskConfigError) as info:
        load_task_config(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_bad_yaml_and_bad_generation_settings_are_reported(tmp_path):
    with pytest.raises(TaskConfigError, match="not valid YAML"):
        load_task_config(_write(tmp_path, "task: [unclosed\n"))
    gen = BASE.replace("multiple_choice", "generate_until") + "generation_kwargs:\n  do_sample: true\n"
    with pytest.raises(TaskConfigError, match=r"generation_kwargs\.do_sample"):
        load_task_config(_write(tmp_path, gen, "gen.yaml"))


def test_builtin_tasks_are_discovered_and_valid():
    found = discover_tasks()
    assert {"rw_arith", "rw_facts", "rw_heldout_ppl", "rw_arith_gen"} <= set(found)
    for cfg in resolve_tasks(sorted(found)):
        assert cfg.metric_list


def test_tasks_dir_adds_user_tasks_and_unknown_names_list_the_known_ones(tmp_path):
    _write(tmp_path, BASE)
    assert "demo" in discover_tasks([tmp_path])
    with pytest.raises(TaskConfigError, match="unknown task 'nope'.*rw_arith"):
        resolve_tasks(["nope"], [tmp_path])
