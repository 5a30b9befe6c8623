"""Paired significance tests between two models scored on the same samples.

Torch-free (numpy only) so that the web process can compute them for a report.

- McNemar's test on per-sample correctness (0/1 metrics such as ``acc``): only
  the discordant pairs matter. Exact two-sided binomial test when they are few,
  the chi-square approximation with continuity correction otherwise.
- Paired bootstrap: resample the same document indices for both models and look
  at the distribution of the difference of their corpus-level scores; works for
  means (accuracy) and for ratio metrics (perplexities, bits per byte).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

EXACT_MCNEMAR_MAX_DISCORDANT = 1000


@dataclass(frozen=True)
class McNemarResult:
    only_a: int  # samples A got right and B wrong
    only_b: int
    statistic: float  # chi-square with continuity correction (also reported when the exact test is used)
    p_value: float
    exact: bool


@dataclass(frozen=True)
class BootstrapResult:
    difference: float  # score(A) - score(B) on all samples
    ci_low: float
    ci_high: float
    p_value: float
    iterations: int


def mcnemar(correct_a: Sequence[float], correct_b: Sequence[float]) -> McNemarResult:
    """McNemar's test that A and B have the same accuracy on these paired samples."""
    if len(correct_a) != len(correct_b):
        raise ValueError("mcnemar: both models must be scored on the same samples")
    a = np.asarray(correct_a, dtype=float) > 0.5
    b = np.asarray(correct_b, dtype=float) > 0.5
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return McNemarResult(0, 0, 0.0, 1.0, True)
    statistic = (abs(only_a - only_b) - 1) ** 2 / n
    if n <= EXACT_MCNEMAR_MAX_DISCORDANT:
        return McNemarResult(only_a, only_b, statistic, _binomial_two_sided(min(only_a, only_b), n), True)
    # Chi-square with one degree of freedom: P(X > s) = erfc(sqrt(s / 2)).
    return McNemarResult(only_a, only_b, statistic, math.erfc(math.sqrt(statistic / 2)), False)


def _binomial_two_sided(k: int, n: int) -> float:
    """P(X <= k or X >= n - k) for X ~ Binomial(n, 1/2), k <= n / 2."""
    # Sum in log space: comb(n, i) / 2**n underflows floats for n around 1000.
    log_half_n = n * math.log(0.5)
    tail = sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
        for i in range(k + 1)
    )
    return min(1.0, 2.0 * tail)


Statistic = Callable[[np.ndarray], np.ndarray]


def mean_statistic(values: Sequence[float]) -> Statistic:
    """Score = mean of per-sample values; the returned function scores index resamples (rows)."""
    v = np.asarray(values, dtype=float)
    return lambda idx: v[idx].mean(axis=-1)


def ratio_statistic(
    numerators: Sequence[float], denominators: Sequence[float], transform: Callable[[np.ndarray], np.ndarray]
) -> Statistic:
    """Score = transform(sum(num) / sum(den)), as corpus-level perplexities are computed."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    return lambda idx: transform(num[idx].sum(axis=-1) / den[idx].sum(axis=-1))


def paired_bootstrap(
    stat_a: Statistic,
    stat_b: Statistic,
    n: int,
    *,
    iterations: int = 10_000,
    seed: int = 1234,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap of score(A) - score(B) over ``n`` shared samples.

    The p-value is two-sided under the null of no difference, from the bootstrap
    distribution shifted to mean zero (Berg-Kirkpatrick et al. 2012; Koehn 2004):
    how often a resampled difference lies as far from the observed one as the
    observed one lies from zero.
    """
    if n < 1:
        raise ValueError("paired_bootstrap: need at least one shared sample")
    all_idx = np.arange(n)
    observed = float(stat_a(all_idx) - stat_b(all_idx))
    rng = np.random.default_rng(seed)
    diffs = []
    chunk = max(1, min(iterations, 2_000_000 // n))  # bound memory: chunk x n indices at a time
    left = iterations
    while left > 0:
        k = min(chunk, left)
        idx = rng.integers(0, n, size=(k, n))
        diffs.append(stat_a(idx) - stat_b(idx))
        left -= k
    d = np.concatenate(diffs)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    extreme = np.sum(np.abs(d - observed) >= abs(observed) - 1e-12)
    p_value = float((extreme + 1) / (iterations + 1))
    return BootstrapResult(observed, float(low), float(high), min(1.0, p_value), iterations)


def best_indices(
    scores: Sequence[float | None], higher_is_better: bool, tolerance: float = 1e-12
) -> set[int]:
    """Positions of the best score (all of them on a tie); missing scores never win."""
    present = [(i, s) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if not present:
        return set()
    best = max(s for _, s in present) if higher_is_better else min(s for _, s in present)
    return {i for i, s in present if abs(s - best) <= tolerance}
