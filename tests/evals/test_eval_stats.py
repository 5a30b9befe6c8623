"""Paired tests against scipy (exact binomial, chi-square) and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webapp.evals import stats

scipy_stats = pytest.importorskip("scipy.stats")


def test_mcnemar_exact_matches_scipy_binomial_test():
    # 3 samples only A gets right, 12 only B, 85 concordant.
    a = [1] * 3 + [0] * 12 + [1] * 40 + [0] * 45
    b = [0] * 3 + [1] * 12 + [1] * 40 + [0] * 45
    result = stats.mcnemar(a, b)
    assert (result.only_a, result.only_b) == (3, 12)
    assert result.exact
    assert result.p_value == pytest.approx(scipy_stats.binomtest(3, 15, 0.5).pvalue, rel=1e-9)
    assert result.statistic == pytest.approx((abs(3 - 12) - 1) ** 2 / 15)


def test_mcnemar_large_counts_use_chi_square_with_continuity_correction():
    a = [1] * 700 + [0] * 560
    b = [0] * 700 + [1] * 560
    result = stats.mcnemar(a, b)
    assert not result.exact
    expected = scipy_stats.chi2.sf((abs(700 - 560) - 1) ** 2 / 1260, df=1)
    assert result.p_value == pytest.approx(expected, rel=1e-9)


def test_mcnemar_of_identical_models_is_not_significant():
    result = stats.mcnemar([1, 0, 1], [1, 0, 1])
    assert result.p_value == 1.0 and result.only_a == result.only_b == 0


def test_mcnemar_rejects_unpaired_inputs():
    with pytest.raises(ValueError, match="same samples"):
        stats.mcnemar([1, 0], [1])


def test_exact_binomial_tail_stays_finite_for_many_discordant_pairs():
    assert stats._binomial_two_sided(400, 1000) == pytest.approx(
        scipy_stats.binomtest(400, 1000).pvalue, rel=1e-7
    )


def test_paired_bootstrap_of_identical_scores_finds_no_difference():
    values = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
    result = stats.paired_bootstrap(stats.mean_statistic(values), stats.mean_statistic(values), len(values))
    assert result.difference == 0.0 and result.ci_low == result.ci_high == 0.0
    assert result.p_value == 1.0


def test_paired_bootstrap_detects_a_clear_difference_and_brackets_it():
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.75).astype(float)
    b = (rng.random(400) < 0.45).astype(float)
    result = stats.paired_bootstrap(stats.mean_statistic(a), stats.mean_statistic(b), 400, iterations=2000)
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert result.ci_low < result.difference < result.ci_high
    assert result.ci_low > 0
    assert result.p_value < 0.01


def test_paired_bootstrap_small_noisy_difference_is_not_significant():
    a = [1, 0, 1, 0, 1, 0, 1, 0, 1, 1]
    b = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    result = stats.paired_bootstrap(stats.mean_statistic(a), stats.mean_statistic(b), 10, iterations=4000)
    assert result.difference == pytest.approx(0.1)
    assert result.p_value > 0.2


def test_ratio_statistic_computes_corpus_bits_per_byte():
    ll = [-10.0, -30.0]
    nbytes = [10.0, 20.0]
    stat = stats.ratio_statistic(ll, nbytes, lambda r: -r / math.log(2))
    assert float(stat(np.arange(2))) == pytest.approx(40 / 30 / math.log(2))


def test_best_indices_respect_direction_ties_and_missing_scores():
    assert stats.best_indices([0.5, 0.7, None, 0.7], higher_is_better=True) == {1, 3}
    assert stats.best_indices([3.1, 2.9, None], higher_is_better=False) == {1}
    assert stats.best_indices([None, float("nan")], higher_is_better=True) == set()
