"""Prompt building: templates, few-shot sampling with a seed, and request arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcore.evaluation.runner import EvalSettings, build_docs
from modelcore.evaluation.taskconfig import TaskConfigError, load_task_config

TRAIN = [{"q": f"train {i}", "choices": ["yes", "no"], "label": i % 2} for i in range(10)]
TEST = [{"q": f"test {i}", "choices": ["yes", "no"], "label": i % 2} for i in range(4)]


def _task(tmp_path: Path, extra: str = "", test=TEST, train=TRAIN) -> Path:
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    path = tmp_path / "t.yaml"
    path.write_text(
        "task: t\ndataset_path: json\ndataset_kwargs: {data_files: {train: train.jsonl, test: test.jsonl}}\n"
        "training_split: train\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Q: {{q}}\\nA:"\ndoc_to_target: label\ndoc_to_choice: choices\n' + extra
    )
    return path


def test_zero_shot_multiple_choice_requests(tmp_path):
    docs, n_shot, n = build_docs(load_task_config(_task(tmp_path)), EvalSettings())
    assert (n_shot, n, len(docs)) == (0, 4, 4)
    assert docs[1].args == [("Q: test 1\nA:", " yes"), ("Q: test 1\nA:", " no")]
    assert docs[1].gold == 1


def test_few_shot_examples_are_seeded_and_formatted(tmp_path):
    cfg = load_task_config(_task(tmp_path, 'description: "Answer.\\n\\n"\n'))
    a, _, _ = build_docs(cfg, EvalSettings(num_fewshot=2))
    b, _, _ = build_docs(cfg, EvalSettings(num_fewshot=2))
    c, _, _ = build_docs(cfg, EvalSettings(num_fewshot=2, fewshot_seed=7))
    assert [d.prompt for d in a] == [d.prompt for d in b]
    assert [d.prompt for d in a] != [d.prompt for d in c]
    prompt = a[0].prompt
    assert prompt.startswith("Answer.\n\nQ: train ")
    assert prompt.endswith("\n\nQ: test 0\nA:")
    examples = prompt.split("\n\n")[1:-1]
    assert len(examples) == 2
    for ex in examples:
        i = int(ex.split()[2])
        assert ex == f"Q: train {i}\nA: {['yes', 'no'][i % 2]}"


def test_first_n_sampler_and_pinned_zero_shot(tmp_path):
    cfg = load_task_config(_task(tmp_path, "fewshot_config: {sampler: first_n}\n"))
    docs, _, _ = build_docs(cfg, EvalSettings(num_fewshot=3))
    assert all(d.prompt.startswith("Q: train 0\nA: yes\n\nQ: train 1\nA: no\n\nQ: train 2") for d in docs)
    pinned = load_task_config(_task(tmp_path, "num_fewshot: 0\n"))
    docs, n_shot, _ = build_docs(pinned, EvalSettings(num_fewshot=3))
    assert n_shot == 0  # lm-eval ignores an override when the YAML pins zero-shot
    assert docs[0].prompt == "Q: test 0\nA:"


def test_fewshot_split_equal_to_test_split_never_shows_the_question_itself(tmp_path):
    cfg = load_task_config(_task(tmp_path, "fewshot_split: test\n"))
    docs, _, _ = build_docs(cfg, EvalSettings(num_fewshot=3))
    for d in docs:
        assert d.prompt.count(d.doc["q"]) == 1


def test_multiple_input_task_scores_the_shared_target_after_each_choice(tmp_path):
    rows = [{"sentence": "The _ barked.", "option1": "dog", "option2": "cat", "answer": "1", "end": "loudly"}]
    extra = (
        "doc_to_choice: \"{{[sentence.replace('_', option1), sentence.replace('_', option2)]}}\"\n"
        'doc_to_text: "{{answer | int - 1}}"\ndoc_to_target: "{{end}}"\n'
    )
    text = _task(tmp_path, "", test=rows, train=rows).read_text()
    text = text.replace('doc_to_text: "Q: {{q}}\\nA:"\ndoc_to_target: label\ndoc_to_choice: choices\n', extra)
    (tmp_path / "t.yaml").write_text(text)
    docs, _, _ = build_docs(load_task_config(tmp_path / "t.yaml"), EvalSettings())
    assert docs[0].args == [("The dog barked.", " loudly"), ("The cat barked.", " loudly")]
    assert docs[0].gold == 0


def test_template_errors_name_the_key(tmp_path):
    path = _task(tmp_path)
    path.write_text(path.read_text().replace("{{q}}", "{{missing_field}}"))
    with pytest.raises(TaskConfigError, match="doc_to_text: 'missing_field' is undefined"):
        build_docs(load_task_config(path), EvalSettings())
