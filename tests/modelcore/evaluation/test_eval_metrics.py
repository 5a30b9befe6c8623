"""Metric values and standard errors, computed from first principles."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from modelcore.evaluation import metrics as M
from modelcore.evaluation.results import TaskResult, build_results, task_scores
from modelcore.evaluation.taskconfig import MetricSpec


def test_mean_stderr_is_sample_std_over_sqrt_n():
    items = [1.0, 0.0, 1.0, 1.0, 0.0]
    value, stderr = M.aggregate("acc", MetricSpec("acc"), items, 1000)
    assert value == 0.6
    assert stderr == pytest.approx(statistics.stdev(items) / math.sqrt(5))


def test_perplexity_bootstrap_is_deterministic_and_sensible():
    rnd = random.Random(0)
    lls = [-rnd.uniform(1, 5) for _ in range(40)]
    value, stderr = M.aggregate("perplexity", MetricSpec("perplexity"), lls, 2000)
    assert value == pytest.approx(math.exp(-sum(lls) / 40))
    again = M.aggregate("perplexity", MetricSpec("perplexity"), lls, 2000)[1]
    assert stderr == again
    # The delta method's estimate of the same standard error.
    delta = value * statistics.stdev(lls) / math.sqrt(40)
    assert stderr == pytest.approx(delta, rel=0.2)


def test_weighted_perplexities_and_bits_per_byte_have_no_stderr():
    items = [(-10.0, 5), (-30.0, 15)]
    assert M.aggregate("word_perplexity", MetricSpec("word_perplexity"), items, 100) == (math.exp(2.0), "N/A")
    value, stderr = M.aggregate("bits_per_byte", MetricSpec("bits_per_byte"), items, 100)
    assert value == pytest.approx(2.0 / math.log(2)) and stderr == "N/A"


def test_multiple_choice_acc_norm_divides_by_characters():
    # Choice 1 has the higher total loglikelihood but the lower per-character one.
    out = M.multiple_choice_metrics([-10.0, -6.0], [False, True], ["a long answer", "b"], gold=0)
    assert out == {"acc": 0.0, "acc_norm": 1.0, "exact_match": 0.0}
    assert M.multiple_choice_metrics([-1.0, -2.0], [True, False], ["x", "y"], gold=[0, 1])["acc"] == 1.0


def test_exact_match_options():
    assert M.exact_match("Paris", "paris", {"ignore_case": True}) == 1.0
    assert M.exact_match("Paris!", "Paris", {"ignore_punctuation": True}) == 1.0
    assert M.exact_match("The answer: 4", "4", {"regexes_to_ignore": ["The answer: "]}) == 1.0
    assert M.exact_match("4", "5", {}) == 0.0


def test_results_round_trip_through_task_scores():
    result = TaskResult(
        "t", {}, 1.0, 0, 3, {"acc": (0.5, 0.1), "bits_per_byte": (2.0, "N/A")}, {"acc": True}, []
    )
    data = build_results([result], {"model": "x"}, 0.0, 1.0)
    assert data["results"]["t"]["acc,none"] == 0.5 and data["results"]["t"]["acc_stderr,none"] == 0.1
    assert task_scores(data) == {"t": {"acc": (0.5, 0.1), "bits_per_byte": (2.0, None)}}
