"""Fault isolation: a case that aborts, segfaults, exits, raises MemoryError or hangs is
recorded as failed with its reason, and the rest of the run is measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench_suite import load_runs
from bench_suite.backends import PLUGINS_ENV
from bench_suite.core.cases import Case
from bench_suite.core.timing import SamplingPlan
from bench_suite.frontends import cli
from bench_suite.measure.isolation import IsolatedMeasure, _measurement_from, default_timeout_s, describe_exit
from bench_suite.measure.runner import RunOptions, run_sweep
from bench_suite.store.results import Measurement
from tests.faulty_backends import PID_FILE_ENV, PLUGIN, FaultyNumpy

ROOT = Path(__file__).resolve().parent.parent
FAST = RunOptions(timing=SamplingPlan(time_budget_s=0.05, min_samples=5))
WORKER_ENV = {PLUGINS_ENV: PLUGIN, "PYTHONPATH": str(ROOT)}
TIMEOUT_S = 3.0  # long enough for a worker to start and measure a tiny case on a busy box


def _case(n: int, op: str = "matmul") -> Case:
    return Case(op, "numpy", "float32", (n,) * (3 if op == "matmul" else 2), threads=1)


def test_failing_workers_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    cases = [_case(16), _case(17), _case(19), _case(23), _case(29), _case(31), _case(24, "hadamard")]
    measure = IsolatedMeasure(FAST, timeout_s=TIMEOUT_S, env=WORKER_ENV)
    run = run_sweep(cases, tmp_path / "run.json", FAST, config=measure.config(), measure_case=measure)

    by_n = {m.case.m: m for m in run.measurements}
    assert [m.id for m in run.measurements] == [c.id for c in cases] and run.complete
    for n in (16, 24):
        assert by_n[n].status == "ok" and len(by_n[n].samples_s) >= 3 and by_n[n].rel_error is not None
    assert by_n[17].status == "failed" and "SIGABRT" in by_n[17].reason
    assert by_n[19].status == "failed" and by_n[19].reason.startswith("out of memory: MemoryError")
    assert by_n[23].status == "failed" and by_n[23].reason.startswith(f"timed out after {TIMEOUT_S:g} s")
    assert by_n[29].status == "failed" and "SIGSEGV" in by_n[29].reason
    assert by_n[31].status == "failed" and "exited with status 3" in by_n[31].reason
    # a dead worker's last output is kept for the post-mortem (faulthandler's stack)
    assert "prepare" in by_n[29].extra["worker_output"]
    # and everything is on disk, as JSON
    [saved] = load_runs([tmp_path / "run.json"])
    assert saved.measurements == run.measurements
    assert saved.config["isolate"] is True and saved.config["case_timeout_s"] == TIMEOUT_S


def test_memory_error_without_isolation_fails_one_case_only(tmp_path: Path) -> None:
    cases = [_case(19), _case(16)]
    run = run_sweep(cases, tmp_path / "run.json", FAST, backend_for=lambda _name: FaultyNumpy())
    first, second = run.measurements
    assert first.status == "failed" and "out of memory" in first.reason and "injected" in first.reason
    assert second.status == "ok" and second.samples_s


def test_cli_isolate_records_failures_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The parent never builds a backend under --isolate; only the workers see the plugin.
    monkeypatch.setenv(PLUGINS_ENV, PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "r.json"
    rc = cli.main(["run", "--isolate", "--case-timeout", "20", "--backends", "numpy", "--ops", "matmul",
                   "--sizes", "16,17", "--threads", "1", "--time-budget", "0.05", "--out", str(out),
                   "--quiet", "--rounds", "1"])
    assert rc == 0
    [run] = load_runs([out])
    assert [m.status for m in run.measurements] == ["ok", "failed"]
    assert "SIGABRT" in run.measurements[1].reason
    assert run.config["case_timeout_s"] == 20.0
    assert "SIGABRT" in capsys.readouterr().out  # the summary names the failure


def test_case_timeout_needs_isolate(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--case-timeout", "5", "--backends", "numpy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--isolate" in err


def test_ctrl_c_stops_the_worker_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    measure = IsolatedMeasure(FAST, timeout_s=60, env={**WORKER_ENV, PID_FILE_ENV: str(pid_file)})

    def interrupt_once_hung() -> None:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_hung, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        measure(_case(23))
    assert time.monotonic() - t0 < 30
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)


def test_exit_statuses_in_words() -> None:
    assert describe_exit(-signal.SIGSEGV) == "worker killed by SIGSEGV (Segmentation fault)"
    assert "OOM killer" in describe_exit(-signal.SIGKILL)
    assert describe_exit(3) == "worker exited with status 3"
    assert describe_exit(0) == "worker exited without a result"


def test_a_garbled_or_mismatched_worker_result_is_a_failure_not_a_crash() -> None:
    case = _case(16)
    assert "unreadable" in str(_measurement_from("{not json", case))
    assert "unreadable" in str(_measurement_from(json.dumps({"protocol": 99}), case))
    other = Measurement(_case(32), "skipped", "x").to_dict()
    assert "not " + case.id in str(_measurement_from(json.dumps({"protocol": 1, "measurement": other}), case))
    mine = Measurement(case, "skipped", "x")
    assert _measurement_from(json.dumps({"protocol": 1, "measurement": mine.to_dict()}), case) == mine


def test_default_timeout_grows_with_the_budget() -> None:
    assert default_timeout_s(SamplingPlan(time_budget_s=1.0)) == 40.0
    assert IsolatedMeasure(RunOptions(timing=SamplingPlan(time_budget_s=2.0))).timeout_s == 50.0
    with pytest.raises(Exception, match="timeout"):
        IsolatedMeasure(FAST, timeout_s=float("nan"))


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie has exited; only its parent's reaper is missing


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_run_leaves_no_worker_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, **WORKER_ENV, PID_FILE_ENV: str(pid_file)}
    run = subprocess.Popen(
        [sys.executable, "-m", "bench_suite", "run", "--isolate", "--backends", "numpy", "--ops", "matmul",
         "--sizes", "23", "--threads", "1", "--time-budget", "0.05", "--out", str(tmp_path / "r.json"),
         "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    worker = int(pid_file.read_text())
    assert not _dead(worker)  # hung in its case
    run.send_signal(signal.SIGKILL)
    run.wait()
    while not _dead(worker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _dead(worker)


def test_the_worker_measures_with_the_runs_options() -> None:
    from bench_suite.measure.gpu.options import TimingMode

    opts = RunOptions(seed=3, timing=SamplingPlan(time_budget_s=0.05, min_samples=4),
                      gpu=TimingMode(cold_cache=True))
    m = IsolatedMeasure(opts, timeout_s=20, env=WORKER_ENV)(_case(16))
    assert m.status == "ok" and len(m.samples_s) >= 3
    assert "cold_cache" in m.extra  # the GPU timing options crossed over, as JSON
