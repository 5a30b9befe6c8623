"""Run tasks on a model: documents -> prompts -> requests -> scores -> metrics -> results JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelcore.evaluation import metrics as M
from modelcore.evaluation.documents import load_splits, split_docs
from modelcore.evaluation.prompts import DocFormatter, FewshotSampler, PromptBuilder, fewshot_pool
from modelcore.evaluation.results import TaskResult, build_results
from modelcore.evaluation.taskconfig import TaskConfig, TaskConfigError

if TYPE_CHECKING:
    from modelcore.evaluation.lm import EvalModel

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class EvalSettings:
    batch_size: int = 8
    num_fewshot: int | None = None
    limit: int | None = None
    fewshot_seed: int = 1234  # lm-eval's default few-shot seed
    bootstrap_iters: int = 100000
    share_prefix: bool = True
    log_samples: bool = True


@dataclass
class _Doc:
    doc_id: int
    doc: dict[str, Any]
    prompt: str | list[str]
    args: list[tuple]  # the requests' arguments, as lm-eval logs them
    choices: list[str] | None = None
    gold: Any = None


class _Progress:
    def __init__(self, callback: ProgressCallback | None, task: str, total: int):
        self.callback, self.task, self.total, self.done = callback, task, total, 0
        self._last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        # Enough to drive a progress bar without flooding a pipe on fast tasks.
        if self.callback and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            self.callback({"event": "progress", "task": self.task, "done": self.done, "total": self.total})


def _gold_index(gold: Any, choices: list[str]) -> int | list[int]:
    if isinstance(gold, list):
        return [g if isinstance(g, int) and g < len(choices) else -100 for g in gold]
    if not isinstance(gold, int | str):  # a bool label counts as 0/1, as in lm-eval
        return -100
    if isinstance(gold, str):
        return choices.index(gold) if gold in choices else -100
    return gold if gold < len(choices) else -100


def fewshot_count(cfg: TaskConfig, override: int | None) -> int:
    """lm-eval's rule: an override applies unless the task's YAML pins ``num_fewshot: 0``."""
    if override is None or cfg.num_fewshot == 0:
        return cfg.num_fewshot or 0
    return override


def build_docs(
    cfg: TaskConfig,
    settings: EvalSettings,
    run_data: Any = None,
    splits: dict[str, list[dict[str, Any]]] | None = None,
) -> tuple[list[_Doc], int, int]:
    """Every evaluated document with its prompt and request arguments; also (n-shot, docs in split).

    ``splits`` are the task's documents when the caller has already read them.
    """
    splits = load_splits(cfg, run_data) if splits is None else splits
    eval_docs = split_docs(cfg, splits, "test_split" if cfg.test_split else "validation_split")
    fmt = DocFormatter(cfg, list(eval_docs[0]))
    n_shot = fewshot_count(cfg, settings.num_fewshot)
    pool, _ = fewshot_pool(cfg, splits)
    sampler = FewshotSampler(pool, cfg.fewshot_config.sampler, settings.fewshot_seed) if pool else None
    builder = PromptBuilder(cfg, fmt, sampler, exclude_eval_doc=cfg.fewshot_config.split == cfg.test_split)
    first_text = fmt.text(eval_docs[0]) if cfg.output_type != "loglikelihood_rolling" else ""
    multiple_input = isinstance(first_text, int) and cfg.doc_to_choice is not None
    if multiple_input and cfg.output_type != "multiple_choice":
        raise TaskConfigError(
            f"{cfg.source}: doc_to_text: gives an int, which only multiple_choice tasks allow"
        )
    docs = eval_docs[: settings.limit] if settings.limit else eval_docs
    out = []
    for doc_id, doc in enumerate(docs):
        if cfg.output_type == "loglikelihood_rolling":
            text = fmt.target(doc)
            if not isinstance(text, str):
                raise TaskConfigError(
                    f"{cfg.source}: doc_to_target: must give text for loglikelihood_rolling"
                )
            out.append(_Doc(doc_id, doc, "", [(text,)], gold=text))
            continue
        prompt = builder.context(doc, n_shot, multiple_input)
        if cfg.output_type == "multiple_choice":
            choices = fmt.choices(doc)
            if multiple_input:
                cont = f"{cfg.target_delimiter}{fmt.target(doc)}"
                args = [(c, cont) for c in prompt]
                gold = _gold_index(fmt.text(doc), choices)
            else:
                args = [(prompt, f"{cfg.target_delimiter}{c}") for c in choices]
                gold = _gold_index(fmt.target(doc), choices)
            out.append(_Doc(doc_id, doc, prompt, args, choices, gold))
        elif cfg.output_type == "loglikelihood":
            target = fmt.target(doc)
            if not isinstance(target, str):
                raise TaskConfigError(
                    f"{cfg.source}: doc_to_target: must give text for loglikelihood, got {target!r}"
                )
            out.append(_Doc(doc_id, doc, prompt, [(prompt, target)], gold=target))
        else:
            gold = fmt.target(doc)
            if cfg.doc_to_choice is not None:
                gold = fmt.choices(doc)[gold]
            elif not isinstance(gold, list):
                gold = str(gold)
            out.append(_Doc(doc_id, doc, prompt, [(prompt, cfg.generation_kwargs)], gold=gold))
    return out, n_shot, len(eval_docs)


def _score_task(
    cfg: TaskConfig, model: EvalModel, docs: list[_Doc], settings: EvalSettings, progress: _Progress
):
    # torch loads here, when a model scores: ``build_docs`` alone stays torch-free for the
    # upload's preview (modelcore.evaluation.preview), which renders prompts without a model.
    from modelcore.evaluation.scoring import encode_pair, generate_greedy, score_loglikelihood, score_rolling

    if cfg.output_type == "loglikelihood_rolling":
        return [
            [ll] for ll in score_rolling(model, [d.args[0][0] for d in docs], settings.batch_size, progress)
        ]
    if cfg.output_type == "generate_until":
        gen = cfg.generation_kwargs or {}
        return [
            [generate_greedy(model, d.args[0][0], gen["until"], gen["max_gen_toks"], progress)] for d in docs
        ]
    token_reqs = [[encode_pair(model, c, x) for c, x in d.args] for d in docs]
    flat = [r for rs in token_reqs for r in rs]
    scores = iter(score_loglikelihood(model, flat, settings.batch_size, settings.share_prefix, progress))
    return [[next(scores) for _ in rs] for rs in token_reqs]


def _sample_metrics(cfg: TaskConfig, d: _Doc, resps: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values fed to aggregation, extra fields of the sample record)."""
    wanted = [m.name for m in cfg.metric_list]
    if cfg.output_type == "multiple_choice":
        lls = [ll for ll, _ in resps]
        greedy = [g for _, g in resps]
        values = M.multiple_choice_metrics(lls, greedy, d.choices or [], d.gold)
        record = {"loglikelihoods": lls, "is_greedy": greedy, "prediction": M.argmax(lls)}
    elif cfg.output_type == "loglikelihood":
        ll, greedy = resps[0]
        values = {"perplexity": ll, "acc": int(greedy)}
        record = {"loglikelihoods": [ll], "is_greedy": [greedy]}
    elif cfg.output_type == "loglikelihood_rolling":
        ll = resps[0]
        words, nbytes = M.count_words(d.gold), M.count_bytes(d.gold)
        values = {
            "word_perplexity": (ll, words),
            "byte_perplexity": (ll, nbytes),
            "bits_per_byte": (ll, nbytes),
        }
        record = {"loglikelihoods": [ll], "words": words, "bytes": nbytes}
    else:
        text = resps[0]
        golds = d.gold if isinstance(d.gold, list) else [d.gold]
        options = next((m.options for m in cfg.metric_list if m.name == "exact_match"), {})
        values = {"exact_match": max(M.exact_match(text, str(g), options) for g in golds)}
        record = {"prediction": text}
    return {k: v for k, v in values.items() if k in wanted}, record


