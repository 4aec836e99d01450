"""Run files: round trip, journal recovery, atomic finish, and clear errors on bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench_suite import load_results, load_runs
from bench_suite.core.cases import Case
from bench_suite.core.errors import OutputError, ResultsFileError
from bench_suite.store.results import (
    COLUMNS,
    SCHEMA,
    VERSION,
    Measurement,
    Run,
    RunWriter,
    journal_path,
    read_run_file,
    to_frame,
)

CASE = Case("matmul", "numpy", "float32", (8, 8, 8), threads=1)


def _header(**kw: object) -> Run:
    base = dict(run_id="r1", machine="box", created_at="2026-01-01T00:00:00+00:00",
                env={"cpu": {"usable_cores": 2}, "git": {"commit": "abc"}}, config={"seed": 0},
                measurements=(), complete=False)
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


def _ok(case: Case = CASE, samples: tuple[float, ...] = (1e-3, 1.1e-3, 0.9e-3)) -> Measurement:
    return Measurement(case, "ok", samples_s=samples, number=4, stop="converged", rel_error=1e-7,
                       tolerance=1e-4, check="full", threads=1, peak_mem_bytes=768)


def test_writer_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r1.json"
    w = RunWriter(path, _header())
    w.add(_ok())
    w.add(Measurement(Case("hadamard", "torch-cuda", "float16", (8, 8)), "skipped", "no CUDA"))
    assert journal_path(path).exists() and not path.exists()
    run = w.finish("2026-01-01T00:01:00+00:00")
    assert path.exists() and not journal_path(path).exists()
    back = read_run_file(path)
    assert back.complete and back.run_id == "r1" and back.machine == "box"
    assert back.measurements == run.measurements
    assert back.measurements[0].samples_s == (1e-3, 1.1e-3, 0.9e-3)  # full precision kept


def test_journal_of_a_killed_run_loads_every_finished_case(tmp_path: Path) -> None:
    path = tmp_path / "r1.json"
    w = RunWriter(path, _header())
    for n in (8, 16, 24):
        w.add(_ok(Case("matmul", "numpy", "float32", (n, n, n), threads=1)))
    w.close()
    j = journal_path(path)
    # a torn last line: the process died while writing it
    j.write_text(j.read_text() + '{"measurement": {"case_id": "matmul/num')
    runs = load_runs([tmp_path])
    assert len(runs) == 1 and not runs[0].complete
    assert [m.case.n for m in runs[0].measurements] == [8, 16, 24]


def test_journal_with_a_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r1.json"
    w = RunWriter(path, _header())
    w.add(_ok())
    w.add(_ok())
    w.close()
    lines = journal_path(path).read_text().splitlines()
    lines[1] = lines[1][:20]
    journal_path(path).write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsFileError, match="line 2"):
        read_run_file(journal_path(path))


def test_unwritable_output_fails_before_measuring(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write results"):
        RunWriter(blocker / "r.json", _header())


def _write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "x.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def _good_doc() -> dict[str, object]:
    return _header(measurements=(_ok(),), complete=True).to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: "not json at all", "not valid JSON"),
        (lambda d: json.dumps(d)[:-40], "not valid JSON"),
        (lambda d: [1, 2, 3], "not a bench-suite run file"),
        (lambda d: {"benchmarks": []}, "not a bench-suite run file"),
        (lambda d: {**d, "schema": "other/thing"}, "schema"),
        (lambda d: {**d, "version": VERSION + 1}, "version"),
        (lambda d: {**d, "measurements": {}}, "must be a list"),
        (lambda d: {**d, "run_id": 5}, "run_id: expected a string"),
        (lambda d: _m(d, samples_s="fast"), "samples_s"),
        (lambda d: _m(d, samples_s=[1e-3, -1.0]), "non-negative"),
        (lambda d: _m(d, samples_s=[1e-3, True]), "expected numbers"),
        (lambda d: _m(d, status="great"), "status"),
        (lambda d: _m(d, number=10**30), "number"),
        (lambda d: _m(d, case_id="matmul/numpy/float32/n=9/threads=1"), "does not match"),
        (lambda d: _m(d, case={"op": "conv"}), "case"),
        (lambda d: json.dumps(d).replace("1e-07", "NaN"), "not a valid JSON number"),
        (lambda d: json.dumps(d).replace('"number": 4', '"number": ' + "9" * 5000), "not valid JSON"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path: Path, mutate: object, message: str) -> None:
    p = _write(tmp_path, mutate(_good_doc()))  # type: ignore[operator]
    with pytest.raises(ResultsFileError, match=message) as info:
        read_run_file(p)
    assert str(p) in str(info.value)
    assert "\n" not in str(info.value)


def _m(doc: dict[str, object], **fields: object) -> dict[str, object]:
    m = dict(doc["measurements"][0])  # type: ignore[index]
    # since version 2 the samples and their counts live in the measurement's rounds
    per_round = {k: fields.pop(k) for k in ("samples_s", "number", "warmup_calls", "stop") if k in fields}
    m["rounds"] = [{**m["rounds"][0], **per_round}]  # type: ignore[index]
    m.update(fields)
    return {**doc, "measurements": [m]}


def test_binary_junk_and_missing_paths(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_bytes(bytes(range(256)))
    with pytest.raises(ResultsFileError, match="binary"):
        read_run_file(junk)
    with pytest.raises(ResultsFileError, match="no such file"):
        load_runs([tmp_path / "nope.json"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsFileError, match="no run files"):
        load_runs([empty])


def test_frame_has_the_promised_columns_and_derived_rates(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    w = RunWriter(p, _header())
    w.add(_ok(samples=(2e-3, 2e-3, 2e-3)))
    w.add(Measurement(Case("hadamard", "numpy", "float32", (4, 8), threads=1), "failed", "wrong result"))
    w.finish("t")
    df = load_results([p])
    assert list(df.columns) == list(COLUMNS)
    ok = df.iloc[0]
    assert ok["median_s"] == 2e-3
    assert ok["gflops"] == pytest.approx(2 * 8**3 / 2e-3 / 1e9)
    assert ok["gbps"] == pytest.approx(3 * 64 * 4 / 2e-3 / 1e9)
    assert (ok["m"], ok["k"], ok["n"], ok["threads"]) == (8, 8, 8, 1)
    assert ok["commit"] == "abc" and ok["machine"] == "box" and ok["device"] == "cpu"
    bad = df.iloc[1]
    assert bad["status"] == "failed" and math.isnan(bad["median_s"]) and bad["k"] is __import__("pandas").NA
    for required in ("run_id", "machine", "case_id", "op", "backend", "device", "dtype", "m", "k", "n",
                     "threads", "grad_mode", "status", "reason", "median_s", "q1_s", "q3_s", "ci_low_s",
                     "ci_high_s", "n_samples", "flops", "bytes", "gflops", "gbps", "rel_error",
                     "peak_mem_bytes"):
        assert required in df.columns


def test_frame_of_no_runs_is_empty_with_columns() -> None:
    df = to_frame([])
    assert df.empty and list(df.columns) == list(COLUMNS)


def test_saved_file_is_versioned_and_has_no_derived_statistics(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    w = RunWriter(p, _header())
    w.add(_ok())
    w.finish("t")
    doc = json.loads(p.read_text())
    assert doc["schema"] == SCHEMA and doc["version"] == VERSION
    assert "median" not in json.dumps(doc["measurements"][0])
