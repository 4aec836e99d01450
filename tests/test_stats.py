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


def test_rounds_interval_is_the_t_interval_of_the_log_mean() -> None:
    from scipy import stats as sps

    xs = [1.0, 1.1, 0.95, 1.05, 1.0]
    s = stats.summarize_rounds(xs)
    logs = np.log(xs)
    half = sps.t.ppf(0.975, 4) * logs.std(ddof=1) / math.sqrt(5)
    assert s.ci_low == pytest.approx(math.exp(logs.mean() - half))
    assert s.ci_high == pytest.approx(math.exp(logs.mean() + half))
    assert s.median == 1.0 and s.n == 5  # the rest is summarize's
    # the median is always inside, even where the log mean's interval would miss it
    skewed = stats.summarize_rounds([1.0, 1.0, 1.0, 5.0, 5.0])
    assert skewed.ci_low <= skewed.median <= skewed.ci_high
    # one round, or a value that is not positive: summarize's interval
    assert stats.summarize_rounds([2.0]) == stats.summarize([2.0])
    assert stats.summarize_rounds([0.0, 1.0, 2.0]) == stats.summarize([0.0, 1.0, 2.0])


def test_rounds_interval_covers_the_centre_at_its_level() -> None:
    # lognormal round medians, 5 rounds, 10% spread: the 95% interval holds the true centre in
    # about 95% of 2000 seeded trials
    rng = np.random.default_rng(7)
    hits = sum(s.ci_low <= 1.0 <= s.ci_high for s in
               (stats.summarize_rounds(list(np.exp(rng.normal(0, 0.1, 5)))) for _ in range(2000)))
    assert 0.93 <= hits / 2000 <= 0.97
