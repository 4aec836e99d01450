"""The pytest-benchmark front end: real nested pytest runs of benchmarks/test_cases.py (and of
small test files using the plugin), their JSON loaded into the suite's frame by case id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench_suite import load_results
from bench_suite.core import grid, ops
from bench_suite.core.cases import parse_case_id
from bench_suite.core.errors import ResultsFileError
from bench_suite.frontends import pytest_plugin
from bench_suite.measure import harness
from tests import frontend_doubles

REPO = Path(__file__).resolve().parents[1]
BENCH_FILE = REPO / "benchmarks" / "test_cases.py"
FAST = ["--benchmark-max-time", "0.005", "--benchmark-min-rounds", "3", "-p", "no:cacheprovider"]
DOUBLES = ["-p", "tests.frontend_doubles"]


def _pytest(args: list[str], cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    environ.pop("PYTEST_ADDOPTS", None)
    environ.pop("PYTEST_XDIST_WORKER", None)
    # pytest-benchmark creates its storage folder (default ./.benchmarks) in every session
    storage = Path(tempfile.gettempdir()) / "bench-suite-tests-benchmarks"
    args = [*args, f"--benchmark-storage=file://{storage}"]
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env=environ,
                          text=True, capture_output=True, timeout=120)


def test_the_plugin_is_registered_as_a_pytest11_entry_point(pytestconfig: pytest.Config) -> None:
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["pytest11"] == {"bench_suite": "bench_suite.frontends.pytest_plugin"}
    # ... and this very session loaded it from the installed package's entry point
    assert pytestconfig.pluginmanager.get_plugin("bench_suite") is pytest_plugin


def test_the_synchronized_clock_waits_for_the_device_in_flight() -> None:
    calls: list[str] = []
    harness.set_synchronize(lambda: calls.append("sync"))
    try:
        t0 = harness.synchronized_perf_counter()
        t1 = harness.synchronized_perf_counter()
    finally:
        harness.set_synchronize(None)
    assert calls == ["sync", "sync"] and t1 >= t0
    harness.synchronized_perf_counter()
    assert calls == ["sync", "sync"]  # reset: no barrier


@pytest.mark.slow
def test_pytest_benchmark_runs_the_cases_and_its_json_loads_by_case_id(tmp_path: Path) -> None:
    """The real benchmarks/test_cases.py, on numpy and on a fake CUDA card."""
    out, log = tmp_path / "pb.json", tmp_path / "syncs.log"
    res = _pytest([str(BENCH_FILE), "-p", "no:xdist", "-q", *FAST, *DOUBLES,
                   "--suite-backends", "numpy,torch-cuda", "--suite-ops", "matmul,hadamard_backward",
                   "--suite-sizes", "16,32", "--benchmark-json", str(out)],
                  **{frontend_doubles.DOUBLES_ENV: "cuda", frontend_doubles.SYNC_LOG_ENV: str(log)})
    assert res.returncode == 0, res.stdout + res.stderr
    expected = [c.id for c in grid.grid_sweep("ci").with_filters(
        backends=("numpy", "torch-cuda"), ops=("matmul", "hadamard_backward"), sizes=(16, 32)).expand()]
    assert len(expected) == 10  # numpy 2 ops x 2 sizes; CUDA adds the grad mode of matmul

    data = json.loads(out.read_text())
    assert [b["param"] for b in data["benchmarks"]] == expected  # pytest ids are case ids
    suite_env = data["machine_info"]["bench_suite"]  # added through the hook
    assert suite_env["packages"]["numpy"] and "usable_cores" in suite_env["cpu"]
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        case = parse_case_id(info["case_id"])
        assert info["rel_error"] <= ops.TOLERANCE[case.dtype]
        assert info["flops"] == ops.flops(case) and info["gflops"] > 0
        cuda = case.backend == "torch-cuda"
        assert info["threads"] == (None if cuda else 1)
        # CUDA cases read a clock that waits for the device: pytest-benchmark's funcname()
        assert (bench["options"]["timer"] == "synchronized_perf_counter") == cuda
        assert (info["device_name"] == "Fake GPU") == cuda
        assert info.get("peak_mem_bytes") == (ops.footprint_bytes(case) if cuda else None)
    rounds = sum(b["stats"]["rounds"] for b in data["benchmarks"] if "torch-cuda" in b["param"])
    assert frontend_doubles.sync_count(log) >= 2 * rounds  # two barriers per timed round at least

    df = load_results([out])
    assert list(df["case_id"]) == expected
    assert set(df["source"]) == {"pytest-benchmark"} and (df["status"] == "ok").all()
    medians = {b["param"]: b["stats"]["median"] for b in data["benchmarks"]}
    assert list(df["median_s"]) == pytest.approx([medians[i] for i in expected])
    assert (df["n_samples"] >= 3).all() and (df["gflops"] > 0).all()
    assert list(df["threads"].astype(object)) == [pd_na_if(i) for i in expected]
    cuda_rows = df[df["backend"] == "torch-cuda"]
    assert list(cuda_rows["peak_mem_bytes"]) == [ops.footprint_bytes(parse_case_id(i))
                                                for i in cuda_rows["case_id"]]


def pd_na_if(case_id: str) -> object:
    import pandas as pd

    return pd.NA if "torch-cuda" in case_id else 1


@pytest.mark.slow
def test_the_normal_test_run_is_untouched(tmp_path: Path) -> None:
    """A session that does not use suite_case: no parametrization, no machine-info entry."""
    (tmp_path / "test_plain.py").write_text(
        "def test_plain(benchmark):\n    benchmark(sum, [1, 2, 3])\n"
    )
    out = tmp_path / "plain.json"
    res = _pytest(["-p", "no:xdist", "-q", *FAST, "--benchmark-json", str(out), "test_plain.py"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout
    data = json.loads(out.read_text())
    assert "bench_suite" not in data["machine_info"]
    with pytest.raises(ResultsFileError, match="none of its 1 benchmarks is a bench-suite case"):
        load_results([out])


@pytest.mark.slow
@pytest.mark.parametrize("mode, code, outcome, message", [
    # a fixture that fails is "an error at setup" in pytest's words: the case is never timed
    ("wrong", 1, "1 error", "wrong result: relative error"),
    ("unavailable", 0, "1 skipped", "fake: this device is switched off"),
])
def test_wrong_results_fail_and_unavailable_cases_skip(
    mode: str, code: int, outcome: str, message: str
) -> None:
    res = _pytest([str(BENCH_FILE), "-p", "no:xdist", "-q", "-rs", *FAST, *DOUBLES,
                   "--suite-backends", "numpy", "--suite-ops", "hadamard", "--suite-sizes", "16"],
                  **{frontend_doubles.DOUBLES_ENV: mode})
    assert res.returncode == code, res.stdout + res.stderr
    assert outcome in res.stdout and message in res.stdout
    assert "During handling" not in res.stdout


@pytest.mark.slow
def test_a_bad_option_is_one_usage_line(tmp_path: Path) -> None:
    res = _pytest([str(BENCH_FILE), "-p", "no:xdist", "-q", "--suite-backends", "tpu"])
    assert res.returncode == 4
    assert "bench-suite: unknown backend 'tpu'" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.slow
def test_xdist_does_not_break_it(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    res = _pytest([str(BENCH_FILE), "-n", "2", "-q", *FAST, "--suite-backends", "numpy",
                   "--suite-ops", "matmul,hadamard", "--suite-sizes", "16",
                   "--benchmark-json", str(out)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 passed" in res.stdout  # each case ran (verified) once; nothing was timed
    # pytest-benchmark 5.2 leaves an empty JSON file behind (loading it says to use -p no:xdist),
    # 5.3 writes none
    with pytest.raises(ResultsFileError, match="-p no:xdist" if out.exists() else "no such file"):
        load_results([out])
