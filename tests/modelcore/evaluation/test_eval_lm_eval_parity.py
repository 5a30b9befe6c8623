"""Proof: our evaluator gives lm-evaluation-harness's numbers on the same model and tasks.

One tiny random Llama saved as a Hugging Face directory; lm-eval (HF backend, CLI,
offline) runs once on four local tasks — multiple choice with few-shot examples
and a description, plain loglikelihood, rolling loglikelihood over texts several
windows long, and greedy generation — and our evaluator runs on the same YAML
files. Per-sample loglikelihoods must agree within 1e-4, prompts and predictions
exactly, and every metric and standard error lm-eval reports must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from evalhelpers import builtin_rows, write_jsonl

from modelcore.evaluation.results import read_lm_eval_samples, read_results, task_scores
from modelcore.evaluation.runner import EvalSettings, evaluate
from modelcore.evaluation.taskconfig import load_task_config

pytest.importorskip("lm_eval")

TASKS = ("parity_mc", "parity_ll", "parity_ppl", "parity_gen", "parity_fill")


def _write_tasks(root: Path) -> Path:
    data = root / "data"
    facts_train = write_jsonl(data / "facts_train.jsonl", builtin_rows("rw_facts", "train"))
    facts_test = write_jsonl(data / "facts_test.jsonl", builtin_rows("rw_facts", "test")[:40])
    arith = write_jsonl(data / "arith.jsonl", builtin_rows("rw_arith", "test")[:16])
    sentences = [f"{r['question']} {r['choices'][r['label']]}." for r in builtin_rows("rw_facts", "test")]
    texts = [
        {"text": " ".join(sentences[(7 * i + j) % 60] for j in range(n))}
        for i, n in enumerate([2, 5, 9, 14, 20, 27, 35])
    ]
    texts.append({"text": "Short one."})
    prose = write_jsonl(data / "prose.jsonl", texts)
    # Winogrande-style: the choices complete the context and the shared rest of the sentence is scored.
    fill = [
        {
            "sentence": f"{r['question']} _ and that is well known.",
            "option1": r["choices"][r["label"]] if i % 2 == 0 else r["choices"][(r["label"] + 1) % 4],
            "option2": r["choices"][(r["label"] + 1) % 4] if i % 2 == 0 else r["choices"][r["label"]],
            "answer": "1" if i % 2 == 0 else "2",
        }
        for i, r in enumerate(builtin_rows("rw_facts", "test")[:20])
    ]
    fill_file = write_jsonl(data / "fill.jsonl", fill)
    tasks = {
        "parity_mc": {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"train": str(facts_train), "test": str(facts_test)}},
            "training_split": "train",
            "test_split": "test",
            "output_type": "multiple_choice",
            "description": "Complete each sentence.\n\n",
            "doc_to_text": "Q: {{question}}\nA:",
            "doc_to_target": "label",
            "doc_to_choice": "choices",
            "num_fewshot": 2,
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
            "metadata": {"version": 2.0},
        },
        "parity_ll": {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(arith)}},
            "test_split": "test",
            "output_type": "loglikelihood",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": " {{answer}}",
            "metric_list": [{"metric": "perplexity"}, {"metric": "acc"}],
        },
        "parity_ppl": {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(prose)}},
            "test_split": "test",
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "text",
            "metric_list": [
                {"metric": "word_perplexity"},
                {"metric": "byte_perplexity"},
                {"metric": "bits_per_byte"},
            ],
        },
        "parity_gen": {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(arith)}},
            "test_split": "test",
            "output_type": "generate_until",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "answer",
            "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 6, "do_sample": False},
            "num_fewshot": 1,  # no training split: examples come from the test split itself
            "metric_list": [{"metric": "exact_match", "ignore_case": True}],
        },
        "parity_fill": {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(fill_file)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "{{answer | int - 1}}",
            "doc_to_choice": "{{[sentence.split('_')[0] + option1, sentence.split('_')[0] + option2]}}",
            "doc_to_target": "{{sentence.split('_')[1].strip()}}",
            "metric_list": [{"metric": "acc"}],
        },
    }
    task_dir = root / "tasks"
    task_dir.mkdir()
    for name, body in tasks.items():
        (task_dir / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **body}, sort_keys=False))
    return task_dir


@pytest.fixture(scope="module")
def both_runs(tiny_hf_dir: Path, tiny_hf_model, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("parity")
    task_dir = _write_tasks(root)
    out = root / "lm_eval_out"
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf_home"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable, "-m", "lm_eval",
        "--model", "hf",
        "--model_args", f"pretrained={tiny_hf_dir},dtype=float32",
        "--tasks", ",".join(TASKS),
        "--include_path", str(task_dir),
        "--device", "cpu",
        "--batch_size", "8",
        "--output_path", str(out),
        "--log_samples",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    peer = json.loads(next(out.rglob("results_*.json")).read_text())
    peer_samples = {
        t: sorted(
            (json.loads(line) for line in next(out.rglob(f"samples_{t}_*.jsonl")).read_text().splitlines()),
            key=lambda s: s["doc_id"],
        )
        for t in TASKS
    }
    configs = [load_task_config(task_dir / f"{t}.yaml") for t in TASKS]
    ours = evaluate(tiny_hf_model, configs, EvalSettings(batch_size=8))
    return ours, peer, peer_samples, out


def _peer_lls(sample: dict) -> list[float]:
    return [float(r[0]) if isinstance(r, list) else float(r) for r in sample["filtered_resps"]]


@pytest.mark.parametrize("task", ["parity_mc", "parity_ll", "parity_ppl", "parity_fill"])
def test_per_sample_loglikelihoods_match_lm_eval(both_runs, task):
    ours, _, peer_samples, _ = both_runs
    mine = ours["samples"][task]
    assert len(mine) == len(peer_samples[task])
    for m, p in zip(mine, peer_samples[task], strict=True):
        assert m["doc_id"] == p["doc_id"]
        peer_lls = _peer_lls(p)
        assert len(m["loglikelihoods"]) == len(peer_lls)
        assert m["loglikelihoods"] == pytest.approx(peer_lls, abs=1e-4), (task, m["doc_id"])


def test_prompts_and_few_shot_examples_match_lm_eval(both_runs):
    ours, _, peer_samples, _ = both_runs
    for task in ("parity_mc", "parity_ll", "parity_gen", "parity_fill"):
        for m, p in zip(ours["samples"][task], peer_samples[task], strict=True):
            peer_args = [a["arg_0"] for a in p["arguments"].values()]
            assert [a[0] for a in m["arguments"]] == peer_args, (task, m["doc_id"])
            if task != "parity_gen":
                assert [a[1] for a in m["arguments"]] == [a["arg_1"] for a in p["arguments"].values()]
    assert "Complete each sentence.\n\nQ: " in ours["samples"]["parity_mc"][0]["prompt"]
    assert ours["samples"]["parity_mc"][0]["prompt"].count("\nA: ") == 2  # two solved examples
    assert all(s["prompt"].count("Question:") == 2 for s in ours["samples"]["parity_gen"])
    assert ours["samples"]["parity_fill"][0]["arguments"][0][1] == " and that is well known."


def test_greedy_generations_match_lm_eval(both_runs):
    ours, _, peer_samples, _ = both_runs
    mine = [s["prediction"] for s in ours["samples"]["parity_gen"]]
    theirs = [p["filtered_resps"][0] for p in peer_samples["parity_gen"]]
    assert mine == theirs


@pytest.mark.parametrize("task", TASKS)
def test_metrics_and_stderrs_match_lm_eval(both_runs, task):
    ours, peer, _, _ = both_runs
    mine, theirs = ours["results"][task], peer["results"][task]
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        if isinstance(value, str):
            assert mine[key] == value, key
        elif key.startswith(("acc", "exact_match", "sample_len")):
            assert mine[key] == value, key  # counts of right answers: exactly equal
        else:
            assert mine[key] == pytest.approx(value, rel=1e-5), key
    assert ours["n-shot"][task] == peer["n-shot"][task]
    assert ours["versions"][task] == peer["versions"][task]
    assert ours["n-samples"][task] == peer["n-samples"][task]
    assert ours["higher_is_better"][task] == peer["higher_is_better"][task]


def test_the_comparison_is_not_vacuous(both_runs, tiny_hf_model):
    ours, peer, _, _ = both_runs
    # The random model must separate choices, or "metrics identical" would prove little.
    lls = [s["loglikelihoods"] for s in ours["samples"]["parity_mc"]]
    assert all(len(set(round(x, 3) for x in row)) > 1 for row in lls)
    assert 0.0 < peer["results"]["parity_mc"]["acc,none"] < 1.0
    n_tokens = [len(tiny_hf_model.encode(s["gold"])) for s in ours["samples"]["parity_ppl"]]
    assert max(n_tokens) > 2 * tiny_hf_model.max_length, "some texts must span several rolling windows"
    # Both scoring paths are compared: prompts that fit share their context, longer ones are cut.
    fits = [
        len(tiny_hf_model.encode(a[0] + a[1])) <= tiny_hf_model.max_length
        for s in ours["samples"]["parity_mc"]
        for a in s["arguments"]
    ]
    assert 0 < sum(fits) < len(fits)


def test_lm_eval_results_and_samples_import_as_ours(both_runs):
    ours, _, _, out = both_runs
    peer = read_results(next(out.rglob("results_*.json")))
    for task in TASKS:
        mine, theirs = task_scores(ours)[task], task_scores(peer)[task]
        assert set(mine) == set(theirs)
        output_type = peer["configs"][task]["output_type"]
        imported = read_lm_eval_samples(next(out.rglob(f"samples_{task}_*.jsonl")), output_type)
        for m, p in zip(ours["samples"][task], imported, strict=True):
            assert m["doc_id"] == p["doc_id"]
            assert m["metrics"].keys() == p["metrics"].keys()
            if "loglikelihoods" in m:
                assert p["loglikelihoods"] == pytest.approx(m["loglikelihoods"], abs=1e-4)
            if task == "parity_gen":
                assert p["prediction"] == m["prediction"]