def evaluate_task(
    model: EvalModel, cfg: TaskConfig, settings: EvalSettings, callback: ProgressCallback | None = None
) -> TaskResult:
    if callback and settings.num_fewshot and cfg.num_fewshot == 0:
        callback(
            {"event": "warning", "task": cfg.task, "message": "num_fewshot: 0 in the task; override ignored"}
        )
    docs, n_shot, n_original = build_docs(cfg, settings, getattr(model, "run_data_config", None))
    n_requests = sum(len(d.args) for d in docs)
    if callback:
        callback({"event": "task_start", "task": cfg.task, "docs": len(docs), "requests": n_requests})
    progress = _Progress(callback, cfg.task, n_requests)
    responses = _score_task(cfg, model, docs, settings, progress)
    if progress.done < n_requests:  # repeated requests were scored once
        progress(n_requests - progress.done)
    per_metric: dict[str, list[Any]] = {m.name: [] for m in cfg.metric_list}
    samples = []
    for d, resps in zip(docs, responses, strict=True):
        values, record = _sample_metrics(cfg, d, resps)
        for name, v in values.items():
            per_metric[name].append(v)
        if settings.log_samples:
            samples.append(
                {
                    "doc_id": d.doc_id,
                    "doc": d.doc,
                    "prompt": d.prompt,
                    "arguments": [list(a) for a in d.args],
                    "choices": d.choices,
                    "gold": d.gold,
                    **record,
                    "metrics": {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()},
                }
            )
        else:
            samples.append({"doc_id": d.doc_id})
    spec = {m.name: m for m in cfg.metric_list}
    aggregated = {
        name: M.aggregate(name, spec[name], items, settings.bootstrap_iters)
        for name, items in per_metric.items()
    }
    higher = {
        m.name: m.higher_is_better if m.higher_is_better is not None else M.HIGHER_IS_BETTER[m.name]
        for m in cfg.metric_list
    }
    config = cfg.with_num_fewshot(n_shot).dump()
    result = TaskResult(cfg.task, config, cfg.version, n_shot, n_original, aggregated, higher, samples)
    if callback:
        callback({"event": "task_end", "task": cfg.task, "metrics": result.result_entry()})
    return result


def evaluate(
    model: EvalModel,
    tasks: list[TaskConfig],
    settings: EvalSettings | None = None,
    callback: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks``; the results dict in lm-eval's schema (see ``results``)."""
    settings = settings or EvalSettings()
    started = time.time()
    done = []
    for i, cfg in enumerate(tasks):
        # Every event says which task of how many, so one progress bar can span them all.
        tagged = (
            (lambda e, i=i: callback({**e, "task_number": i + 1, "task_count": len(tasks)}))
            if callback
            else None
        )
        done.append(evaluate_task(model, cfg, settings, tagged))
    config = {
        **model.model_info(),
        "batch_size": settings.batch_size,
        "device": str(model.device),
        "limit": settings.limit,
        "bootstrap_iters": settings.bootstrap_iters,
        "fewshot_seed": settings.fewshot_seed,
        "share_prefix": settings.share_prefix,
    }
    results = build_results(done, config, started, time.time(), with_samples=settings.log_samples)
    if callback:
        callback({"event": "done", "tasks": [t.name for t in done]})
    return results
