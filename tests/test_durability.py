"""Durability: a real ``bench-suite run`` killed with SIGKILL at random (seeded) points loses no
finished measurement, and ``--resume`` completes the run without re-running any case."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench_suite import load_runs
from bench_suite.frontends import cli
from bench_suite.store.results import journal_path, read_run_file

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--backends", "numpy", "--ops", "matmul,hadamard", "--sizes", "16,32,48,64",
         "--threads", "1", "--time-budget", "0.05", "--rounds", "1"]
EXPECTED = [c.id for c in cli.sweep_from_args(cli.create_parser().parse_args(["run", *SWEEP]))[1]]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _bench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench_suite", "run", *args, "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _journal_lines(path: Path) -> list[str]:
    """Case ids of the complete measurement lines of a journal, read without the loader."""
    j = journal_path(path)
    if not j.exists():
        return []
    text = j.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1].splitlines()[1:]  # header first; a torn tail dropped
    return [json.loads(line)["measurement"]["case_id"] for line in complete]


def _kill_at_random(proc: subprocess.Popen[str], path: Path, rng: random.Random) -> list[str]:
    """SIGKILL ``proc`` at a random point; the ids known finished just before the kill."""
    wait_for = rng.randint(-1, len(EXPECTED) - 1)
    deadline = time.monotonic() + 20
    if wait_for < 0:  # anywhere from start-up (no journal yet) to mid-run
        time.sleep(rng.uniform(0.0, 0.6))
    else:  # after some measurement, plus a little: inside a case, or while appending one
        while (len(_journal_lines(path)) < wait_for and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
    finished = _journal_lines(path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return finished


def _saved(path: Path) -> dict[str, tuple[float, ...]]:
    """What the loader recovers of the run at ``path`` (final file or journal)."""
    [run] = load_runs([path])  # the journal, when the run never finished
    ids = [m.id for m in run.measurements]
    assert len(ids) == len(set(ids))
    return {m.id: m.samples_s for m in run.measurements}


@pytest.mark.parametrize("seed", [0])
def test_sigkill_at_random_points_loses_nothing_and_resume_completes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kills, mid_run = 0, 0
    for trial in range(10):
        path = tmp_path / f"t{trial}" / "run.json"
        finished = _kill_at_random(_bench(*SWEEP, "--out", str(path)), path, rng)
        kills += 1
        if not path.exists() and not journal_path(path).exists():
            # killed before the journal was created: nothing was measured, nothing to resume
            assert finished == []
            rc, err = _finish(_bench("--resume", str(path)))
            assert rc == 2 and "no such file" in err
            continue
        recovered = _saved(path)
        assert set(finished) <= set(recovered)  # every measurement finished before the kill
        mid_run += not path.exists()
        if not path.exists():
            assert list(recovered) == _journal_lines(path)  # exactly the complete lines
        if path.exists() and read_run_file(path).complete:  # the kill came after the end
            rc, err = _finish(_bench("--resume", str(path)))
            assert rc == 2 and "complete" in err and err.count("\n") == 1
            continue
        # resume; now and then kill the resumed run too, and resume again
        while True:
            proc = _bench("--resume", str(journal_path(path)))
            if rng.random() < 0.3:
                again = _kill_at_random(proc, path, rng)
                kills += 1
                assert set(again) <= set(_saved(path)) and set(recovered) <= set(_saved(path))
                if path.exists():  # the resumed run finished before the kill came
                    break
                continue
            rc, err = _finish(proc)
            assert rc == 0, err
            break
        final = read_run_file(path)
        assert final.complete and not journal_path(path).exists()
        assert [m.id for m in final.measurements] == EXPECTED  # each case once, in sweep order
        assert final.run_id == "run" and final.config["resumed_at"]
        kept = {m.id: m.samples_s for m in final.measurements}
        assert all(kept[i] == s for i, s in recovered.items())  # finished cases were not re-run
    assert kills >= 10 and mid_run >= 5, (kills, mid_run)  # the kills did land inside runs


def test_ctrl_c_saves_says_where_and_resume_completes(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    proc = _bench(*SWEEP, "--out", str(path))
    while len(_journal_lines(path)) < 3 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 130, err
    assert f"saved to {path}" in err and f"bench-suite run --resume {path}" in err
    partial = read_run_file(path)
    assert not partial.complete and not journal_path(path).exists()
    assert 3 <= len(partial.measurements) < len(EXPECTED)
    rc, err = _finish(_bench("--resume", str(path)))
    assert rc == 0, err
    final = read_run_file(path)
    assert final.complete and [m.id for m in final.measurements] == EXPECTED
    assert final.measurements[:3] == partial.measurements[:3]


def test_ctrl_c_just_after_a_journal_line_is_written_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the SIGINT test above once hit: the line is on disk, then Ctrl-C lands."""
    from bench_suite.core.cases import parse_case_id
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.measure.runner import RunInterrupted, RunOptions, run_sweep
    from bench_suite.store.results import RunWriter

    original = RunWriter._append
    lines = []

    def append_then_interrupt(self: RunWriter, obj: Any) -> None:
        original(self, obj)
        lines.append(obj)
        if len(lines) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "_append", append_then_interrupt)
    cases = [parse_case_id(i) for i in EXPECTED[:4]]
    with pytest.raises(RunInterrupted) as stop:
        run_sweep(cases, tmp_path / "r.json", RunOptions(timing=SamplingPlan(time_budget_s=0.01)))
    assert [m.id for m in stop.value.run.measurements] == EXPECTED[:3]
    assert [m.id for m in read_run_file(tmp_path / "r.json").measurements] == EXPECTED[:3]
