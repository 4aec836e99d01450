"""Fuzzing: real run files (final and journal), mutated by hypothesis (byte flips, truncations,
type swaps, NaN and huge numbers, foreign JSON, binary junk), fed to the loader and to the
``report`` and ``compare`` commands. No traceback may escape: every error is the suite's own
(a BenchSuiteError, exit 2, one line)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench_suite import load_results
from bench_suite.core.cases import Case
from bench_suite.core.errors import BenchSuiteError
from bench_suite.core.timing import SamplingPlan
from bench_suite.frontends import cli
from bench_suite.measure.runner import RunOptions, run_sweep, start_run
from bench_suite.store.results import Measurement, journal_path

FAST = RunOptions(timing=SamplingPlan(time_budget_s=0.01, min_samples=3))
CASES = [Case(op, "numpy", "float32", (n,) * (3 if op == "matmul" else 2), threads=1)
         for op in ("matmul", "hadamard") for n in (8, 16)]
#: ``BENCH_SUITE_FUZZ_SCALE=50`` fuzzes 50 times longer, with fresh random examples; the default
#: run is short and derandomized, so CI sees the same examples every time.
SCALE = max(1, int(os.environ.get("BENCH_SUITE_FUZZ_SCALE", "1")))
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
                derandomize=SCALE == 1)


class _Files(dict[str, Any]):
    def __repr__(self) -> str:  # hypothesis prints its arguments: keep the report readable
        return "<real run files>"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real final run file and a real journal, the folder mutated files go to."""
    root = tmp_path_factory.mktemp("fuzz")
    final = run_sweep(CASES, root / "real" / "run.json", FAST, config={"preset": "quick"})
    writer = start_run(root / "real" / "killed.json", CASES, FAST)
    for m in final.measurements[:3]:
        writer.add(m)
    writer.add(Measurement(Case("matmul", "torch-cuda", "float16", (8, 8, 8)), "skipped", "no CUDA"))
    writer.close()  # as left by a killed run
    return _Files({
        "final": (root / "real" / "run.json").read_bytes(),
        "journal": journal_path(root / "real" / "killed.json").read_bytes(),
        "base": root / "real" / "run.json",
        "work": root / "work",
    })


# --- mutations ---------------------------------------------------------------------------

PAYLOADS = ["", "<script>alert(1)</script>", "| a | b |\n# heading", "x" * 5000, "é\u202e\x00"]
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([2**63, -(2**64), 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e-320, 5e-324]),
    st.text(max_size=20), st.sampled_from(PAYLOADS),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_DELETE = object()


def _like(draw: st.DrawFn, old: Any) -> Any:
    """A value of the same JSON type as ``old``: it passes type checks, so it tests meaning."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return draw(st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, 2**31, 2**63 - 1, 2**63]))
    if isinstance(old, float):
        return draw(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, 5e-324, 1e308]))
    if isinstance(old, str):
        return draw(st.text(max_size=20) | st.sampled_from(PAYLOADS))
    if isinstance(old, list):
        return draw(st.permutations(old)) if draw(st.booleans()) else old[: draw(st.integers(0, len(old)))]
    if isinstance(old, dict):
        return {k: v for k, v in old.items() if draw(st.booleans())}
    return draw(HOSTILE)


def _edit(doc: Any, path: list[int], change: Any) -> Any:
    """Apply ``change(old) -> new`` (or _DELETE) to the node ``path`` picks, walking down."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return change(doc)
    keys = list(doc) if isinstance(doc, dict) else list(range(len(doc)))
    key = keys[path[0] % len(keys)]
    new = _edit(doc[key], path[1:], change)
    if new is _DELETE:
        doc.pop(key)
    else:
        doc[key] = new
    return doc


