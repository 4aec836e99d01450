from __future__ import annotations

import math

import numpy as np
import pytest

from bench_suite.core import stats


def test_summary_matches_numpy() -> None:
    xs = list(np.random.default_rng(0).lognormal(0, 0.2, 101))
    s = stats.summarize(xs)
    assert s.n == 101
    assert s.median == pytest.approx(np.median(xs))
    assert s.q1 == pytest.approx(np.quantile(xs, 0.25))
    assert s.q3 == pytest.approx(np.quantile(xs, 0.75))
    assert s.mean == pytest.approx(np.mean(xs))
    assert s.stdev == pytest.approx(np.std(xs, ddof=1))
    assert s.ci_low <= s.median <= s.ci_high


@pytest.mark.parametrize("n, ranks", [(10, (1, 8)), (20, (5, 14)), (100, (39, 60)), (6, (0, 5))])
def test_median_ci_ranks_match_the_binomial_table(n: int, ranks: tuple[int, int]) -> None:
    # 1-based order statistics of the 95% CI for the median: n=10 -> (2, 9), n=20 -> (6, 15),
    # n=100 -> (40, 61) (Conover, Practical Nonparametric Statistics, table A3)
    assert stats.median_ci_ranks(n) == ranks


def test_median_ci_covers_the_true_median_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    trials = 2000
    for _ in range(trials):
        xs = rng.exponential(1.0, 30)
        lo, hi = stats.median_ci(list(xs))
        hits += lo <= math.log(2) <= hi
    assert 0.93 <= hits / trials <= 0.99


def test_large_n_uses_the_normal_approximation_consistently() -> None:
    lo_exact, _ = stats.median_ci_ranks(1000)
    lo_approx, _ = stats.median_ci_ranks(1001)
    assert abs(lo_exact - lo_approx) <= 1


def test_noise_flag() -> None:
    steady = stats.summarize([1.0, 1.001, 0.999, 1.0, 1.002, 0.998, 1.0, 1.001, 0.999, 1.0])
    assert not steady.noisy
    noisy = stats.summarize([1.0, 1.5, 0.7, 1.2, 0.9, 1.4, 0.8, 1.3, 1.1, 0.6])
    assert noisy.noisy


def test_empty_summary_is_nan_not_an_error() -> None:
    s = stats.summarize([])
    assert s.n == 0 and math.isnan(s.median) and not s.noisy
