"""asv results and pytest-benchmark JSON read into the suite's frame by case id (the formats
as asv 0.6 and pytest-benchmark 5 write them; the real tools run in test_asv_frontend.py and
test_pytest_plugin.py), and one clear line for every malformed file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench_suite import load_results, load_runs
from bench_suite.core.cases import Case
from bench_suite.core.errors import ResultsFileError
from bench_suite.store import sources
from bench_suite.store.results import Measurement, Run, RunWriter, read_run_file, save_run

NAN = float("nan")
COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
           "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
# The "ci" grid of Hadamard as asv stores it: reprs of the values, one list per axis.
HADAMARD_PARAMS = [["'numpy'", "'torch-cpu'"], ["'float32'"], ["64", "256"], ["'1'"],
                   ["'no_grad'", "'grad'"]]


def _row(results: list[Any], samples: list[Any] | None = None, **stats: list[Any]) -> list[Any]:
    n = len(results)
    col = {"stats_ci_99_a": [None] * n, "stats_ci_99_b": [None] * n, "stats_q_25": [None] * n,
           "stats_q_75": [None] * n, "stats_number": [None] * n, "stats_repeat": [None] * n, **stats}
    return [results, HADAMARD_PARAMS, "abc123", 1795630776417, 0.9, col["stats_ci_99_a"],
            col["stats_ci_99_b"], col["stats_q_25"], col["stats_q_75"], col["stats_number"],
            col["stats_repeat"], samples if samples is not None else [None] * n, None]


def _asv_doc() -> dict[str, Any]:
    # combos in asv's order: numpy/64/no_grad, numpy/64/grad, numpy/256/..., torch-cpu/...
    time_row = _row(
        [2e-6, NAN, None, NAN, 5e-6, 6e-6, NAN, NAN],
        stats_ci_99_a=[1.9e-6, None, None, None, 4.8e-6, -math.inf, None, None],
        stats_ci_99_b=[2.1e-6, None, None, None, 5.3e-6, math.inf, None, None],
        stats_q_25=[1.95e-6, None, None, None, 4.9e-6, 6e-6, None, None],
        stats_q_75=[2.05e-6, None, None, None, 5.1e-6, 6e-6, None, None],
        stats_number=[1, None, None, None, 1, 1, None, None],
        stats_repeat=[400, None, None, None, 400, 1, None, None],
    )
    track_row = _row([40.0, NAN, NAN, NAN, 20.0, NAN, NAN, NAN])[:5]
    return {
        "commit_hash": "bcb3fc8d0efe2ad3a6d62f7c16ec3f63ec8634bc",
        "env_name": "existing-py_python3.11", "date": 1795630775000,
        "params": {"machine": "box-1", "python": "3.11"}, "python": "3.11", "requirements": {},
        "env_vars": {}, "result_columns": COLUMNS,
        "results": {
            "ops.Hadamard.time_op": time_row,
            "ops.Hadamard.track_gbps": track_row,
            "other_module.TimeSuite.time_keys": [[1e-3], [], "v", 0, 0.1],
        },
        "durations": {}, "version": 2,
    }


def _asv_folder(tmp_path: Path, doc: dict[str, Any] | None = None, names: list[str] | None = None) -> Path:
    results = tmp_path / "results"
    (results / "box-1").mkdir(parents=True)
    (results / "box-1" / "machine.json").write_text(json.dumps({"machine": "box-1", "version": 1}))
    bench = {"name": "ops.Hadamard.time_op", "params": HADAMARD_PARAMS, "type": "time",
             "param_names": names or ["backend", "dtype", "size", "threads", "grad_mode"]}
    (results / "benchmarks.json").write_text(json.dumps({"ops.Hadamard.time_op": bench, "version": 2}))
    doc = doc or _asv_doc()
    (results / "box-1" / "bcb3fc8d-existing-py_python3.11.json").write_text(json.dumps(doc))
    return results


def test_asv_results_become_measurements_by_case_id(tmp_path: Path) -> None:
    [run] = load_runs([_asv_folder(tmp_path)])  # benchmarks.json and machine.json hold no runs
    assert run.source == "asv" and run.machine == "box-1"
    assert run.env["git"]["commit"].startswith("bcb3fc8d") and run.created_at.startswith("2026-")
    by_id = {m.id: m for m in run.measurements}
    # NaN (n/a or not selected) is left out; numpy with autograd names no case; null failed
    assert list(by_id) == [
        "hadamard/numpy/float32/n=64/threads=1",
        "hadamard/numpy/float32/n=256/threads=1",
        "hadamard/torch-cpu/float32/n=64/threads=1",
        "hadamard/torch-cpu/float32/n=64/threads=1/grad",
    ]
    ok = by_id["hadamard/numpy/float32/n=64/threads=1"]
    assert ok.status == "ok" and not ok.samples_s
    s = ok.summary  # asv keeps a summary, not samples
    assert (s.n, s.median, s.q1, s.q3, s.ci_low, s.ci_high) == (400, 2e-6, 1.95e-6, 2.05e-6, 1.9e-6, 2.1e-6)
    assert ok.extra["asv"] == {"version": "abc123", "track_gbps": 40.0}
    assert ok.extra["ci_confidence"] == 0.99
    assert by_id["hadamard/numpy/float32/n=256/threads=1"].status == "failed"
    quick = by_id["hadamard/torch-cpu/float32/n=64/threads=1/grad"].summary
    assert quick.n == 1 and math.isnan(quick.ci_low)  # --quick: asv's infinite interval is unknown

    df = load_results([tmp_path / "results"])
    row = df.set_index("case_id").loc["hadamard/numpy/float32/n=64/threads=1"]
    assert row["median_s"] == 2e-6 and row["source"] == "asv" and row["n_samples"] == 400
    assert row["gbps"] == pytest.approx(3 * 64 * 64 * 4 / 2e-6 / 1e9)
    assert row["commit"] == "bcb3fc8d0efe2ad3a6d62f7c16ec3f63ec8634bc"


def test_asv_parameter_names_come_from_benchmarks_json(tmp_path: Path) -> None:
    doc = _asv_doc()
    row = doc["results"]["ops.Hadamard.time_op"]
    row[1] = [HADAMARD_PARAMS[i] for i in (2, 0, 1, 3, 4)]  # size first
    doc["results"] = {"ops.Hadamard.time_op": row}
    [run] = load_runs([_asv_folder(tmp_path, doc, ["size", "backend", "dtype", "threads", "grad_mode"])])
    ids = [m.id for m in run.measurements]
    assert "hadamard/numpy/float32/n=64/threads=1" in ids
    assert all("/n=64/" in i or "/n=256/" in i for i in ids)


def test_asv_raw_samples_are_kept_when_recorded(tmp_path: Path) -> None:
    doc = _asv_doc()
    samples = [[2e-6, 2.2e-6, 1.8e-6]] + [None] * 7
    doc["results"] = {"ops.Hadamard.time_op": _row([2e-6] + [NAN] * 7, samples=samples,
                                                   stats_number=[4] + [None] * 7)}
    [run] = load_runs([_asv_folder(tmp_path, doc)])
    [m] = run.measurements
    assert m.samples_s == (2e-6, 2.2e-6, 1.8e-6) and m.number == 4 and m.given_summary is None
    assert m.summary.n == 3 and m.summary.median == 2e-6


def test_a_foreign_run_saves_and_loads_again(tmp_path: Path) -> None:
    [run] = load_runs([_asv_folder(tmp_path)])
    path = tmp_path / "saved.json"
    save_run(run, path)  # NaN statistics asv does not give are written as null, not NaN
    again = read_run_file(path)
    assert again.source == "asv"
    assert [m.id for m in again.measurements] == [m.id for m in run.measurements]
    s = again.measurements[0].summary
    assert s.median == 2e-6 and math.isnan(s.mean)


def _pb_doc(**bench_overrides: Any) -> dict[str, Any]:
    bench = {
        "group": "matmul", "name": "test_case[matmul/numpy/float32/n=16/threads=1]",
        "fullname": "benchmarks/test_cases.py::test_case[matmul/numpy/float32/n=16/threads=1]",
        "params": {"suite_case": "matmul/numpy/float32/n=16/threads=1"},
        "param": "matmul/numpy/float32/n=16/threads=1",
        "extra_info": {"case_id": "matmul/numpy/float32/n=16/threads=1", "threads": 1,
                       "rel_error": 7e-8, "tolerance": 1e-4, "check": "full", "device_name": "cpu-x"},
        "options": {"timer": "perf_counter", "min_rounds": 5},
        "stats": {"min": 8e-7, "max": 5e-5, "mean": 9.5e-7, "stddev": 1.4e-6, "rounds": 5,
                  "median": 8.7e-7, "iqr": 4e-8, "q1": 8.5e-7, "q3": 8.9e-7, "ops": 1.05e6,
                  "data": [8.7e-7, 8e-7, 8.9e-7, 8.5e-7, 5e-5], "iterations": 1},
    }
    other = {"group": None, "name": "test_plain", "fullname": "t.py::test_plain", "params": None,
             "param": None, "extra_info": {}, "options": {}, "stats": dict(bench["stats"])}
    bench.update(bench_overrides)
    return {
        "machine_info": {"node": "node-7", "cpu": {}, "bench_suite": {"machine": "box-2",
                                                                      "packages": {"numpy": "2"}}},
        "commit_info": {"id": "ea96d8fa", "dirty": True, "branch": "main"},
        "benchmarks": [bench, other], "datetime": "2026-11-25T18:00:00+00:00", "version": "5.2.3",
    }


def test_pytest_benchmark_json_becomes_measurements_by_case_id(tmp_path: Path) -> None:
    p = tmp_path / "pb.json"
    p.write_text(json.dumps(_pb_doc()))
    [run] = load_runs([p])
    assert run.source == "pytest-benchmark" and run.machine == "box-2"
    assert run.env["git"] == {"commit": "ea96d8fa", "dirty": True, "branch": "main"}
    assert run.env["pytest_benchmark"]["node"] == "node-7"
    [m] = run.measurements  # the benchmark that is not a case is left out
    assert m.id == "matmul/numpy/float32/n=16/threads=1"
    assert m.samples_s == (8.7e-7, 8e-7, 8.9e-7, 8.5e-7, 5e-5) and m.number == 1
    assert (m.threads, m.rel_error, m.tolerance, m.device_name) == (1, 7e-8, 1e-4, "cpu-x")
    df = load_results([p])
    assert df.loc[0, "median_s"] == 8.7e-7 and df.loc[0, "gflops"] == pytest.approx(2 * 16**3 / 8.7e-7 / 1e9)


def test_pytest_benchmark_without_data_gives_its_summary(tmp_path: Path) -> None:
    doc = _pb_doc()
    bench = doc["benchmarks"][0]
    del bench["stats"]["data"]
    del bench["extra_info"]  # ids from "param" alone, as any parametrization by case id
    p = tmp_path / "pb.json"
    p.write_text(json.dumps(doc))
    [m] = load_runs([p])[0].measurements
    s = m.summary
    assert (s.n, s.median, s.q1, s.q3, s.mean, s.min) == (5, 8.7e-7, 8.5e-7, 8.9e-7, 9.5e-7, 8e-7)
    assert math.isnan(s.ci_low)


def test_every_source_in_one_frame(tmp_path: Path) -> None:
    own = tmp_path / "own" / "run.json"
    w = RunWriter(own, Run("r1", "box-3", "2026-11-25T00:00:00+00:00", {"machine": "box-3"}, {}, ()))
    w.add(Measurement(Case("matmul", "numpy", "float32", (16, 16, 16), threads=1), "ok",
                      samples_s=(1e-6, 1.1e-6, 0.9e-6)))
    w.finish("2026-11-25T00:00:01+00:00")
    pb = tmp_path / "pb.json"
    pb.write_text(json.dumps(_pb_doc()))
    df = load_results([own, pb, _asv_folder(tmp_path)])
    assert list(dict.fromkeys(df["source"])) == ["bench-suite", "pytest-benchmark", "asv"]
    same = df[df["case_id"] == "matmul/numpy/float32/n=16/threads=1"]
    assert list(same["source"]) == ["bench-suite", "pytest-benchmark"]


@pytest.mark.parametrize("doc, kind", [
    ({"schema": "bench-suite/run"}, "bench-suite"),
    (_asv_doc(), "asv-result"),
    ({"machine": "m", "arch": "x86_64", "cpu": "c", "num_cpu": "2", "os": "L", "ram": "1", "version": 1},
     "asv-machine"),
    ({"ops.Matmul.time_op": {"name": "ops.Matmul.time_op", "params": []}, "version": 2}, "asv-benchmarks"),
    (_pb_doc(), "pytest-benchmark"),
    ({"benchmarks": []}, "unknown"),
    ([1, 2], "unknown"),
])
def test_detection_by_content(doc: Any, kind: str) -> None:
    assert sources.detect(doc) == kind


def _broken_asv(edit: Any) -> dict[str, Any]:
    doc = _asv_doc()
    edit(doc)
    return doc


@pytest.mark.parametrize("doc, message", [
    (_broken_asv(lambda d: d.update(results=[])), "'results' must be an object"),
    (_broken_asv(lambda d: d.update(result_columns="x")), "result_columns must be a list"),
    (_broken_asv(lambda d: d.update(commit_hash=5)), "commit_hash must be a string"),
    (_broken_asv(lambda d: d["results"]["ops.Hadamard.time_op"].__setitem__(0, [1e-6])),
     "1 results for 8 parameter combinations"),
    (_broken_asv(lambda d: d["results"]["ops.Hadamard.time_op"].__setitem__(1, "x")),
     "'params' must be a list of lists"),
    (_broken_asv(lambda d: d["results"]["ops.Hadamard.time_op"][0].__setitem__(0, "fast")),
     "result 'fast' is not a number"),
    (_broken_asv(lambda d: d["results"]["ops.Hadamard.time_op"][0].__setitem__(0, -1.0)),
     "is not a positive number"),
    (_pb_doc(stats="x"), "'stats' must be an object"),
    (_pb_doc(stats={"median": -1}), "stats.median must be a positive number"),
    ({**_pb_doc(), "benchmarks": {}}, "'benchmarks' must be a list"),
    ({**_pb_doc(), "benchmarks": []}, "use -p no:xdist"),
    ({**_pb_doc(), "benchmarks": [_pb_doc()["benchmarks"][1]]},
     "none of its 1 benchmarks is a bench-suite case"),
    ({"benchmarks": [], "something": 1}, "not a bench-suite run file, asv result or pytest-benchmark JSON"),
])
def test_malformed_files_get_one_clear_line(tmp_path: Path, doc: Any, message: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ResultsFileError, match=message) as info:
        load_runs([p])
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_empty_and_listing_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(ResultsFileError, match=r"empty file .*-p no:xdist"):
        load_runs([empty])
    results = _asv_folder(tmp_path)
    with pytest.raises(ResultsFileError, match=r"no results in it .*give the results folder"):
        load_runs([results / "benchmarks.json"])
    (tmp_path / "broken.json").write_text('{"schema": "bench-suite/run", ')
    with pytest.raises(ResultsFileError, match="not valid JSON"):
        load_runs([tmp_path / "broken.json"])
