"""Loglikelihood requests/s of Runwright's evaluator vs lm-evaluation-harness's HF backend.

    python -m benchmarks.eval_throughput [--layers 4] [--d-model 256] [--num-fewshot 3] [--batch-size 8] [--threads 1]

Builds a random Llama model and a byte-level BPE tokenizer offline, saves them as a
Hugging Face directory, and evaluates the built-in ``rw_facts`` multiple-choice
task on it with both tools in this process: same model files, task YAML, few-shot
count and batch size. The same work is timed on both sides. Outside: model loading,
and the task index (lm-eval's ``TaskManager``, our ``discover_tasks``), built once.
Inside: loading the task (its YAML and data file), prompt building, scoring and
metrics. lm-eval's ``simple_evaluate`` ends with a report of the environment (``git
describe``, ``torch.utils.collect_env``, tokenizer details), which our evaluator does
not write: the time spent in it is taken out of the peer's figure and listed apart
(``peer_report_seconds``). Prints one JSON
object: ``ours``, ``peer`` (each side's fastest of ``--repeats`` interleaved runs),
``ratio`` (ours/peer), ``unit``, the median ratio over the back-to-back pairs,
the settings and both sides' metrics, which must be identical (exit status 1
otherwise). ``scoring_only`` times the same loglikelihood requests through each
side's scorer alone (``HFLM.loglikelihood`` vs ``score_loglikelihood``).

Where the gain comes from: each question's context runs once and its choices run
on its KV cache (lm-eval runs context + choice per choice), the vocabulary
projection covers only scored positions, and the task pipeline has no
``datasets`` round trip. With three-shot prompts the context is most of every
request. lm-eval already reuses one forward pass when all choices are single
tokens, so on such tasks expect the scoring gain to shrink toward parity.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelcore.evaluation.taskconfig import BUILTIN_TASKS_DIR

# What lm-eval's simple_evaluate calls after evaluating, to describe the run: not evaluation work.
PEER_REPORT_FUNCTIONS = ("get_git_commit_hash", "add_env_info", "add_tokenizer_info")


def corpus_for_tokenizer(general_mb: float = 0.0) -> list[str]:
    """The built-in tasks' text, plus ``general_mb`` of the built-in corpus for a realistic vocabulary.

    Trained on the task text alone, a large vocabulary turns every answer into one
    token, which no real tokenizer does.
    """
    texts = []
    for path in sorted(BUILTIN_TASKS_DIR.rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.append(" ".join([row["question"], *row["choices"]]))
    if general_mb > 0:
        from modelcore.data import capped_documents

        return texts + list(capped_documents("stdlib", general_mb))
    return texts * 4


def build_tiny_hf_model(
    out_dir: str | Path,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 256,
    seed: int = 0,
    add_bos: bool = True,
    general_corpus_mb: float = 0.0,
) -> Path:
    """A random LlamaForCausalLM + trained byte-level BPE tokenizer, saved as a HF directory."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_for_tokenizer(general_corpus_mb), trainer=trainer)
    if add_bos:
        # Like Llama's tokenizer: encode() puts <s> first, which exercises lm-eval's BOS handling.
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    hf_tok.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=d_model,
        intermediate_size=d_model * 4,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=max_positions,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(cfg)
    # Random init at the default scale gives near-uniform predictions; a larger scale
    # makes choices differ, so accuracy metrics actually compare something.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    model.save_pretrained(out)
    return out


def export_task_for_lm_eval(task: str, out_dir: str | Path) -> Path:
    """A copy of a built-in task's YAML with absolute data paths: lm-eval resolves them against the cwd."""
    import yaml

    src = next(p for p in BUILTIN_TASKS_DIR.rglob("*.yaml") if yaml.safe_load(p.read_text())["task"] == task)
    data = yaml.safe_load(src.read_text())
    if "include" in data:
        data = {**yaml.safe_load((src.parent / data.pop("include")).read_text()), **data}
    files = data["dataset_kwargs"]["data_files"]
    data["dataset_kwargs"]["data_files"] = {k: str((src.parent / v).resolve()) for k, v in files.items()}
    data = {k: v for k, v in data.items() if v is not None}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _metrics_of(results: dict[str, Any], task: str) -> dict[str, Any]:
    entry = results["results"][task]
    return {k: v for k, v in entry.items() if "," in k}


def _n_requests(results: dict[str, Any], task: str) -> int:
    return sum(len(sample["arguments"]) for sample in results["samples"][task])


def run_ours(model: Any, task_yaml: Path, num_fewshot: int, batch_size: int) -> tuple[float, dict[str, Any]]:
    """Seconds to load the task (YAML, data) and evaluate it, and the results."""
    from modelcore.evaluation.runner import EvalSettings, evaluate
    from modelcore.evaluation.taskconfig import load_task_config

    settings = EvalSettings(batch_size=batch_size, num_fewshot=num_fewshot)
    start = time.perf_counter()
    # The task is loaded inside the timing, as lm-eval's TaskManager.load is on the peer's side
    # (evaluate reads the data file itself).
    results = evaluate(model, [load_task_config(task_yaml)], settings)
    return time.perf_counter() - start, results


