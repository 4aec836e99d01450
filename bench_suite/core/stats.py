"""Summaries of raw per-call times, on plain sequences of floats.

Medians and quartiles rather than means: timing distributions are skewed (a preempted sample
is slow, never fast), and the median's confidence interval needs no assumption about their
shape. The interval is the classic distribution-free one from order statistics: the number of
samples below the true median is Binomial(n, 1/2).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

#: A cell is flagged noisy when its interquartile range exceeds this fraction of the median,
#: or when the median's confidence half-width exceeds NOISY_REL_CI.
NOISY_REL_IQR = 0.10
NOISY_REL_CI = 0.05


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    ci_low: float
    ci_high: float
    mean: float
    stdev: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_ci(self) -> float:
        """Relative half-width of the median's confidence interval (the "±" of the median)."""
        return rel_half_width(self.median, self.ci_low, self.ci_high)

    @property
    def noisy(self) -> bool:
        if self.n == 0 or self.median <= 0:
            return False
        return self.iqr / self.median > NOISY_REL_IQR or self.rel_ci > NOISY_REL_CI


def rel_half_width(median: float, low: float, high: float) -> float:
    if median <= 0 or not math.isfinite(low) or not math.isfinite(high):
        return math.inf
    return max(median - low, high - median) / median


def quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    if not sorted_xs:
        return math.nan
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@functools.lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based ranks (lo, hi) of the order statistics bounding the median's interval.

    Returns the narrowest symmetric pair whose coverage is at least ``confidence``; with too
    few samples for that, the full range (0, n-1), whose coverage is then lower.

    One pass over the Binomial(n, 1/2) terms, each from the one before (O(n), cached): the
    stopping rule asks for this every few samples, so it must stay cheap at n in the
    thousands (summing ``comb`` terms afresh per rank was O(n^2): 0.7 s at n=1000).
    """
    if n <= 0:
        raise ValueError("no samples")
    alpha = 1.0 - confidence
    if n > 1000:  # the normal approximation, with continuity correction, is exact enough
        z = math.sqrt(2) * _erfinv(confidence)
        lo = max(0, math.floor(n / 2 - z * math.sqrt(n) / 2) - 1)
        return lo, n - 1 - lo
    # rank: the largest 1-based r with P(B <= r - 1) <= alpha/2; then [x_(r), x_(n+1-r)]
    # (1-based) covers at least 1 - alpha.
    term = 0.5**n  # P(B = 0); n <= 1000 keeps it a normal float
    cdf = term
    rank = 0
    while rank + 1 <= n // 2 and cdf <= alpha / 2:
        rank += 1
        term *= (n - rank + 1) / rank  # P(B = rank) from P(B = rank - 1)
        cdf += term
    lo = max(rank - 1, 0)
    return lo, n - 1 - lo


def _erfinv(y: float) -> float:
    """Inverse error function by Newton's method (enough for confidence levels)."""
    x = 0.0
    for _ in range(60):
        err = math.erf(x) - y
        x -= err / (2 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def median_ci(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    s = sorted(xs)
    lo, hi = median_ci_ranks(len(s), confidence)
    return s[lo], s[hi]


def summarize(xs: Sequence[float], confidence: float = 0.95) -> Summary:
    if len(xs) == 0:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    s = sorted(xs)
    n = len(s)
    lo, hi = median_ci_ranks(n, confidence)
    mean = math.fsum(s) / n
    var = math.fsum((x - mean) ** 2 for x in s) / (n - 1) if n > 1 else 0.0
    return Summary(
        n=n,
        median=quantile(s, 0.5),
        q1=quantile(s, 0.25),
        q3=quantile(s, 0.75),
        ci_low=s[lo],
        ci_high=s[hi],
        mean=mean,
        stdev=math.sqrt(var),
        min=s[0],
        max=s[-1],
    )


# --- between rounds -------------------------------------------------------------------------


def summarize_rounds(medians: Sequence[float], confidence: float = 0.95) -> Summary:
    """A summary of positive round medians whose interval is the t-interval of their mean on
    the log scale (the scale ``compare`` tests on), widened where needed to hold the median.

    An order-statistic interval of five values is their range at 94% and says where *this*
    run's rounds fell; measured on the 2-core VM, another run's median fell inside it in 71%
    of pairs. The t-interval uses the rounds' spread to say where the centre is, and held
    another run's median in 87% (docs/compare.md)."""
    s = summarize(medians, confidence)
    logs = [math.log(x) for x in medians if x > 0]
    n = len(logs)
    if n < 2 or n != len(medians):
        return s
    from scipy.stats import t as student_t

    mean = math.fsum(logs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / (n - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return replace(s, ci_low=min(math.exp(mean - half), s.median),
                               ci_high=max(math.exp(mean + half), s.median))


#: Rounds fall into two groups (``two_groups``) when the gap between the groups is at least
#: this ratio (30%) ...
TWO_GROUPS_MIN_GAP = 1.3
#: ... and at least this many times the spread (standard deviation, log scale) inside them.
TWO_GROUPS_GAP_OVER_SPREAD = 4.0


def two_groups(values: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The low and high groups, if positive ``values`` (rounds' medians) split in two far apart.

    This is what a process-level bimodal case looks like (a Hadamard product at 6.2 µs in
    some processes, 12.2 µs in others): the rounds agree within each group and disagree far
    beyond that between them. The split is at the widest gap in log scale, and each group
    needs two values: one stray round is an outlier (a burst the monitor missed), not a mode,
    and the tests see it as spread. Fewer than 4 values cannot tell: None.
    """
    xs = sorted(x for x in values if x > 0 and math.isfinite(x))
    if len(xs) < 4:
        return None
    logs = [math.log(x) for x in xs]
    least = 2
    best, at = -1.0, -1
    for i in range(least - 1, len(logs) - least):
        gap = logs[i + 1] - logs[i]
        if gap > best:
            best, at = gap, i
    if at < 0 or best < math.log(TWO_GROUPS_MIN_GAP):
        return None
    low, high = logs[: at + 1], logs[at + 1:]
    ss = sum((x - sum(g) / len(g)) ** 2 for g in (low, high) if len(g) > 1 for x in g)
    dof = sum(len(g) - 1 for g in (low, high))
    spread = math.sqrt(ss / dof) if dof > 0 else 0.0
    if best < TWO_GROUPS_GAP_OVER_SPREAD * spread:
        return None
    return tuple(xs[: at + 1]), tuple(xs[at + 1:])