@st.composite
def mutated(draw: st.DrawFn, original: bytes, journal: bool, edits: int = 1) -> bytes:
    """``edits``: weight of the structural edits, which more often give files that load."""
    kinds = ["flip", "truncate", "foreign", "binary", *["swap", "like", "delete", "like"] * edits]
    kind = draw(st.sampled_from(kinds))
    if kind == "flip":
        data = bytearray(original)
        for pos, bits in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)),
                                       min_size=1, max_size=6)):
            data[pos] ^= bits
        return bytes(data)
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "foreign":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "binary":
        return draw(st.binary(max_size=300))
    # an edit of the decoded document (each line of a journal is one document): a value of
    # another type, a value of the same type, or a key removed
    change = {"swap": lambda _old: draw(HOSTILE), "like": lambda old: _like(draw, old),
              "delete": lambda _old: _DELETE}[kind]
    lines = original.decode().splitlines() if journal else [original.decode()]
    which = draw(st.integers(0, len(lines) - 1))
    doc = _edit(json.loads(lines[which]), draw(st.lists(st.integers(0, 50), min_size=1, max_size=6)), change)
    lines[which] = json.dumps(None if doc is _DELETE else doc)  # NaN, Infinity as a foreign tool might
    return ("\n".join(lines) + "\n").encode()


def _place(work: Path, data: bytes, journal: bool) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / ("run.json.journal" if journal else "run.json")
    path.write_bytes(data)
    return path


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, BenchSuiteError), f"{type(exc).__name__} escaped: {exc}"
    assert "\n" not in str(exc) and str(exc)


# --- the loader ----------------------------------------------------------------------------


@settings(FUZZ, max_examples=120 * SCALE)
@given(data=st.data(), journal=st.booleans())
def test_loader_survives_mutated_run_files(files: dict[str, Any], data: st.DataObject, journal: bool) -> None:
    blob = data.draw(mutated(files["journal" if journal else "final"], journal))
    path = _place(files["work"], blob, journal)
    try:
        frame = load_results([path])
    except Exception as exc:
        _one_line(exc)
        event("rejected")
        return
    event("loaded")
    # what loads is a clean frame: no infinity hides in the times, every status is known
    assert set(frame["status"]) <= {"ok", "failed", "skipped"}
    times = frame["median_s"].dropna()
    assert all(math.isfinite(t) and t >= 0 for t in times)


# --- the commands --------------------------------------------------------------------------


def _has_command(name: str) -> bool:
    return name in cli.create_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def _main(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, err.getvalue()


@pytest.mark.skipif(not _has_command("report"), reason="no report command yet")
@settings(FUZZ, max_examples=12 * SCALE)
@given(data=st.data(), journal=st.booleans())
def test_report_survives_mutated_run_files(files: dict[str, Any], data: st.DataObject, journal: bool) -> None:
    blob = data.draw(mutated(files["journal" if journal else "final"], journal, edits=3))
    path = _place(files["work"], blob, journal)
    rc, err = _main(["report", str(path), "-o", str(files["work"] / "report")])
    assert rc in (0, 2), err
    event(f"report exit {rc}")
    if rc == 2:
        assert err.startswith("bench-suite: error: ") and err.count("\n") == 1, err
    else:
        for name in ("index.html", "summary.md"):  # strings from files are escaped
            written = files["work"] / "report" / name
            assert not written.exists() or "<script>alert(1)</script>" not in written.read_text("utf-8")


@pytest.mark.skipif(not _has_command("compare"), reason="no compare command yet")
@settings(FUZZ, max_examples=40 * SCALE)
@given(data=st.data(), journal=st.booleans(), swap=st.booleans())
def test_compare_survives_mutated_run_files(
    files: dict[str, Any], data: st.DataObject, journal: bool, swap: bool
) -> None:
    blob = data.draw(mutated(files["journal" if journal else "final"], journal, edits=3))
    path = _place(files["work"], blob, journal)
    pair = [str(files["base"]), str(path)]
    rc, err = _main(["compare", *(reversed(pair) if swap else pair)])
    assert rc in (0, 1, 2), err
    event(f"compare exit {rc}")
    if rc == 2:
        assert err.startswith("bench-suite: error: ") and err.count("\n") == 1, err


def test_unmutated_files_are_valid(files: dict[str, Any]) -> None:
    """The fuzzers start from valid files: a loader that rejected everything would fail here."""
    for journal in (False, True):
        path = _place(files["work"], files["journal" if journal else "final"], journal)
        frame = load_results([path])
        assert len(frame) == (4 if journal else len(CASES))
