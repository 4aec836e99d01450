"""``run --resume``: the same run goes on without re-running finished cases; what cannot be
resumed is refused with one line and exit 2."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench_suite import load_runs
from bench_suite.core.cases import Case
from bench_suite.core.errors import OutputError, ResultsFileError, UsageError
from bench_suite.core.timing import SamplingPlan
from bench_suite.frontends import cli
from bench_suite.measure import resume
from bench_suite.measure.runner import RunInterrupted, RunOptions, run_sweep
from bench_suite.store.results import Measurement, RunWriter, journal_path, read_run_file

FAST = RunOptions(seed=7, timing=SamplingPlan(time_budget_s=0.02, min_samples=5))
CASES = [Case("matmul", "numpy", "float32", (n, n, n), threads=1) for n in (8, 12, 16, 20)]


class _StopAfter:
    """A progress display whose Ctrl-C comes after ``n`` finished cases."""

    def __init__(self, n: int):
        self.n = n

    def start(self, total: int) -> None:
        pass

    def case_started(self, case: Case) -> None:
        pass

    def case_finished(self, m: Measurement) -> None:
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def _interrupted(tmp_path: Path, after: int = 2) -> Path:
    path = tmp_path / "run.json"
    with pytest.raises(RunInterrupted):
        run_sweep(CASES, path, FAST, config={"preset": "quick"}, progress=_StopAfter(after))
    return path


def test_resume_finishes_the_same_run_and_keeps_finished_cases(tmp_path: Path) -> None:
    path = _interrupted(tmp_path)
    before = read_run_file(path)
    assert not before.complete and len(before.measurements) == 2
    state = resume.load_resumable(path)
    assert [c.id for c in state.remaining] == [c.id for c in CASES[2:]]
    assert state.options == FAST  # seed and timing come from the saved run
    run = resume.resume_run(state)
    assert run.complete and run.run_id == before.run_id and run.path == str(path)
    assert [m.id for m in run.measurements] == [c.id for c in CASES]
    assert run.measurements[:2] == before.measurements  # not re-run
    assert read_run_file(path).measurements == run.measurements
    assert not journal_path(path).exists() and len(run.config["resumed_at"]) == 1


def test_a_resumed_run_killed_again_keeps_both_parts(tmp_path: Path) -> None:
    """Final file (Ctrl-C) + the journal of a resume that was then killed: merged, each once."""
    path = _interrupted(tmp_path, after=1)
    state = resume.load_resumable(path)
    header = state.run
    w = RunWriter(path, header)  # what resume_run opens: the journal seeded with the old ones
    w.add(Measurement(CASES[1], "skipped", "pretend it was measured"))
    w.close()  # killed here; the stale final file is still beside the journal
    assert path.exists()
    state = resume.load_resumable(journal_path(path))
    assert [m.id for m in state.run.measurements] == [c.id for c in CASES[:2]]
    run = resume.resume_run(state)
    assert [m.id for m in run.measurements] == [c.id for c in CASES]
    assert run.measurements[1].reason == "pretend it was measured"


def test_while_resuming_the_journal_is_the_one_copy_and_loads(tmp_path: Path) -> None:
    path = _interrupted(tmp_path)
    state = resume.load_resumable(path)

    class Killed(BaseException):
        pass

    def die(_case: Case) -> Measurement:
        raise Killed  # as if the process died during the first remaining case

    with pytest.raises(Killed):
        resume.resume_run(state, measure_case=die)
    assert not path.exists() and journal_path(path).exists()
    [run] = load_runs([path])  # the final name still finds the run, through its journal
    assert [m.id for m in run.measurements] == [c.id for c in CASES[:2]]


def test_seeding_a_journal_never_truncates_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _interrupted(tmp_path)
    header = resume.load_resumable(path).run
    RunWriter(path, header).close()  # a journal holding two measurements
    old = journal_path(path).read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        RunWriter(path, header)
    assert journal_path(path).read_bytes() == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d | {"complete": True}, "complete: nothing to resume"),
        (lambda d: d | {"config": {k: v for k, v in d["config"].items() if k != "case_ids"}},
         "does not record its case list"),
        (lambda d: d | {"config": d["config"] | {"case_ids": ["matmul/numpy/float32/n=x/threads=1"]}},
         "case_ids"),
        (lambda d: d | {"config": d["config"] | {"timing": {"time_budget_s": "long"}}}, "time_budget_s"),
        (lambda d: d | {"config": d["config"] | {"timing": {"min_samples": 0.5}}}, "whole number"),
        (lambda d: d | {"config": d["config"] | {"timing": {"time_budget_s": 1e300}}}, "out of range"),
        (lambda d: d | {"config": d["config"] | {"seed": -1}}, "seed"),
        (lambda d: d | {"env": d["env"] | {"hostname": "elsewhere"}}, "started on host 'elsewhere'"),
        (lambda d: d | {"env": d["env"] | {"packages": {"numpy": "0.0.1"}}}, "packages changed"),
        (lambda d: d | {"source": "asv"}, "not a bench-suite run"),
        (lambda d: {"benchmarks": [], "machine_info": {}}, "not a bench-suite run file"),
    ],
)
def test_what_cannot_be_resumed_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, message: str
) -> None:
    path = _interrupted(tmp_path)
    path.write_text(json.dumps(edit(_doc(path))))
    with pytest.raises((ResultsFileError, UsageError), match=message):
        resume.load_resumable(path)
    assert cli.main(["run", "--resume", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("junk", [b"", b"\x00\xff" * 50, b'{"schema": "bench-suite/run", "vers'])
def test_resume_of_junk_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], junk: bytes) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(junk)
    assert cli.main(["run", "--resume", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_resume_refuses_a_missing_file_and_sweep_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--resume", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    path = _interrupted(tmp_path)
    for extra in (["--ops", "matmul"], ["--seed", "3"], ["--out", "x.json"], ["--time-budget", "1"]):
        assert cli.main(["run", "--resume", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "drop --" + extra[0].lstrip("-") in err
    assert not read_run_file(path).complete  # nothing was touched


def test_cli_resume_completes_and_prints_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _interrupted(tmp_path, after=3)
    assert cli.main(["run", "--resume", str(path), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert f"saved 4 measurements to {path}" in out and "3 of 4 cases done, 1 to go" in err
    assert read_run_file(path).complete


def test_a_fresh_run_never_replaces_an_existing_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _interrupted(tmp_path)
    before = path.read_bytes()
    assert cli.main(["run", "--backends", "numpy", "--sizes", "8", "--out", str(path), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err and path.read_bytes() == before


def test_gpu_timing_options_carry_over(tmp_path: Path) -> None:
    from bench_suite.measure.gpu.options import TimingMode

    path = tmp_path / "run.json"
    opts = RunOptions(seed=7, timing=FAST.timing, gpu=TimingMode(cold_cache=True, nvml=False))
    with pytest.raises(RunInterrupted):
        run_sweep(CASES, path, opts, config={"gpu_options": dataclasses.asdict(opts.gpu)},
                  progress=_StopAfter(1))
    assert resume.load_resumable(path).options == opts
