"""Hostile input, one named case at a time: run files from other versions, truncated JSON,
wrong types, huge numbers, NaN, foreign JSON, binary junk, pipes and devices, paths that do
not exist or cannot be written. Each gets one line and exit 2; nothing is unpickled.
(``test_fuzz_loading.py`` does the same with random mutations.)"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench_suite import load_results
from bench_suite.core.cases import Case
from bench_suite.core.errors import BenchSuiteError, ResultsFileError
from bench_suite.frontends import cli
from bench_suite.store.results import Measurement, Run, RunWriter, journal_path

PACKAGE = Path(__file__).resolve().parent.parent / "bench_suite"
CASE = Case("matmul", "numpy", "float32", (8, 8, 8), threads=1)


def _commands() -> set[str]:
    return set(cli.create_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def _main(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, err.getvalue()


def _assert_one_line_exit_2(rc: int, err: str) -> None:
    assert rc == 2, err
    assert err.startswith("bench-suite: error: ") and err.count("\n") == 1, err


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.json"
    w = RunWriter(path, Run("good", "box", "2026-01-01T00:00:00+00:00", {"cpu": {"usable_cores": 2}},
                            {"seed": 0}, (), complete=False))
    w.add(Measurement(CASE, "ok", samples_s=(1e-3, 1.1e-3, 0.9e-3), number=4, rel_error=1e-7,
                      tolerance=1e-4, threads=1))
    w.add(Measurement(Case("hadamard", "numpy", "float32", (8, 8), threads=1), "skipped", "no reason"))
    w.finish("2026-01-01T00:01:00+00:00")
    return path


def _doc(good: Path) -> dict[str, Any]:
    return json.loads(good.read_text())


def _m(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    # since version 2 the samples and their counts live in the measurement's rounds
    per_round = {k: fields.pop(k) for k in ("samples_s", "number", "warmup_calls", "stop") if k in fields}
    doc["measurements"][0]["rounds"][0].update(per_round)
    doc["measurements"][0].update(fields)
    return doc


Mutation = Callable[[dict[str, Any], str], str | bytes]
#: name -> (how to make the file from a good run, what the message says; None: the message of
#: a foreign format's own reader, whatever it is, as long as it is one line naming the file)
HOSTILE: dict[str, tuple[Mutation, str | None]] = {
    "other version": (lambda d, t: json.dumps(d | {"version": 99}), "version 99"),
    "version as text": (lambda d, t: json.dumps(d | {"version": "1"}), "version '1'"),
    "no version": (lambda d, t: json.dumps({k: v for k, v in d.items() if k != "version"}), "version None"),
    "truncated": (lambda d, t: t[: len(t) // 2], "not valid JSON"),
    "empty": (lambda d, t: "", "empty"),
    "wrong type: measurements": (lambda d, t: json.dumps(d | {"measurements": "all"}), "must be a list"),
    "wrong type: machine": (lambda d, t: json.dumps(d | {"machine": ["box"]}), "machine: expected a string"),
    "wrong type: complete": (lambda d, t: json.dumps(d | {"complete": "yes"}), "expected true or false"),
    "wrong type: env": (lambda d, t: json.dumps(d | {"env": [1]}), "env: expected an object"),
    "wrong type: case shape": (lambda d, t: json.dumps(_m(d, case=d["measurements"][0]["case"]
                                                          | {"shape": "8x8x8"})), "shape"),
    "huge number: 1e999": (lambda d, t: t.replace('"number": 4', '"number": 1e999'), "out of range"),
    "huge number: 10**400 sample": (lambda d, t: json.dumps(_m(d, samples_s=[10**400])), "sample"),
    "huge number: 1e300 s sample": (lambda d, t: json.dumps(_m(d, samples_s=[1e300, 1e300, 1e300])),
                                    "at most"),
    "huge number: 2**64 count": (lambda d, t: json.dumps(_m(d, number=2**64)), "number"),
    "huge number: 5000 digits": (lambda d, t: t.replace('"number": 4', '"number": ' + "9" * 5000),
                                 "not valid JSON"),
    "huge number: in env": (lambda d, t: t.replace('"usable_cores": 2', '"usable_cores": 1e400'),
                            "out of range"),
    "NaN sample": (lambda d, t: json.dumps(_m(d, samples_s=[float("nan")])), "not a valid JSON number"),
    "Infinity rel_error": (lambda d, t: json.dumps(_m(d, rel_error=float("inf"))), "not a valid JSON number"),
    "negative sample": (lambda d, t: json.dumps(_m(d, samples_s=[-1e-3])), "non-negative"),
    "foreign: pytest-benchmark-like": (lambda d, t: json.dumps({"machine_info": {}, "benchmarks": [
        {"name": "x", "stats": {"median": 1}}]}), None),
    "foreign: a list": (lambda d, t: "[1, 2, 3]", "not a bench-suite run file"),
    "foreign: a string": (lambda d, t: '"bench-suite/run"', "not a bench-suite run file"),
    "foreign: other schema": (lambda d, t: json.dumps(d | {"schema": "pyperf/suite"}), "schema"),
    "deeply nested": (lambda d, t: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "binary junk": (lambda d, t: bytes(range(256)) * 4, "binary"),
    "a pickle": (lambda d, t: pickle.dumps(d), "binary"),
    "UTF-16 text": (lambda d, t: t.encode("utf-16"), "binary"),
}


def _hostile_file(tmp_path: Path, good: Path, name: str) -> Path:
    mutate, _ = HOSTILE[name]
    data = mutate(_doc(good), good.read_text())
    path = tmp_path / "hostile.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_loader_says_what_is_wrong_in_one_line(tmp_path: Path, good: Path, name: str) -> None:
    path = _hostile_file(tmp_path, good, name)
    message = HOSTILE[name][1]
    with pytest.raises(BenchSuiteError, match=None if message is None else re.escape(message)) as info:
        load_results([path])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_report_and_compare_exit_2_with_one_line(tmp_path: Path, good: Path, name: str) -> None:
    path = _hostile_file(tmp_path, good, name)
    commands = _commands()
    if "compare" in commands:
        _assert_one_line_exit_2(*_main(["compare", str(good), str(path)]))
        _assert_one_line_exit_2(*_main(["compare", str(path), str(good)]))
    if "report" in commands:
        _assert_one_line_exit_2(*_main(["report", str(good), str(path), "-o", str(tmp_path / "rep")]))


def test_a_torn_journal_line_in_the_middle_is_an_error_but_at_the_end_is_not(good: Path) -> None:
    doc = _doc(good)
    header = {k: v for k, v in doc.items() if k not in ("measurements", "finished_at", "complete")}
    lines = [json.dumps(header)] + [json.dumps({"measurement": m}) for m in doc["measurements"]]
    j = journal_path(good.with_name("killed.json"))
    j.write_text("\n".join([*lines, lines[1][:30]]))  # killed while writing the last line
    assert len(load_results([j])) == 2
    j.write_text("\n".join([lines[0], lines[1][:30], lines[2]]) + "\n")
    with pytest.raises(ResultsFileError, match="line 2"):
        load_results([j])


def test_pipes_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    for path in (fifo, Path("/dev/zero")):  # /dev/zero would never end
        if path.exists():
            with pytest.raises(ResultsFileError, match="not a regular file"):
                load_results([path])
    with pytest.raises(ResultsFileError, match="not a regular file"):
        load_results([tmp_path])  # a folder holding a pipe named *.json


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="no such file"):
        load_results([tmp_path / "nope.json"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsFileError, match="no run files"):
        load_results([tmp_path / "empty"])
    if "compare" in _commands():
        _assert_one_line_exit_2(*_main(["compare", str(tmp_path / "nope"), str(tmp_path / "empty")]))


class _Payload:
    """Unpickling this would create a file: the proof that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_nothing_is_unpickled(tmp_path: Path, good: Path) -> None:
    marker = tmp_path / "unpickled"
    for name in ("run.json", "run.json.journal", "x.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Payload(marker)))
        with pytest.raises(ResultsFileError):
            load_results([path])
        if "compare" in _commands():
            _assert_one_line_exit_2(*_main(["compare", str(good), str(path)]))
    assert not marker.exists()
    # and no module of the package can unpickle at all
    unsafe = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|marshal|shelve|joblib)\b|"
                        r"torch\.load\(|yaml\.load\(|\beval\(", re.M)
    offenders = [p.name for p in PACKAGE.rglob("*.py") if unsafe.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def _unwritable(tmp_path: Path, good: Path) -> dict[str, Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folder = tmp_path / "taken.json"
    folder.mkdir()
    return {
        "under a regular file": blocker / "sub" / "r.json",
        "under /dev/null": Path("/dev/null/r.json"),
        "a folder named .json": folder,
        "an existing run file": good,
        "an existing journal": journal_path(tmp_path / "running.json"),
    }


@pytest.mark.parametrize("which", ["under a regular file", "under /dev/null", "a folder named .json",
                                   "an existing run file", "an existing journal"])
def test_run_out_that_cannot_be_written_fails_before_measuring(
    tmp_path: Path, good: Path, which: str
) -> None:
    target = _unwritable(tmp_path, good)[which]
    if which == "an existing journal":
        target.write_text("{}\n")
        target = target.with_name("running.json")
    before = good.read_bytes()
    rc, err = _main(["run", "--backends", "numpy", "--ops", "matmul", "--sizes", "8", "--threads", "1",
                     "--time-budget", "0.01", "--out", str(target), "--quiet"])
    _assert_one_line_exit_2(rc, err)
    assert good.read_bytes() == before  # an existing run is never replaced


def test_report_and_compare_outputs_that_cannot_be_written(tmp_path: Path, good: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    commands = _commands()
    if "report" in commands:
        _assert_one_line_exit_2(*_main(["report", str(good), "-o", str(blocker / "rep")]))
    if "compare" in commands:
        _assert_one_line_exit_2(*_main(["compare", str(good), str(good), "-o", str(blocker / "c.md")]))


def _every_m(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        for m in doc["measurements"]:
            m.update(fields)
    return edit


#: Files that are valid but absurd: they load, report and compare without a warning.
ABSURD: dict[str, Callable[[dict[str, Any]], None]] = {
    "counts at 2**63-1": _every_m(threads=2**63 - 1, peak_mem_bytes=2**63 - 1, number=2**63 - 1),
    "samples of 5e-324 s": _every_m(samples_s=[5e-324] * 3),
    "samples of 0 s": _every_m(samples_s=[0.0] * 3),
    "samples at the 1e6 s limit": _every_m(samples_s=[1e6] * 4),
    "one sample": _every_m(samples_s=[1e-3]),
    "wall_s and rel_error of 1e308": _every_m(wall_s=1e308, rel_error=1e308),
    "the largest shape": lambda d: [m.update(case=m["case"] | {"shape": [1 << 20] * len(m["case"]["shape"])},
                                             case_id=None) or m.pop("case_id") for m in d["measurements"]],
    "env of the wrong shapes": lambda d: d.update(env={
        "cpu": {"usable_cores": 10**30, "model": 5}, "git": {"commit": ["x"]}, "torch": 5, "packages": [1]}),
    "extra of the wrong shapes": _every_m(extra={"nvml": {"throttled": "yes"}, "cold_cache": 5}),
    "every case twice": lambda d: d["measurements"].extend(json.loads(json.dumps(d["measurements"]))),
    "no measurements": lambda d: d.update(measurements=[]),
    "markup in strings": lambda d: (d.update(machine="<script>alert(1)</script>", run_id="<b>x</b>|y"),
                                    _every_m(reason="<script>alert(1)</script>|x|\n# h",
                                             device_name="<img src=x onerror=alert(1)>")(d)),
}


#: Known crashes, each to be fixed where it is; strict: the test says when the fix lands.
_KNOWN: dict[str, pytest.MarkDecorator] = {}


@pytest.mark.parametrize("name", [pytest.param(n, marks=_KNOWN.get(n, ())) for n in ABSURD])
def test_valid_but_absurd_files_load_report_and_compare(tmp_path: Path, good: Path, name: str) -> None:
    doc = _doc(good)
    ABSURD[name](doc)
    path = tmp_path / "absurd.json"
    path.write_text(json.dumps(doc))
    assert len(load_results([path])) == len(doc["measurements"])  # no warning either: they are errors
    commands = _commands()
    if "report" in commands:
        rc, err = _main(["report", str(path), "-o", str(tmp_path / "rep")])
        assert rc == 0, err
        for written in (tmp_path / "rep" / "index.html", tmp_path / "rep" / "summary.md"):
            text = written.read_text(encoding="utf-8") if written.exists() else ""
            assert "<script>alert(1)" not in text and "<img src=x" not in text and "<b>x</b>" not in text
    if "compare" in commands:
        for fmt in ("text", "html"):
            rc, err = _main(["compare", str(good), str(path), "--format", fmt])
            assert rc in (0, 1), err
