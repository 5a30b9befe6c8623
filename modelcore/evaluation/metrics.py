"""Per-sample metrics, their aggregation over a task, and standard errors.

Aggregations and standard errors follow lm-evaluation-harness: means report the
sample standard deviation over sqrt(n); ``perplexity`` and ``median`` report a
bootstrap (``iters`` resamples drawn in chunks of 1000 from ``random.Random(i)``
for chunk i, so the same iterations give lm-eval's number); the weighted
perplexities and bits-per-byte report no standard error ("N/A"), as lm-eval does.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from modelcore.evaluation.taskconfig import MetricSpec

DEFAULT_AGGREGATION = {
    "acc": "mean",
    "acc_norm": "mean",
    "exact_match": "mean",
    "perplexity": "perplexity",
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}
HIGHER_IS_BETTER = {
    "acc": True,
    "acc_norm": True,
    "exact_match": True,
    "perplexity": False,
    "word_perplexity": False,
    "byte_perplexity": False,
    "bits_per_byte": False,
}


def mean(items: Sequence[float]) -> float:
    return sum(items) / len(items)


def median(items: Sequence[float]) -> float:
    return sorted(items)[len(items) // 2]


def perplexity(items: Sequence[float]) -> float:
    return math.exp(-mean(items))


def weighted_mean(items: Sequence[tuple[float, float]]) -> float:
    total, weight = zip(*items, strict=True)
    return sum(total) / sum(weight)


def weighted_perplexity(items: Sequence[tuple[float, float]]) -> float:
    return math.exp(-weighted_mean(items))


def bits_per_byte(items: Sequence[tuple[float, float]]) -> float:
    return -weighted_mean(items) / math.log(2)


AGGREGATIONS: dict[str, Callable[[Sequence[Any]], float]] = {
    "mean": mean,
    "median": median,
    "perplexity": perplexity,
    "weighted_perplexity": weighted_perplexity,
    "bits_per_byte": bits_per_byte,
}
_BOOTSTRAPPED = {"perplexity", "median"}


def sample_stddev(items: Sequence[float]) -> float:
    mu = mean(items)
    return math.sqrt(sum((x - mu) ** 2 for x in items) / (len(items) - 1))


def mean_stderr(items: Sequence[float]) -> float:
    return sample_stddev(items) / math.sqrt(len(items))


def bootstrap_stderr(fn: Callable[[Sequence[Any]], float], items: Sequence[Any], iters: int) -> float:
    chunk = min(1000, iters)
    stats = []
    for i in range(iters // chunk):
        rnd = random.Random(i)
        for _ in range(chunk):
            stats.append(fn(rnd.choices(items, k=len(items))))
    return sample_stddev(stats)


def aggregate(
    name: str, spec: MetricSpec, items: Sequence[Any], bootstrap_iters: int
) -> tuple[float, float | str]:
    """(value, standard error or "N/A") of one metric over a task's samples."""
    agg = spec.aggregation or DEFAULT_AGGREGATION[name]
    if agg not in AGGREGATIONS:
        raise ValueError(f"metric_list.aggregation: {agg!r} is not one of {', '.join(AGGREGATIONS)}")
    fn = AGGREGATIONS[agg]
    value = fn(items)
    if bootstrap_iters <= 0 or len(items) < 2:
        return value, "N/A"
    if agg == "mean":
        return value, mean_stderr(items)
    if agg in _BOOTSTRAPPED:
        return value, bootstrap_stderr(fn, items, bootstrap_iters)
    return value, "N/A"


def argmax(values: Sequence[float]) -> int:
    """Index of the first largest value (ties go to the earlier choice, as numpy's argmax)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def multiple_choice_metrics(
    lls: Sequence[float], greedy: Sequence[bool], choices: Sequence[str], gold: int | list[int]
) -> dict[str, float]:
    """acc (highest loglikelihood), acc_norm (per character of the choice) and exact_match (greedy)."""
    pred = argmax(lls)
    # An empty choice divides by zero, which numpy (lm-eval) turns into -inf for a negative loglikelihood.
    pred_norm = argmax(
        [ll / len(c) if c else math.copysign(math.inf, ll) for ll, c in zip(lls, choices, strict=True)]
    )
    golds = gold if isinstance(gold, list) else [gold]
    return {
        "acc": 1.0 if pred in golds else 0.0,
        "acc_norm": 1.0 if pred_norm in golds else 0.0,
        "exact_match": float(int(any(greedy[g] for g in golds if 0 <= g < len(choices)))),
    }


def exact_match(prediction: str, reference: str, options: dict[str, Any]) -> float:
    for pattern in options.get("regexes_to_ignore") or []:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if options.get("ignore_case"):
        prediction, reference = prediction.lower(), reference.lower()
    if options.get("ignore_punctuation"):
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    if options.get("ignore_numbers"):
        table = str.maketrans("", "", string.digits)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return 1.0 if prediction == reference else 0.0


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))