@contextlib.contextmanager
def timing_peer_report(spent: list[float]) -> Iterator[None]:
    """Within the block, the seconds lm-eval spends in its end-of-run report are appended to ``spent``.

    The report's functions are wrapped where ``simple_evaluate`` looks them up, and put back after.
    """
    import lm_eval.evaluator as evaluator

    originals = {name: getattr(evaluator, name) for name in PEER_REPORT_FUNCTIONS if hasattr(evaluator, name)}

    def timed(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        return wrapper

    for name, fn in originals.items():
        setattr(evaluator, name, timed(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(evaluator, name, fn)


def run_peer(
    lm: Any, manager: Any, task: str, num_fewshot: int, batch_size: int
) -> tuple[float, float, dict[str, Any]]:
    """Seconds to load the task and evaluate it without lm-eval's report, the report's seconds, the results."""
    import lm_eval

    report: list[float] = []
    with timing_peer_report(report):
        start = time.perf_counter()
        results = lm_eval.simple_evaluate(
            model=lm, tasks=[task], num_fewshot=num_fewshot, task_manager=manager, batch_size=batch_size
        )
        total = time.perf_counter() - start
    return total - sum(report), sum(report), results


def scoring_only(
    lm: Any, model: Any, results: dict[str, Any], task: str, batch_size: int
) -> tuple[float, float]:
    """Seconds to score the task's loglikelihood requests alone: (ours, peer), same request strings."""
    from lm_eval.api.instance import Instance

    from modelcore.evaluation.scoring import encode_pair, score_loglikelihood

    args = [tuple(a) for sample in results["samples"][task] for a in sample["arguments"]]
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=a, idx=0) for a in args]
    start = time.perf_counter()
    peer_lls = [ll for ll, _ in lm.loglikelihood(instances, disable_tqdm=True)]
    peer_t = time.perf_counter() - start
    start = time.perf_counter()
    ours_lls = [
        ll for ll, _ in score_loglikelihood(model, [encode_pair(model, c, x) for c, x in args], batch_size)
    ]
    ours_t = time.perf_counter() - start
    if max(abs(a - b) for a, b in zip(ours_lls, peer_lls, strict=True)) > 1e-4:
        raise AssertionError("scoring-only loglikelihoods differ from lm-eval's by more than 1e-4")
    return ours_t, peer_t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_throughput")
    p.add_argument("--task", default="rw_facts")
    p.add_argument("--num-fewshot", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs per side; the fastest counts")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both sides; 1 keeps timings steady on a shared machine",
    )
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from modelcore.evaluation.lm import HFCausalLM
    from modelcore.evaluation.taskconfig import discover_tasks

    with tempfile.TemporaryDirectory(prefix="rw-evalbench-") as tmp:
        model_dir = build_tiny_hf_model(
            Path(tmp) / "model",
            d_model=args.d_model,
            n_layers=args.layers,
            vocab_size=args.vocab_size,
            max_positions=1024,
            general_corpus_mb=1.0,
        )
        # Each side's task index, built once outside the timing.
        manager = TaskManager(include_path=str(export_task_for_lm_eval(args.task, Path(tmp) / "tasks")))
        task_yaml = discover_tasks()[args.task]
        lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=args.batch_size)
        ours_model = HFCausalLM(model_dir)
        ours_times, peer_times, peer_report = [], [], []
        for i in range(args.repeats):
            # Alternate who goes first: load on this shared machine drifts within seconds.
            order = ("peer", "ours") if i % 2 == 0 else ("ours", "peer")
            for side in order:
                if side == "peer":
                    t, report, peer_results = run_peer(
                        lm, manager, args.task, args.num_fewshot, args.batch_size
                    )
                    peer_times.append(t)
                    peer_report.append(report)
                else:
                    t, ours_results = run_ours(ours_model, task_yaml, args.num_fewshot, args.batch_size)
                    ours_times.append(t)
    scoring = [
        scoring_only(lm, ours_model, ours_results, args.task, args.batch_size) for _ in range(args.repeats)
    ]
    ours_metrics, peer_metrics = _metrics_of(ours_results, args.task), _metrics_of(peer_results, args.task)
    same = ours_metrics == peer_metrics
    n_requests = _n_requests(ours_results, args.task)
    ours, peer = n_requests / min(ours_times), n_requests / min(peer_times)
    paired = sorted(p / o for o, p in zip(ours_times, peer_times, strict=True))
    print(
        json.dumps(
            {
                "ours": round(ours, 2),
                "peer": round(peer, 2),
                "ratio": round(ours / peer, 3),
                "unit": "requests/s",
                "ratio_median_of_pairs": round(paired[len(paired) // 2], 3),
                "task": args.task,
                "num_fewshot": args.num_fewshot,
                "batch_size": args.batch_size,
                "requests": n_requests,
                "model": {
                    "arch": "LlamaForCausalLM",
                    "d_model": args.d_model,
                    "layers": args.layers,
                    "vocab_size": args.vocab_size,
                    "dtype": "float32",
                    "device": "cpu",
                    "threads": args.threads,
                },
                "seconds": {
                    "ours": [round(t, 3) for t in ours_times],
                    "peer": [round(t, 3) for t in peer_times],
                },
                "timed_work": "loading the task (YAML and data), prompts, scoring, metrics; on both sides",
                "peer_report_seconds": [round(t, 3) for t in peer_report],
                "peer_report_note": "lm-eval's end-of-run report ("
                + ", ".join(PEER_REPORT_FUNCTIONS)
                + "), not counted in the peer's seconds: our evaluator writes no such report",
                "scoring_only": {
                    "ours": round(n_requests / min(o for o, _ in scoring), 2),
                    "peer": round(n_requests / min(p for _, p in scoring), 2),
                    "ratio": round(min(p for _, p in scoring) / min(o for o, _ in scoring), 3),
                    "ratio_median_of_pairs": round(sorted(p / o for o, p in scoring)[len(scoring) // 2], 3),
                    "note": "the same loglikelihood requests scored, without task loading or prompt building",
                },
                "metrics_identical": same,
                "metrics": {"ours": ours_metrics, "peer": peer_metrics},
            }
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
