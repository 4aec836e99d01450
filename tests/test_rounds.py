"""Rounds: per-round records (schema 2, version 1 still loads), their merging, the round loop
(seeded order, resume), and real rounds in fresh worker processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench_suite import load_runs
from bench_suite.backends import PLUGINS_ENV
from bench_suite.core import stats
from bench_suite.core.cases import Case
from bench_suite.core.timing import SamplingPlan
from bench_suite.frontends import cli
from bench_suite.measure.isolation import per_round_options, plan_rounds, worker_env
from bench_suite.measure.resume import load_resumable
from bench_suite.measure.runner import Rounds, RunOptions, done_rounds, round_order, run_rounds, start_run
from bench_suite.store.results import Measurement, Round, Run, RunWriter, merge_rounds, read_run_file, to_frame

ROOT = Path(__file__).resolve().parent.parent
CASES = [Case("matmul", "numpy", "float32", (n, n, n), 1) for n in (16, 24, 32)]


def _round(index: int, median: float, contended: bool = False) -> Round:
    return Round((median * 0.99, median, median * 1.01), 1, 3, "converged", index=index,
                 wall_s=0.1, contention=1.0 if contended else 0.0, contended=contended)


# --- the record -------------------------------------------------------------------------------


def test_a_measurement_keeps_its_rounds_and_derives_the_flat_view() -> None:
    m = Measurement(CASES[0], "ok", rounds=(_round(0, 1e-3), _round(1, 1.2e-3)))
    assert len(m.samples_s) == 6 and m.number == 1 and m.warmup_calls == 6
    assert m.round_medians == pytest.approx((1e-3, 1.2e-3))
    # with several rounds the summary (and its "±") is over the rounds' medians
    assert m.summary.n == 2 and m.summary.median == pytest.approx(1.1e-3)


def test_samples_alone_make_one_round() -> None:
    m = Measurement(CASES[0], "ok", samples_s=(1.0, 2.0, 3.0), number=4, stop="budget")
    [r] = m.rounds
    assert r.samples_s == (1.0, 2.0, 3.0) and r.number == 4 and r.stop == "budget"
    assert m.summary.median == 2.0  # one round: the samples themselves


def test_contended_rounds_are_left_out_of_the_figures_but_flag_the_case() -> None:
    m = Measurement(CASES[0], "ok", rounds=(_round(0, 1e-3), _round(1, 1e-3), _round(2, 9e-3, True)))
    assert m.contended and m.round_medians == pytest.approx((1e-3, 1e-3))
    assert m.contention == pytest.approx(1 / 3)
    every = Measurement(CASES[0], "ok", rounds=(_round(0, 1e-3, True), _round(1, 2e-3, True)))
    assert every.round_medians == pytest.approx((1e-3, 2e-3))  # all contended: shown, flagged


def test_rounds_round_trip_through_the_file(tmp_path: Path) -> None:
    m = Measurement(CASES[0], "ok", rounds=(_round(0, 1e-3), _round(1, 2e-3, True)), rel_error=1e-7)
    run = Run("r", "box", "t", {}, {}, (m,), "t2", True)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run.to_dict()))
    [back] = read_run_file(path).measurements
    assert back == m
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and "samples_s" not in doc["measurements"][0]


def test_a_version_1_file_still_loads_and_compares(tmp_path: Path) -> None:
    doc = {"schema": "bench-suite/run", "version": 1, "run_id": "old", "machine": "box",
           "created_at": "2026-01-01T00:00:00+00:00", "env": {}, "config": {},
           "measurements": [{"case_id": CASES[0].id, "case": CASES[0].to_dict(), "status": "ok",
                             "samples_s": [1e-3, 1.1e-3, 0.9e-3, 1e-3, 1e-3], "number": 2,
                             "warmup_calls": 5, "stop": "converged"}]}
    (tmp_path / "old.json").write_text(json.dumps(doc))
    [run] = load_runs([tmp_path / "old.json"])
    [m] = run.measurements
    assert len(m.rounds) == 1 and m.number == 2 and m.samples_s[1] == 1.1e-3
    assert cli.main(["compare", str(tmp_path / "old.json"), str(tmp_path / "old.json")]) == 0


def test_merging_rounds_fails_a_case_that_failed_in_any_round() -> None:
    ok = [Measurement(CASES[0], "ok", rounds=(_round(i, 1e-3),), rel_error=1e-7) for i in (0, 2)]
    bad = Measurement(CASES[0], "failed", "worker killed by SIGSEGV", rounds=(Round(index=1),))
    m = merge_rounds([ok[0], bad, ok[1]])
    assert m.status == "failed" and m.reason.startswith("round 2: worker killed")
    assert [r.index for r in m.rounds if r.samples_s] == [0, 2]  # what was measured is kept
    assert merge_rounds(ok).status == "ok" and merge_rounds(ok).rel_error == 1e-7
    skip = [Measurement(CASES[0], "skipped", "no CUDA", rounds=(Round(index=i),)) for i in (0, 1)]
    assert merge_rounds(skip).status == "skipped"


def test_a_journal_of_rounds_loads_as_one_measurement_per_case(tmp_path: Path) -> None:
    w = RunWriter(tmp_path / "r.json", Run("r", "box", "t", {}, {"case_ids": [c.id for c in CASES]}, ()))
    for index in range(3):
        for case in CASES:
            w.add(Measurement(case, "ok", rounds=(_round(index, 1e-3),)))
    w.close()
    [run] = load_runs([tmp_path / "r.json"])
    assert [len(m.rounds) for m in run.measurements] == [3, 3, 3]
    frame = to_frame([run])
    assert list(frame["rounds"]) == [3, 3, 3] and not frame["contended"].any()


def test_two_groups_of_rounds_are_bimodal_one_stray_or_a_spread_is_not() -> None:
    assert stats.two_groups([6.2, 6.3, 12.2, 12.1, 6.25]) is not None
    assert stats.two_groups([1.0, 1.1, 0.95, 1.05, 0.9, 1.02]) is None
    assert stats.two_groups([1.0, 1.01, 0.99, 1.0, 1.02, 1.6]) is None  # one stray of six
    assert stats.two_groups([1.0, 1.01, 1.8]) is None  # too few to tell
    assert stats.two_groups([1.0, 1.01, 1.8, 1.82]) is not None


def test_median_ci_ranks_match_the_binomial_sums() -> None:
    from math import comb

    for n in (1, 2, 5, 9, 10, 37, 200, 1000):
        rank = 0
        while rank + 1 <= n // 2 and sum(comb(n, i) for i in range(rank + 1)) / 2**n <= 0.025:
            rank += 1
        lo = max(rank - 1, 0)
        assert stats.median_ci_ranks(n) == (lo, n - 1 - lo)


# --- the round loop ---------------------------------------------------------------------------


class FakeMeasurer:
    def __init__(self, skip: str = "") -> None:
        self.calls: list[tuple[str, int]] = []
        self.ended = 0
        self.skip = skip

    def measure(self, case: Case, round_index: int) -> Measurement:
        self.calls.append((case.id, round_index))
        if case.id == self.skip:
            return Measurement(case, "skipped", "not here", rounds=(Round(index=round_index),))
        return Measurement(case, "ok", rounds=(_round(round_index, 1e-3),))

    def end_round(self) -> None:
        self.ended += 1

    def environment(self, machine: str) -> dict[str, Any] | None:
        return {"torch": {"version": "x"}}


def test_each_case_is_measured_once_per_round_in_a_seeded_order(tmp_path: Path) -> None:
    fake = FakeMeasurer(skip=CASES[1].id)
    writer = start_run(tmp_path / "r.json", CASES, RunOptions(), "box", {"rounds": 3})
    run_rounds(CASES, writer, Rounds(3, fake, order_seed=7))
    run = writer.finish("t", True)
    # round by round, each round in its seeded order; a skipped case is not asked again
    expected = [(c.id, r) for r in range(3) for c in round_order(CASES, 7, r)
                if c.id != CASES[1].id or r == 0]
    assert fake.calls == expected and fake.ended == 3
    by_id = {m.id: m for m in run.measurements}
    assert by_id[CASES[0].id].status == "ok" and len(by_id[CASES[0].id].rounds) == 3
    assert by_id[CASES[1].id].status == "skipped"


def test_round_orders_differ_between_rounds_and_repeat_with_the_seed() -> None:
    many = [Case("hadamard", "numpy", "float32", (n, n), 1) for n in range(8, 40)]
    assert round_order(many, 0, 0) == round_order(many, 0, 0)
    assert round_order(many, 0, 0) != round_order(many, 0, 1)
    assert round_order(many, 0, 0) != round_order(many, 1, 0)


def test_an_interrupted_run_of_rounds_resumes_the_missing_rounds_only(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    writer = start_run(path, CASES, RunOptions(), "box", {"rounds": 3, "order_seed": 0})
    for case in CASES:  # round 0 done, round 1 half done
        writer.add(Measurement(case, "ok", rounds=(_round(0, 1e-3),)))
    writer.add(Measurement(CASES[0], "ok", rounds=(_round(1, 1e-3),)))
    writer.close()
    state = load_resumable(str(path) + ".journal")
    assert state.rounds == 3 and len(state.remaining) == 3
    done, _ = done_rounds(state.run.measurements)
    assert (CASES[0].id, 1) in done and (CASES[1].id, 1) not in done
    fake = FakeMeasurer()
    from bench_suite.measure.resume import resume_run

    run = resume_run(state, rounds=Rounds(3, fake))
    assert sorted(fake.calls) == sorted([(c.id, 2) for c in CASES] + [(c.id, 1) for c in CASES[1:]])
    assert all(len(m.rounds) == 3 for m in run.measurements) and run.complete


# --- real rounds in worker processes ------------------------------------------------------------


FAST = RunOptions(timing=SamplingPlan(time_budget_s=0.09, min_samples=3))


def test_rounds_run_in_fresh_processes_and_a_crash_fails_one_round_of_one_case(tmp_path: Path) -> None:
    from tests.faulty_backends import PLUGIN

    cases = [Case("matmul", "numpy", "float32", (n, n, n), 1) for n in (16, 17, 20)]
    rounds = plan_rounds(FAST, 3, timeout_s=20)
    rounds.measurer.env = worker_env({PLUGINS_ENV: PLUGIN})  # type: ignore[attr-defined]
    writer = start_run(tmp_path / "r.json", cases, FAST, "box", rounds.config())
    run_rounds(cases, writer, rounds)
    run = writer.finish("t", True)
    by_n = {m.case.m: m for m in run.measurements}
    for n in (16, 20):
        m = by_n[n]
        assert m.status == "ok" and [r.index for r in m.rounds] == [0, 1, 2]
        assert all(r.samples_s for r in m.rounds)
    # 17 aborts its worker in every round; the next case gets a fresh worker each time
    assert by_n[17].status == "failed" and "SIGABRT" in by_n[17].reason
    assert run.config["rounds"] == 3 and run.config["isolate"] is False


def test_per_round_options_share_the_budget() -> None:
    opts = per_round_options(RunOptions(timing=SamplingPlan(time_budget_s=1.0)), 4)
    assert opts.timing.time_budget_s == 0.25
    # the minimum of samples is shared too, down to five a round; never raised
    assert opts.timing.min_samples == 5
    assert per_round_options(RunOptions(timing=SamplingPlan(min_samples=40)), 4).timing.min_samples == 10
    assert per_round_options(RunOptions(timing=SamplingPlan(min_samples=3)), 4).timing.min_samples == 3
    assert per_round_options(RunOptions(timing=SamplingPlan()), 1).timing.min_samples == 10
    # the warm-up is not: each round is a fresh process
    assert opts.timing.warmup_s == 0.02


def test_cli_run_with_rounds_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.json"
    monkeypatch.setenv(PLUGINS_ENV, "tests.quiet:register")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    rc = cli.main(["run", "--backends", "numpy", "--ops", "hadamard", "--sizes", "16,32", "--threads", "1",
                   "--time-budget", "0.06", "--rounds", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    [run] = load_runs([out])
    assert [len(m.rounds) for m in run.measurements] == [2, 2]
    text = capsys.readouterr().out
    assert "2 rounds" in text and "± rounds" in text


@pytest.mark.parametrize("value", ["0", "x", "1001"])
def test_bad_rounds_are_one_line_and_exit_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--rounds", value])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_one_round_says_the_spread_between_runs_is_unknown(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_suite.measure import runner
    from tests.quiet import QuietMonitor

    monkeypatch.setattr(runner, "Monitor", QuietMonitor)
    assert cli.main(["run", "--backends", "numpy", "--ops", "hadamard", "--sizes", "16", "--threads", "1",
                     "--time-budget", "0.03", "--rounds", "1", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "± (1 process)" in out and "spread between runs is" in out and "unknown" in out
