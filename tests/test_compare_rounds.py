"""compare on the right unit: rounds, pairs of rounds, runs; contended and bimodal cases never
judged. The statistics are checked by simulation: process-level shifts, bimodal processes, a
drifting machine, contention (scripts/compare_sim.py has the full study)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench_suite.analysis import compare as cmp
from bench_suite.core.cases import Case
from bench_suite.store.results import Measurement, Round, Run

CASES = [Case(op, "numpy", "float32", (n, n, n) if op == "matmul" else (n, n), 1)
         for op in ("matmul", "hadamard") for n in (64, 128, 256, 512, 1024, 2048, 4096, 8192)]
TRIALS = 60


def _run(name: str, medians: dict[str, list[float]], session: str = "",
         contended: dict[str, set[int]] | None = None) -> Run:
    contended = contended or {}
    ms = tuple(Measurement(next(c for c in CASES if c.id == cid), "ok", rounds=tuple(
        Round((m * 0.995, m, m * 1.005), 1, 1, "converged", index=i, wall_s=0.1,
              contention=1.0 if i in contended.get(cid, set()) else 0.0,
              contended=i in contended.get(cid, set()))
        for i, m in enumerate(ms_))) for cid, ms_ in medians.items())
    return Run(name, "box", "2026-01-01T00:00:00+00:00", {}, {"ab": {"session": session}} if session else {}, ms)


def _simulate(rng: np.random.Generator, rounds: int, slowed: set[str], paired: bool,
              drift: float = 0.08, process: float = 0.015, bimodal: frozenset[str] = frozenset(),
              shift: float = 0.0) -> tuple[Run, Run]:
    """Round medians of both sides. ``drift``: the machine's speed per round, shared by both
    sides of a pair (ab) or drawn apart (separate runs); ``process``: per process and case."""
    base: dict[str, list[float]] = {}
    cand: dict[str, list[float]] = {}
    for c in CASES:
        for _ in range(rounds):
            d_base = rng.normal(0, drift)
            d_cand = d_base if paired else rng.normal(0, drift)
            for side, d, extra in ((base, d_base, 0.0), (cand, d_cand, shift)):
                x = d + extra + rng.normal(0, process)
                if side is cand and c.id in slowed:
                    x += math.log(1.10)
                if c.id in bimodal and rng.random() < 0.5:
                    x += math.log(2.0)
                side.setdefault(c.id, []).append(1e-3 * math.exp(x))
    session = "s" if paired else ""
    return _run("base", base, session), _run("cand", cand, session)


def _verdicts(base: Run, cand: Run) -> dict[str, str]:
    return {p.case_id: p.verdict for p in cmp.compare([base], [cand]).pairs}


def test_ab_pairs_cancel_a_drifting_machine() -> None:
    rng = np.random.default_rng(1)
    slowed = {c.id for c in CASES[::2]}
    aa_fail = found = 0
    for _ in range(TRIALS):
        aa_fail += "slower" in _verdicts(*_simulate(rng, 8, set(), paired=True)).values()
        v = _verdicts(*_simulate(rng, 8, slowed, paired=True))
        found += sum(v[i] == "slower" for i in slowed)
        assert not any(v[c.id] == "slower" for c in CASES if c.id not in slowed)
    assert aa_fail <= 0.05 * TRIALS
    assert found >= 0.9 * TRIALS * len(slowed)  # a true 10% slowdown, 8 paired rounds, 8% drift


def test_separate_runs_with_the_same_drift_are_not_called_slower() -> None:
    # Welch on rounds: the drift between rounds is what a single run's ± already shows
    rng = np.random.default_rng(2)
    fails = sum("slower" in _verdicts(*_simulate(rng, 5, set(), paired=False)).values()
                for _ in range(TRIALS))
    assert fails <= 0.05 * TRIALS


def test_pooling_samples_would_have_failed_where_rounds_do_not() -> None:
    # the old rule: a 4% shift between two runs, each tight within itself, is "significant"
    rng = np.random.default_rng(3)
    base, cand = _simulate(rng, 5, set(), paired=False, drift=0.0, process=0.002, shift=math.log(1.06))
    old = cmp.pair_stats(base.measurements[0].samples_s, cand.measurements[0].samples_s)
    assert old.p_value < 1e-3  # samples in one process treated as independent: "significant"
    c = cmp.compare([base], [cand])
    assert {p.method for p in c.pairs} == {"rounds"}


def test_contended_rounds_are_left_out_and_a_busy_side_is_inconclusive() -> None:
    ids = [c.id for c in CASES[:2]]
    medians = {i: [1e-3] * 5 for i in ids}
    # a busy neighbour: rounds 2-4 of the first case, round 4 of the second
    slow = {ids[0]: [1e-3] * 2 + [50e-3] * 3, ids[1]: [1e-3] * 4 + [50e-3]}
    busy = {ids[0]: {2, 3, 4}, ids[1]: {4}}
    c = cmp.compare([_run("b", medians)], [_run("c", slow, contended=busy)])
    pairs = {p.case_id: p for p in c.pairs}
    first = pairs[ids[0]]
    assert first.verdict == "inconclusive" and first.flag == cmp.BUSY and "machine busy" in first.note
    assert first.contended_rounds == 3
    # one busy round of five: left out, the other four are judged (not slower; 50x is gone)
    second = pairs[ids[1]]
    assert second.flag == "" and second.verdict != "slower" and second.cand_rounds == 4
    assert not c.has_regression


def test_a_single_round_timed_beside_a_busy_neighbour_is_never_slower() -> None:
    case = CASES[0]
    quiet = Measurement(case, "ok", samples_s=tuple(1e-3 * (1 + 0.001 * i) for i in range(20)))
    busy = Measurement(case, "ok", rounds=(Round(tuple(50e-3 * (1 + 0.001 * i) for i in range(20)), 1,
                                                 index=0, wall_s=1, contention=1.0, contended=True),))
    c = cmp.compare([Run("b", "box", "t", {}, {}, (quiet,))], [Run("c", "box", "t", {}, {}, (busy,))])
    [p] = c.pairs
    assert p.verdict == "inconclusive" and p.flag == cmp.BUSY and not c.has_regression


def test_bimodal_rounds_are_reported_and_not_judged() -> None:
    rng = np.random.default_rng(4)
    case = CASES[0].id
    bim = frozenset({case})
    for _ in range(10):
        base, cand = _simulate(rng, 8, {case}, paired=True, drift=0.01, bimodal=bim)
        p = next(p for p in cmp.compare([base], [cand]).pairs if p.case_id == case)
        if p.flag:
            assert p.flag == cmp.BIMODAL and p.verdict == "inconclusive" and "two groups" in p.note


def test_several_runs_a_side_make_the_runs_the_units() -> None:
    rng = np.random.default_rng(5)
    bases = [_simulate(rng, 3, set(), paired=False)[0] for _ in range(3)]
    cands = [_simulate(rng, 3, set(), paired=False)[1] for _ in range(3)]
    c = cmp.compare(bases, cands)
    assert {p.method for p in c.pairs} == {"runs"} and {p.base_rounds for p in c.pairs} == {3}


def test_single_rounds_fall_back_to_samples_and_say_so() -> None:
    case = CASES[0]
    a = Measurement(case, "ok", samples_s=tuple(1e-3 * (1 + 0.01 * (i % 5)) for i in range(20)))
    c = cmp.compare([Run("b", "box", "t", {}, {}, (a,))], [Run("c", "box", "t", {}, {}, (a,))])
    [p] = c.pairs
    assert p.method == "samples" and "spread between runs is unknown" in p.note


@pytest.mark.parametrize("paired", [True, False])
def test_the_paired_and_welch_tests_match_scipy(paired: bool) -> None:
    from scipy import stats as sps

    rng = np.random.default_rng(6)
    b = rng.lognormal(0, 0.05, 8)
    c = b * rng.lognormal(0.05, 0.02, 8)
    if paired:
        st = cmp.paired_rounds_test(b, c, 0.99)
        ref = sps.ttest_rel(np.log(c), np.log(b))
    else:
        st = cmp.welch_rounds_test(b, c, 0.99)
        ref = sps.ttest_ind(np.log(c), np.log(b), equal_var=False)
    assert st.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    assert st.ci_low < st.ratio < st.ci_high
