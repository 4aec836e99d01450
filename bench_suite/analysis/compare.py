"""Two sets of measurements -> ratios, intervals, tests and verdicts. Data only.

``compare(base_runs, cand_runs)`` returns a :class:`Comparison`: plain frozen records that
``report/comparison.py`` renders as text, Markdown, HTML or JSON and that the CLI turns into
an exit status. Nothing here prints, plots or exits.

How one case is judged (``docs/compare.md`` has the reasoning):

* ``ratio`` = median(CAND) / median(BASE) of the per-call times: above 1 is slower.
* ``ci_low``/``ci_high``: a percentile bootstrap interval for that ratio at level
  ``1 - alpha``, resampling the raw samples of each side independently (seeded per case id,
  so the same files always give the same interval).
* ``p_value``: two-sided Mann-Whitney U on the raw samples (exact distribution while it is
  cheap and there are no ties, else the tie-corrected normal approximation);
  ``p_adjusted``: Benjamini-Hochberg over every case tested in the comparison (or Holm's
  step-down, or none): when nothing changed, ``alpha`` bounds the chance that *any* case is
  called changed; when some did, the expected share of false calls among the calls.
* verdict: ``slower`` when ``p_adjusted < alpha`` and ``ratio >= 1 + threshold``;
  ``faster`` when ``p_adjusted < alpha`` and ``ratio <= 1 / (1 + threshold)``;
  ``unchanged`` when the interval lies inside ``[1 / (1 + threshold), 1 + threshold]``;
  ``inconclusive`` otherwise, and always when a side has fewer than ``min_samples`` raw
  samples or only a foreign summary (asv, pytest-benchmark: ratio shown, nothing tested).

**The unit of replication is the round** (one pass of the sweep in one process), not the
sample: samples taken back to back in one process share everything that differs between
runs, so pooling them as independent understates the spread many times over. When the
sides hold several rounds (``run --rounds``, ``ab``), the per-round medians are the data:

* ``ab`` sides (the same session, rounds measured side by side): a paired t-test on the log
  ratio of each round's medians; drift of the machine hits both members of a pair alike;
* otherwise a Welch t-test on the log round medians (or, when both sides hold several runs,
  on each run's centre: then the runs are the units);
* rounds timed while other processes held the cores a case needed (``contended``) are left
  out; a side left with too few is ``inconclusive`` ("machine busy"), never slower or faster;
* a side whose rounds fall into two groups far apart (``stats.two_groups``: bimodal
  processes) is ``inconclusive`` ("bimodal"): its ratio depends on which mode each run drew.

Measurements of a single round fall back to the raw samples (bootstrap and Mann-Whitney
above) and say so: their interval describes one process, and the spread between runs is
unknown. docs/compare.md has the simulation behind these choices.

Several measurements of one case on one side (repeated runs, a folder of them) are pooled by
default; ``combine="latest"`` keeps only the newest.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from bench_suite.analysis.noise import detectable_change
from bench_suite.core import stats
from bench_suite.core.errors import UsageError
from bench_suite.core.verdict import CORRECTIONS, DEFAULT_ALPHA, DEFAULT_CORRECTION, DEFAULT_THRESHOLD
from bench_suite.store.env_record import EnvRecord
from bench_suite.store.noise import NoiseProfile, profiles_for_runs
from bench_suite.store.results import Measurement, Run, json_safe

if TYPE_CHECKING:
    import pandas as pd

VERDICTS = ("slower", "faster", "unchanged", "inconclusive")
COMBINE = ("pool", "latest")


#: Below this many raw samples on a side no verdict is given: a rank test cannot reach
#: p < 0.01 with 4 against 4, and a bootstrap of 4 values says little about a median.
MIN_SAMPLES = 5
#: Exact Mann-Whitney p-values while n1 * n2 is at most this (about 15 ms at the limit; scipy's
#: exact distribution takes seconds for a few hundred against a few hundred). Exactness
#: matters for small samples only: 10 against 10, completely separated, is p = 1.1e-5 exact
#: but 1.8e-4 by the normal approximation, too coarse for Holm over dozens of cases. At the
#: limit the approximation already reaches far below any corrected alpha.
EXACT_MWU_MAX_PRODUCT = 10_000
#: Bootstrap resampling is done in blocks of at most this many values (memory, not speed).
_BOOT_BLOCK = 4_000_000
#: Fewest rounds (or pairs of rounds, or runs) per side for a test between rounds.
MIN_ROUNDS = 3
#: Why a case is not judged, whatever its figures say.
BUSY = "machine busy"
BIMODAL = "bimodal"


# --- options and parsing ------------------------------------------------------------------


@dataclass(frozen=True)
class CompareOptions:
    threshold: float = DEFAULT_THRESHOLD  # relative change that matters: 5% slower or faster
    alpha: float = DEFAULT_ALPHA  # significance level, after the multiple-testing correction
    resamples: int = 2000  # bootstrap resamples per case
    seed: int = 0
    combine: str = "pool"  # several measurements of a case on one side: "pool" | "latest"
    correction: str = DEFAULT_CORRECTION  # "bh" | "holm" | "none"
    min_samples: int = MIN_SAMPLES

    def __post_init__(self) -> None:
        checks = {
            "threshold": 0 <= self.threshold <= 10,
            "alpha": 0 < self.alpha < 1,
            "resamples": 100 <= self.resamples <= 1_000_000,
            "seed": 0 <= self.seed < 2**63,
            "combine": self.combine in COMBINE,
            "correction": self.correction in CORRECTIONS,
            "min_samples": 2 <= self.min_samples <= 1_000_000,
        }
        for name, ok in checks.items():
            if not ok:
                raise UsageError(f"compare setting {name}={getattr(self, name)!r} is out of range")

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def upper(self) -> float:
        """Ratios at or above this are slower (given significance)."""
        return 1.0 + self.threshold

    @property
    def lower(self) -> float:
        """Ratios at or below this are faster (given significance): symmetric in log scale."""
        return 1.0 / (1.0 + self.threshold)


_THRESHOLD_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*$")


def parse_threshold(text: str) -> float:
    """``"5%"`` or ``"0.05"`` -> 0.05. A bare number of 1 or more is refused as ambiguous."""
    match = _THRESHOLD_RE.match(text)
    if match is None:
        raise UsageError(f"threshold {text!r} is not a percentage like 5% or a fraction like 0.05")
    value = float(match.group(1))
    if match.group(2):
        value /= 100.0
    elif value >= 1:
        raise UsageError(f"threshold {text!r} is ambiguous: write {match.group(1)}% or a fraction below 1")
    if not 0 <= value <= 10:
        raise UsageError(f"threshold {text!r} is out of range (0% to 1000%)")
    return value


def parse_alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"alpha {text!r} is not a number like 0.01") from None
    if not 0 < value < 1:
        raise UsageError(f"alpha {text!r} must lie strictly between 0 and 1")
    return value


# --- the statistics of one pair ------------------------------------------------------------


def _case_rng(seed: int, case_id: str) -> np.random.Generator:
    # Seeded by case id, not by position: adding a case does not change the others' intervals.
    return np.random.default_rng([seed, zlib.crc32(case_id.encode("utf-8"))])


def bootstrap_medians(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` resamples (with replacement) of ``x``, vectorised in blocks."""
    n = len(x)
    rows = max(1, _BOOT_BLOCK // max(n, 1))
    out = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def bootstrap_ratio_ci(
    base: np.ndarray, cand: np.ndarray, confidence: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of median(cand) / median(base)."""
    mb = bootstrap_medians(base, resamples, rng)
    mc = bootstrap_medians(cand, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mc / mb
    tail = (1.0 - confidence) / 2.0
    if not np.all(np.isfinite(ratios)):
        return math.nan, math.nan
    lo, hi = np.quantile(ratios, [tail, 1.0 - tail])
    return float(lo), float(hi)


def mwu_pvalue(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value; 1.0 when every value is the same (nothing to rank)."""
    from scipy.stats import mannwhitneyu

    both = np.concatenate([base, cand])
    if np.all(both == both[0]):
        return 1.0
    ties = len(np.unique(both)) < len(both)
    exact = not ties and len(base) * len(cand) <= EXACT_MWU_MAX_PRODUCT
    res = mannwhitneyu(cand, base, alternative="two-sided", method="exact" if exact else "asymptotic")
    return float(min(1.0, res.pvalue))


def decide(ratio: float, ci_low: float, ci_high: float, p: float, options: CompareOptions) -> str:
    """The verdict from a ratio, its interval and a (corrected) p-value. See the module doc."""
    if not (math.isfinite(ratio) and math.isfinite(p)):
        return "inconclusive"
    significant = p < options.alpha
    if significant and ratio >= options.upper:
        return "slower"
    if significant and ratio <= options.lower:
        return "faster"
    if math.isfinite(ci_low) and math.isfinite(ci_high) and (
        ci_low >= options.lower and ci_high <= options.upper
    ):
        return "unchanged"
    return "inconclusive"


@dataclass(frozen=True)
class PairStats:
    """The statistics of one pair of sample sets, before any multiple-testing correction."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    note: str = ""
    method: str = "samples"  # samples | paired rounds | rounds | runs


def _t_test(mean: float, se: float, dof: float, confidence: float, method: str) -> PairStats:
    """Ratio, interval and two-sided p from a mean log ratio and its standard error."""
    from scipy.stats import t

    ratio = math.exp(mean)
    if not (dof > 0 and math.isfinite(se)):
        return PairStats(ratio, math.nan, math.nan, math.nan, "too few rounds to test", method)
    if se == 0:  # identical rounds: exactly that ratio, nothing to doubt
        return PairStats(ratio, ratio, ratio, 1.0 if mean == 0 else 0.0, "", method)
    half = float(t.ppf(0.5 + confidence / 2, dof)) * se
    p = float(2 * t.sf(abs(mean) / se, dof))
    return PairStats(ratio, math.exp(mean - half), math.exp(mean + half), min(1.0, p), "", method)


def paired_rounds_test(base: Sequence[float], cand: Sequence[float], confidence: float) -> PairStats:
    """Paired t-test on ``log(cand_r / base_r)``: round r of each side was measured side by
    side in time (``ab``), so what drifted between rounds cancels in each pair."""
    d = np.log(np.asarray(cand, dtype=float)) - np.log(np.asarray(base, dtype=float))
    n = len(d)
    if n < 2:
        return PairStats(math.exp(float(d.mean())) if n else math.nan, math.nan, math.nan, math.nan,
                         "too few rounds to test", "paired rounds")
    return _t_test(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n), n - 1, confidence,
                   "paired rounds")


def welch_rounds_test(base: Sequence[float], cand: Sequence[float], confidence: float,
                      method: str = "rounds") -> PairStats:
    """Welch's t-test on log times of independent units (rounds or runs) of each side."""
    lb = np.log(np.asarray(base, dtype=float))
    lc = np.log(np.asarray(cand, dtype=float))
    nb, nc = len(lb), len(lc)
    if nb < 2 or nc < 2:
        ratio = math.exp(float(lc.mean() - lb.mean())) if nb and nc else math.nan
        return PairStats(ratio, math.nan, math.nan, math.nan, "too few rounds to test", method)
    vb, vc = float(lb.var(ddof=1)) / nb, float(lc.var(ddof=1)) / nc
    se = math.sqrt(vb + vc)
    dof = (vb + vc) ** 2 / (vb**2 / (nb - 1) + vc**2 / (nc - 1)) if vb + vc > 0 else nb + nc - 2
    return _t_test(float(lc.mean() - lb.mean()), se, dof, confidence, method)


def pair_stats(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    options: CompareOptions = CompareOptions(),
    rng: np.random.Generator | None = None,
) -> PairStats:
    """Ratio of medians, its bootstrap interval and the rank test, for raw samples."""
    b = np.asarray(base, dtype=float)
    c = np.asarray(cand, dtype=float)
    if len(b) == 0 or len(c) == 0:
        return PairStats(math.nan, math.nan, math.nan, math.nan, "no samples")
    mb, mc = float(np.median(b)), float(np.median(c))
    if not mb > 0:
        return PairStats(math.nan, math.nan, math.nan, math.nan, "base median is zero")
    ratio = mc / mb
    few = min(len(b), len(c))
    if few < options.min_samples:
        return PairStats(ratio, math.nan, math.nan, math.nan,
                         f"too few samples ({few} < {options.min_samples}): not tested")
    rng = rng if rng is not None else np.random.default_rng(options.seed)
    lo, hi = bootstrap_ratio_ci(b, c, options.confidence, options.resamples, rng)
    return PairStats(ratio, lo, hi, mwu_pvalue(b, c))


def verdict_for_samples(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    options: CompareOptions = CompareOptions(),
    rng: np.random.Generator | None = None,
) -> str:
    """The verdict for one pair on its own (no other cases, so no correction applies)."""
    s = pair_stats(base, cand, options, rng)
    return decide(s.ratio, s.ci_low, s.ci_high, s.p_value, options)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    idx.sort(key=lambda i: pvalues[i])
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg step-up adjusted p-values (same order as given; NaN stays NaN).

    Controls the expected share of false calls among the cases called changed. When nothing
    changed that share is 1 whenever anything is called, so on an A/A comparison it bounds
    the chance of any call, as Holm does; when many cases changed together it calls more of
    them than Holm."""
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    idx.sort(key=lambda i: pvalues[i], reverse=True)
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 1.0
    for k, i in enumerate(idx):  # from the largest p down; its rank is m - k
        running = min(running, m * pvalues[i] / (m - k))
        out[i] = running
    return out


# --- the comparison as data ---------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """What one side's measurements of a case came to after pooling (or taking the latest)."""

    status: str  # ok | failed | skipped
    reason: str
    samples: tuple[float, ...]  # raw per-call seconds (empty for foreign summaries)
    median_s: float
    n: int  # samples (or the foreign summary's count)
    measurements: int  # how many measurements were combined
    raw: bool  # False: only a foreign summary, no raw samples
    rounds: tuple[float, ...] = ()  # medians of the usable (uncontended) rounds
    round_keys: tuple[tuple[str, int], ...] = ()  # (ab session or run id, round index) of each
    run_centers: tuple[float, ...] = ()  # per measurement: the median of its usable rounds
    contended_rounds: int = 0
    total_rounds: int = 0
    contended: bool = False  # too few rounds were free of other work to judge by
    bimodal: bool = False
    multi_round: bool = False  # some measurement holds several rounds


@dataclass(frozen=True)
class CasePair:
    case_id: str
    op: str
    backend: str
    dtype: str
    size: str
    threads: str
    grad_mode: str
    base_median_s: float
    cand_median_s: float
    base_n: int
    cand_n: int
    ratio: float  # cand / base: above 1 is slower
    ci_low: float
    ci_high: float
    p_value: float  # raw two-sided p of the test (see ``method``)
    p_adjusted: float  # after the multiple-testing correction
    verdict: str
    note: str = ""
    method: str = "samples"  # what the test compared: samples | paired rounds | rounds | runs
    base_rounds: int = 1  # units each side contributed (rounds, or runs)
    cand_rounds: int = 1
    flag: str = ""  # "machine busy" | "bimodal": why it was not judged, whatever its figures
    contended_rounds: int = 0  # rounds left out, both sides, because other work held the cores
    #: Smallest relative change this comparison could detect (90% power at alpha), from the
    #: machine's noise profile (``bench-suite calibrate``) or else from these rounds' spread.
    detectable: float = math.nan
    detectable_from: str = ""  # "noise profile" | "these rounds" | ""

    @property
    def change(self) -> float:
        """Relative change in time: +0.10 is 10% slower."""
        return self.ratio - 1.0


@dataclass(frozen=True)
class OneSided:
    case_id: str
    side: str  # "base" or "cand": where it is present
    status: str


@dataclass(frozen=True)
class NotCompared:
    """A case present on both sides but not ok on at least one of them."""

    case_id: str
    base_status: str
    base_reason: str
    cand_status: str
    cand_reason: str


@dataclass(frozen=True)
class EnvDifference:
    key: str
    label: str
    base: str
    cand: str
    hardware: bool


@dataclass(frozen=True)
class GeoMean:
    op: str
    backend: str
    cases: int
    geomean: float  # geometric mean of the ratios
    slower: int
    faster: int
    unchanged: int
    inconclusive: int


@dataclass(frozen=True)
class SideInfo:
    label: str
    run_ids: tuple[str, ...]
    machines: tuple[str, ...]
    sources: tuple[str, ...]
    commits: tuple[str, ...]


@dataclass(frozen=True)
class Comparison:
    options: CompareOptions
    base: SideInfo
    cand: SideInfo
    env_differences: tuple[EnvDifference, ...]
    pairs: tuple[CasePair, ...]
    only_base: tuple[OneSided, ...]
    only_cand: tuple[OneSided, ...]
    not_compared: tuple[NotCompared, ...]
    geomeans: tuple[GeoMean, ...]  # per op and backend, then one row op="all", backend="all"
    tested: int = 0  # pairs that got a test (the m of the correction)

    @property
    def different_hardware(self) -> bool:
        return any(d.hardware for d in self.env_differences)

    @property
    def regressions(self) -> tuple[CasePair, ...]:
        return tuple(p for p in self.pairs if p.verdict == "slower")

    @property
    def has_regression(self) -> bool:
        return bool(self.regressions)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(VERDICTS, 0)
        for p in self.pairs:
            out[p.verdict] += 1
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per compared case (columns: the fields of :class:`CasePair`)."""
        import pandas as pd

        cols = list(CasePair.__dataclass_fields__)
        return pd.DataFrame([asdict(p) for p in self.pairs], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        return json_safe({
            "schema": "bench-suite/comparison",
            "version": 1,
            "options": asdict(self.options),
            "base": asdict(self.base),
            "cand": asdict(self.cand),
            "different_hardware": self.different_hardware,
            "env_differences": [asdict(d) for d in self.env_differences],
            "summary": {**self.counts(), "compared": len(self.pairs), "tested": self.tested,
                        "only_base": len(self.only_base), "only_cand": len(self.only_cand),
                        "not_compared": len(self.not_compared)},
            "regressions": [p.case_id for p in self.regressions],
            "pairs": [asdict(p) for p in self.pairs],
            "only_base": [asdict(o) for o in self.only_base],
            "only_cand": [asdict(o) for o in self.only_cand],
            "not_compared": [asdict(n) for n in self.not_compared],
            "geomeans": [asdict(g) for g in self.geomeans],
        })


# --- combining the measurements of one side ------------------------------------------------


_Entry = tuple[Run, int, Measurement]


def _by_case(runs: Sequence[Run]) -> dict[str, list[_Entry]]:
    """case id -> [(run, order seen, measurement)], oldest first."""
    out: dict[str, list[_Entry]] = {}
    order = 0
    for run in runs:
        for m in run.measurements:
            out.setdefault(m.id, []).append((run, order, m))
            order += 1
    for entries in out.values():
        entries.sort(key=lambda e: (e[0].created_at, e[2].started_at, e[1]))
    return out


def ab_session(run: Run) -> str:
    """The ``ab`` session a run was measured in ("" if none): its rounds pair with the other
    side's rounds of the same index."""
    ab = run.config.get("ab") if isinstance(run.config, Mapping) else None
    session = ab.get("session") if isinstance(ab, Mapping) else None
    return session if isinstance(session, str) else ""


def _combine(entries: list[_Entry], how: str) -> Side:
    pairs = [(e[0], e[2]) for e in entries]
    latest = pairs[-1][1]
    if how == "latest" or all(m.status != "ok" for _, m in pairs):
        chosen = [pairs[-1]]
    else:
        chosen = [(r, m) for r, m in pairs if m.status == "ok"]
    if chosen[0][1].status != "ok":
        return Side(latest.status, latest.reason, (), math.nan, 0, 1, True)
    raw = [(r, m) for r, m in chosen if m.samples_s]
    if not raw:  # foreign summaries only: no samples to pool, the newest one speaks for the side
        s = chosen[-1][1].summary
        return Side("ok", "", (), s.median, s.n, 1, False)
    samples = tuple(x for _, m in raw for x in m.samples_s)
    multi = any(len([r for r in m.rounds if r.samples_s]) > 1 for _, m in raw)
    rounds: list[float] = []
    keys: list[tuple[str, int]] = []
    centers: list[float] = []
    contended = total = 0
    for run, m in raw:
        with_samples = [r for r in m.rounds if r.samples_s]
        clean = [r for r in with_samples if not r.contended]
        total += len(with_samples)
        contended += len(with_samples) - len(clean)
        key = ab_session(run) or run.run_id
        rounds += [r.median for r in clean]
        keys += [(key, r.index) for r in clean]
        if clean:
            centers.append(float(np.median([r.median for r in clean])))
    if multi:
        busy = len(rounds) < MIN_ROUNDS and contended > 0
        median = float(np.median(rounds)) if rounds else float(np.median([m.summary.median for _, m in raw]))
        bimodal = stats.two_groups(rounds) is not None
    else:  # single-round measurements: a contended one cannot be judged by its samples
        busy = contended > 0
        median = float(np.median(samples))
        bimodal = False
    return Side("ok", "", samples, median, len(samples), len(raw), True, tuple(rounds), tuple(keys),
                tuple(centers), contended, total, busy, bimodal, multi)


def _round_stats(bs: Side, cs: Side, options: CompareOptions, rng: np.random.Generator) -> PairStats:
    """The test between two sides, on the right unit (see the module's doc)."""
    if not (bs.multi_round or cs.multi_round):
        st = pair_stats(bs.samples, cs.samples, options, rng)
        note = "one round per side: the interval is within one process; the spread between runs is unknown"
        return replace(st, note=f"{st.note}; {note}" if st.note else note)
    shared = set(bs.round_keys) & set(cs.round_keys)
    if len(shared) >= MIN_ROUNDS:  # ab: rounds of one session, measured side by side
        b = dict(zip(bs.round_keys, bs.rounds, strict=True))
        c = dict(zip(cs.round_keys, cs.rounds, strict=True))
        keys = sorted(shared)
        return paired_rounds_test([b[k] for k in keys], [c[k] for k in keys], options.confidence)
    if len(bs.run_centers) >= MIN_ROUNDS and len(cs.run_centers) >= MIN_ROUNDS:
        return welch_rounds_test(bs.run_centers, cs.run_centers, options.confidence, "runs")
    if len(bs.rounds) < MIN_ROUNDS or len(cs.rounds) < MIN_ROUNDS:
        few = min(len(bs.rounds), len(cs.rounds))
        ratio = cs.median_s / bs.median_s if bs.median_s > 0 else math.nan
        return PairStats(ratio, math.nan, math.nan, math.nan,
                         f"too few rounds ({few} < {MIN_ROUNDS}): not tested", "rounds")
    return welch_rounds_test(bs.rounds, cs.rounds, options.confidence)


# --- the environment ----------------------------------------------------------------------

#: (key, label, hardware?) in the order they are reported: hardware first.
ENV_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("machine", "machine", True),
    ("cpu_model", "CPU model", True),
    ("cpu_cores", "usable CPU cores", True),
    ("gpus", "GPUs", True),
    ("gpu_memory", "GPU memory", True),
    ("gpu_driver", "GPU driver", False),
    ("cuda", "CUDA (torch build)", False),
    ("cudnn", "cuDNN", False),
    ("torch", "torch", False),
    ("numpy", "numpy", False),
    ("scipy", "scipy", False),
    ("python", "Python", False),
    ("blas", "BLAS", False),
    ("blas_threads", "BLAS threads", False),
    ("torch_threads", "torch threads", False),
    ("tf32", "TF32 / float32 matmul precision", False),
    ("os", "OS kernel", False),
    ("env_vars", "thread/CUDA environment variables", False),
    ("bench_suite", "bench-suite", False),
    ("source", "results source", False),
    ("timing", "timing settings", False),
    ("commit", "git commit", False),
)


def _tf32_text(tf32: bool | None) -> str:
    """float32 matmuls on TF32 tensor cores: "on", "off" or "" (unknown), however the run's
    torch recorded it (the new fp32_precision API or the legacy flags: ``TorchRecord.tf32``)."""
    return {True: "on", False: "off", None: ""}[tf32]


def _text(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    return str(value)


def env_facts(run: Run) -> dict[str, str]:
    """The facts of a run's environment that change what is measured, as short strings."""
    env = EnvRecord.of(run.env)
    gpus = env.gpus
    timing = run.config.get("timing")
    facts = {
        "machine": run.machine,
        "cpu_model": _text(env.cpu.model),
        "cpu_cores": _text(env.cpu.usable_cores),
        "gpus": _text([g.name for g in gpus]),
        "gpu_memory": _text([f"{g.total_memory_bytes / 2**30:.0f} GiB" for g in gpus
                             if g.total_memory_bytes is not None]),
        "gpu_driver": _text(sorted({_text(g.driver) for g in gpus} - {""})),
        "cuda": _text(env.torch.cuda_build),
        "cudnn": _text(env.torch.cudnn),
        "torch": _text(env.packages.get("torch") or env.torch.version),
        "numpy": _text(env.packages.get("numpy")),
        "scipy": _text(env.packages.get("scipy")),
        "python": _text(env.python.version),
        # sorted: which library loaded first depends on import order, not on the machine
        "blas": _text(sorted(" ".join(_text(getattr(b, k)) for k in ("internal_api", "version", "architecture")
                                      if getattr(b, k)) for b in env.blas)),
        "blas_threads": _text(sorted(_text(b.num_threads) for b in env.blas)),
        "torch_threads": _text(env.torch.num_threads),
        "tf32": _tf32_text(env.torch.tf32),
        "os": _text(env.os.release),
        "env_vars": _text(env.env_vars),
        "bench_suite": _text(env.packages.get("bench-suite")),
        "source": run.source,
        "timing": _text({k: timing[k] for k in ("time_budget_s", "target_rel_ci", "min_samples")
                         if k in timing} if isinstance(timing, Mapping) else None),
        "commit": _text(env.git.commit)[:12],
    }
    return facts


def _side_values(runs: Sequence[Run]) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for run in runs:
        for key, value in env_facts(run).items():
            bucket = values.setdefault(key, [])
            if value not in bucket:
                bucket.append(value)
    return {k: " | ".join(v or "-" for v in vs) for k, vs in values.items()}


def env_differences(base: Sequence[Run], cand: Sequence[Run]) -> tuple[EnvDifference, ...]:
    """Facts that differ between the sides (or within one side, shown as ``a | b``)."""
    b, c = _side_values(base), _side_values(cand)
    out = []
    for key, label, hardware in ENV_FIELDS:
        bv, cv = b.get(key, ""), c.get(key, "")
        if bv != cv or "|" in bv:
            out.append(EnvDifference(key, label, bv or "-", cv or "-", hardware))
    return tuple(out)


def _side_info(label: str, runs: Sequence[Run]) -> SideInfo:
    def uniq(xs: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x for x in xs if x))

    return SideInfo(
        label=label,
        run_ids=uniq(r.run_id for r in runs),
        machines=uniq(r.machine for r in runs),
        sources=uniq(r.source for r in runs),
        commits=uniq(env_facts(r)["commit"] for r in runs),
    )


# --- the comparison -----------------------------------------------------------------------


def _detectable(case_id: str, st: PairStats, bs: Side, cs: Side, units: tuple[int, int],
                profile: NoiseProfile | None, alpha: float) -> tuple[float, str]:
    """The smallest change this pair's design could see, and where the noise figure came from."""
    paired = st.method == "paired rounds"
    noise = profile.for_case(case_id) if profile is not None else None
    sd = (noise.pair_sd if paired else noise.round_sd) if noise is not None else None
    if sd is not None:
        return detectable_change(sd, *units, paired, alpha), "noise profile"
    if st.method == "samples":
        return math.nan, ""
    if paired:
        b, c = dict(zip(bs.round_keys, bs.rounds, strict=True)), dict(zip(cs.round_keys, cs.rounds, strict=True))
        d = [math.log(c[k] / b[k]) for k in sorted(set(b) & set(c))]
        sd = float(np.std(d, ddof=1)) if len(d) >= 2 else None
    else:
        xs = bs.run_centers if st.method == "runs" else bs.rounds
        ys = cs.run_centers if st.method == "runs" else cs.rounds
        groups = [np.log(g) for g in (xs, ys) if len(g) >= 2]
        dof = sum(len(g) - 1 for g in groups)
        sd = math.sqrt(sum(float(np.sum((g - g.mean()) ** 2)) for g in groups) / dof) if dof else None
    return detectable_change(sd, *units, paired, alpha), "these rounds" if sd is not None else ""


def compare(
    base: Sequence[Run],
    cand: Sequence[Run],
    options: CompareOptions = CompareOptions(),
    base_label: str = "BASE",
    cand_label: str = "CAND",
    profiles: Mapping[str, NoiseProfile] | None = None,
) -> Comparison:
    """Pair the two sides' measurements by case id and judge each pair.

    ``profiles``: noise profiles by machine (``bench-suite calibrate``), for each case's
    smallest detectable change; by default those found beside the run files.
    """
    if profiles is None:
        profiles = profiles_for_runs([*base, *cand])
    if not base or not cand:
        raise UsageError("nothing to compare: a side has no runs")
    bmap, cmap = _by_case(base), _by_case(cand)
    ids = sorted(set(bmap) | set(cmap))
    only_base = tuple(OneSided(i, "base", _combine(bmap[i], options.combine).status)
                      for i in ids if i not in cmap)
    only_cand = tuple(OneSided(i, "cand", _combine(cmap[i], options.combine).status)
                      for i in ids if i not in bmap)

    rows: list[tuple[Measurement, Side, Side, PairStats, str]] = []
    m_machine: dict[str, str] = {}
    not_compared: list[NotCompared] = []
    for i in ids:
        if i not in bmap or i not in cmap:
            continue
        bs, cs = _combine(bmap[i], options.combine), _combine(cmap[i], options.combine)
        if bs.status != "ok" or cs.status != "ok":
            not_compared.append(NotCompared(i, bs.status, bs.reason, cs.status, cs.reason))
            continue
        if bs.raw and cs.raw:
            st = _round_stats(bs, cs, options, _case_rng(options.seed, i))
        else:
            ratio = cs.median_s / bs.median_s if bs.median_s > 0 else math.nan
            st = PairStats(ratio, math.nan, math.nan, math.nan,
                           "no raw samples (foreign summary): ratio only, not tested")
        flag, why = _flag(bs, cs)
        if flag:  # shown with its figures, but not tested, so never slower or faster
            st = replace(st, p_value=math.nan, note=why)
        rows.append((bmap[i][-1][2], bs, cs, st, flag))
        m_machine[i] = bmap[i][-1][0].machine

    raw = [r[3].p_value for r in rows]
    adjusted = {"holm": holm, "bh": benjamini_hochberg}.get(options.correction, list)(raw)
    pairs = []
    for (m, bs, cs, st, flag), p_adj in zip(rows, adjusted, strict=True):
        c = m.case
        note = st.note
        if bs.measurements > 1 or cs.measurements > 1:
            pooled = f"pooled {bs.measurements} base / {cs.measurements} cand measurements"
            note = f"{note}; {pooled}" if note else pooled
        verdict = "inconclusive" if flag else decide(st.ratio, st.ci_low, st.ci_high, p_adj, options)
        units = (len(bs.run_centers), len(cs.run_centers)) if st.method == "runs" else (
            (len(bs.rounds), len(cs.rounds)) if st.method != "samples" else (1, 1))
        detectable, source = _detectable(c.id, st, bs, cs, units, profiles.get(m_machine[c.id]),
                                         options.alpha)
        pairs.append(CasePair(
            case_id=c.id, op=c.op, backend=c.backend, dtype=c.dtype, size=c.size_label,
            threads=c.threads_label, grad_mode=c.grad_mode,
            base_median_s=bs.median_s, cand_median_s=cs.median_s, base_n=bs.n, cand_n=cs.n,
            ratio=st.ratio, ci_low=st.ci_low, ci_high=st.ci_high, p_value=st.p_value,
            p_adjusted=p_adj, verdict=verdict, note=note, method=st.method,
            base_rounds=units[0], cand_rounds=units[1], flag=flag,
            contended_rounds=bs.contended_rounds + cs.contended_rounds,
            detectable=detectable, detectable_from=source,
        ))
    return Comparison(
        options=options,
        base=_side_info(base_label, base),
        cand=_side_info(cand_label, cand),
        env_differences=env_differences(base, cand),
        pairs=tuple(pairs),
        only_base=only_base,
        only_cand=only_cand,
        not_compared=tuple(not_compared),
        geomeans=geomeans(pairs),
        tested=sum(math.isfinite(r[3].p_value) for r in rows),
    )


def _flag(bs: Side, cs: Side) -> tuple[str, str]:
    """Why a pair must not be judged ("machine busy", "bimodal"), and the note saying so."""
    busy = [name for name, side in (("base", bs), ("cand", cs)) if side.contended]
    if busy:
        rounds = sum(s.contended_rounds for s in (bs, cs))
        return BUSY, (f"{BUSY}: other processes held the cores this case needed "
                      f"({' and '.join(busy)}, {rounds} round{'s' if rounds != 1 else ''})")
    split = [name for name, side in (("base", bs), ("cand", cs)) if side.bimodal]
    if split:
        return BIMODAL, (f"{BIMODAL}: the rounds of {' and '.join(split)} fall into two groups far "
                         "apart; the ratio depends on which each run drew")
    return "", ""


def geomeans(pairs: Sequence[CasePair]) -> tuple[GeoMean, ...]:
    """Geometric mean of the ratios per op and backend, then over everything."""
    groups: dict[tuple[str, str], list[CasePair]] = {}
    for p in pairs:
        if math.isfinite(p.ratio) and p.ratio > 0:
            groups.setdefault((p.op, p.backend), []).append(p)
            groups.setdefault(("all", "all"), []).append(p)

    def row(key: tuple[str, str], ps: list[CasePair]) -> GeoMean:
        verdicts = [p.verdict for p in ps]
        return GeoMean(key[0], key[1], len(ps), math.exp(math.fsum(math.log(p.ratio) for p in ps) / len(ps)),
                       *(verdicts.count(v) for v in VERDICTS))

    keys = sorted(k for k in groups if k != ("all", "all"))
    out = [row(k, groups[k]) for k in keys]
    if ("all", "all") in groups:
        out.append(row(("all", "all"), groups[("all", "all")]))
    return tuple(out)


def compare_paths(
    base: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    cand: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    options: CompareOptions = CompareOptions(),
) -> Comparison:
    """Load both sides (run files, folders, anything ``load_runs`` reads) and compare them."""
    from bench_suite.store.loading import load_runs

    def label(paths: Any) -> str:
        if isinstance(paths, (str, os.PathLike)):
            return os.fspath(paths)
        return ", ".join(os.fspath(p) for p in paths)

    return compare(load_runs(base), load_runs(cand), options, label(base), label(cand))


__all__ = [
    "CasePair", "CompareOptions", "Comparison", "EnvDifference", "GeoMean", "NotCompared",
    "OneSided", "PairStats", "SideInfo", "compare", "compare_paths", "decide", "env_facts",
    "geomeans", "holm", "mwu_pvalue", "pair_stats", "parse_alpha", "parse_threshold",
    "verdict_for_samples",
]
