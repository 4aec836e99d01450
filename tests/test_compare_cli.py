"""`bench-suite compare` end to end: two real runs, one with a backend slowed on purpose; the
renderers; and bad input."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_suite import backends
from bench_suite.analysis.compare import CompareOptions, compare
from bench_suite.backends.base import Backend, Prepared
from bench_suite.core.cases import Case, parse_case_id
from bench_suite.frontends.cli import main
from bench_suite.measure import runner
from bench_suite.report import comparison as render
from bench_suite.store.results import Measurement, Run
from tests.quiet import QuietMonitor

# --- the end-to-end test -------------------------------------------------------------------

#: Busy-wait added to every timed call of a slowed case. numpy's float32 matmul at n=32..64
#: takes about 1-4 µs here, so this makes it 50-200 times slower: far beyond the --threshold
#: used below, which in turn is far beyond what separate runs on a shared 2-core VM drift by.
EXTRA_NS = 200_000
SWEEP = ["--backends", "numpy", "--ops", "matmul,hadamard", "--dtypes", "float32", "--sizes", "32,64",
         "--threads", "1", "--time-budget", "0.05", "--quiet", "--machine", "ci-box", "--rounds", "1"]


class SlowedBackend(Backend):
    """A test double: numpy, with every timed call of the chosen op made slower by a fixed
    busy-wait (deterministic, unlike sleep). Verification runs the real op untouched."""

    def __init__(self, inner: Backend, op: str, extra_ns: int):
        self.inner, self.op, self.extra_ns = inner, op, extra_ns
        self.name, self.device = inner.name, inner.device

    def availability(self, case: Case) -> Any:
        return self.inner.availability(case)

    def threads(self, count: int | None) -> Any:
        return self.inner.threads(count)

    def device_name(self) -> str:
        return self.inner.device_name()

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        prepared = self.inner.prepare(case, inputs)
        if case.op != self.op:
            return prepared
        call, extra = prepared.call, self.extra_ns

        def slowed() -> object:
            out = call()
            end = time.perf_counter_ns() + extra
            while time.perf_counter_ns() < end:
                pass
            return out

        return Prepared(slowed, prepared.run_once, prepared.inputs, prepared.release)


def _slow(op: str) -> Callable[[str], Backend]:
    real = backends.FACTORIES["numpy"]
    return lambda name: SlowedBackend(real(name), op, EXTRA_NS)


def test_compare_two_real_runs_names_exactly_the_slowed_cases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "Monitor", QuietMonitor)  # the subject is compare, not the load
    assert main(["run", *SWEEP, "--out", str(tmp_path / "base")]) == 0
    monkeypatch.setitem(backends.FACTORIES, "numpy", _slow("matmul"))
    assert main(["run", *SWEEP, "--out", str(tmp_path / "cand")]) == 0
    capsys.readouterr()

    # Separate runs on a shared 2-core machine drift by tens of percent at these tiny sizes
    # (docs/compare.md), so the gate is set where only the deliberate slowdown can reach.
    gate = ["--threshold", "300%"]
    code = main(["compare", str(tmp_path / "base"), str(tmp_path / "cand"), *gate, "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    slowed = {"matmul/numpy/float32/n=32/threads=1", "matmul/numpy/float32/n=64/threads=1"}
    assert code == 1
    assert set(doc["regressions"]) == slowed
    assert {p["case_id"] for p in doc["pairs"]} == slowed | {
        "hadamard/numpy/float32/n=32/threads=1", "hadamard/numpy/float32/n=64/threads=1"}
    assert all(p["ratio"] > 2 for p in doc["pairs"] if p["case_id"] in slowed)
    assert doc["only_base"] == doc["only_cand"] == doc["not_compared"] == []

    # the terminal table names the same cases, on rows that say "slower"
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "cand"), *gate]) == 1
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.startswith(("matmul/", "hadamard/"))]
    slower_rows = {r[0] for r in rows if "slower" in r}
    assert slower_rows == slowed
    assert "REGRESSION: 2 cases slower beyond 300%" in text

    # a run against itself: no regression, exit 0
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "base")]) == 0
    assert "no regression" in capsys.readouterr().out


# --- renderers -----------------------------------------------------------------------------

EVIL = "<script>alert(1)</script> | *x* _y_ `z` [l](javascript:e)"


def _m(case_id: str, samples: list[float], status: str = "ok", reason: str = "") -> Measurement:
    return Measurement(parse_case_id(case_id), status, reason, samples_s=tuple(samples))


def _s(median: float, seed: int, n: int = 30) -> list[float]:
    return list(median * np.random.default_rng(seed).lognormal(0, 0.01, n))


def _comparison() -> Any:
    env_b = {"cpu": {"model": "Zen 4 " + EVIL}, "packages": {"numpy": "2.4.6"}}
    env_c = {"cpu": {"model": "Xeon"}, "packages": {"numpy": "2.5.0"}}
    base = Run("b", "box", "", env_b, {}, (
        _m("matmul/numpy/float32/n=64/threads=1", _s(1e-3, 1)),
        _m("hadamard/numpy/float32/n=64/threads=1", _s(1e-4, 2)),
        _m("matmul_backward/numpy/float32/n=64/threads=1", _s(1e-3, 3)),
        _m("hadamard_backward/numpy/float32/n=64/threads=1", _s(1e-3, 3)),
    ))
    cand = Run("c", "box", "", env_c, {}, (
        _m("matmul/numpy/float32/n=64/threads=1", _s(2e-3, 4)),
        _m("hadamard/numpy/float32/n=64/threads=1", _s(0.5e-4, 5)),
        _m("matmul_backward/numpy/float32/n=64/threads=1", [], "failed", EVIL),
        _m("matmul/numpy/float32/n=32/threads=1", _s(1e-3, 6)),
    ))
    return compare([base], [cand], CompareOptions(), base_label="base/" + EVIL, cand_label="cand")


def test_text_puts_the_environment_first() -> None:
    out = render.render(_comparison(), "text")
    lines = out.splitlines()
    env_at = next(i for i, line in enumerate(lines) if line.startswith("ENVIRONMENT DIFFERS"))
    table_at = next(i for i, line in enumerate(lines) if line.startswith("case "))
    assert env_at < table_at
    assert "different hardware" in lines[env_at] and "Xeon" in lines[env_at]
    assert "only in BASE (1):" in out and "only in CAND (1):" in out
    assert "hadamard_backward/numpy/float32/n=64/threads=1" in out
    assert "BASE ok; CAND failed" in out


def test_markdown_escapes_file_text_and_keeps_table_shape() -> None:
    out = render.render(_comparison(), "md")
    assert "<script>" not in out and "\\<script\\>" in out
    assert "[l](javascript" not in out
    header = next(line for line in out.splitlines() if line.startswith("| case |"))
    width = len(re.findall(r"(?<!\\)\|", header))
    for line in out.splitlines():
        if line.startswith("| ") and "matmul/" in line and "failed" not in line:
            assert len(re.findall(r"(?<!\\)\|", line)) == width, line
    assert ":red_circle:" in out and "different hardware" in out


def test_html_is_self_contained_escaped_and_has_the_figure() -> None:
    out = render.render(_comparison(), "html")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert out.count("<table>") >= 3
    assert 'class="slower"' in out  # the regression's row and verdict carry the warning colour
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', out)
    assert png is not None and base64.b64decode(png.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in out and "https://" not in out  # nothing fetched from elsewhere


def test_figure_marks_regressions_in_the_warning_colour() -> None:
    from matplotlib.colors import to_hex

    fig = render.comparison_figure(_comparison())
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    colours = {c.get_label(): to_hex(c.lines[0].get_color()) for c in ax.containers}
    assert colours["slower"].upper() == render.VERDICT_COLOURS["slower"]
    assert colours["faster"].upper() == render.VERDICT_COLOURS["faster"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "matmul/numpy/float32/n=64/threads=1" in labels


def test_escape_helpers() -> None:
    from bench_suite.report.escape import html_text, md_cell, md_text

    assert html_text('<a href="x">&\'') == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
    assert md_text("a|b *c* _d_ `e` <f> [g](h) ~i~ \\") == (
        "a\\|b \\*c\\* \\_d\\_ \\`e\\` \\<f\\> \\[g\\](h) \\~i\\~ \\\\")
    assert md_text("&lt;") == "&amp;lt;"  # an entity in a file stays literal text
    assert md_cell("two\nlines") == "two lines" and md_cell("") == "-"


def test_json_round_trips() -> None:
    doc = json.loads(render.render(_comparison(), "json"))
    assert doc["regressions"] == ["matmul/numpy/float32/n=64/threads=1"]
    assert doc["different_hardware"] is True
    assert doc["not_compared"][0]["cand_reason"] == EVIL


def test_output_file_and_format_from_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = tmp_path / "b.json", tmp_path / "c.json"
    from bench_suite.store.results import save_run

    c = _comparison()
    assert c.has_regression
    runs = _runs_for_files()
    save_run(runs[0], base)
    save_run(runs[1], cand)
    assert main(["compare", str(base), str(cand), "-o", str(tmp_path / "cmp.md")]) == 1
    assert (tmp_path / "cmp.md").read_text().startswith("### bench-suite compare")
    assert "wrote" in capsys.readouterr().out
    assert main(["compare", str(base), str(cand), "-o", str(tmp_path / "cmp.html")]) == 1
    assert (tmp_path / "cmp.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["compare", str(base), str(cand), "--format", "json", "-o", str(tmp_path / "x.txt")]) == 1
    json.loads((tmp_path / "x.txt").read_text())


def _runs_for_files() -> tuple[Run, Run]:
    base = Run("b", "box", "2026-01-01T00:00:00+00:00", {}, {},
               (_m("matmul/numpy/float32/n=64/threads=1", _s(1e-3, 1)),))
    cand = Run("c", "box", "2026-01-02T00:00:00+00:00", {}, {},
               (_m("matmul/numpy/float32/n=64/threads=1", _s(1.3e-3, 2)),))
    return base, cand


# --- bad input: one line, exit 2 -------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    from bench_suite.store.results import save_run

    path = tmp_path / "good.json"
    save_run(_runs_for_files()[0], path)
    return path


def test_missing_file(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(good), str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in _one_line_error(capsys)


def test_foreign_json(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"hello": [1, 2, 3]}))
    assert main(["compare", str(foreign), str(good)]) == 2
    assert "foreign.json" in _one_line_error(capsys)


def test_truncated_json(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.json"
    cut.write_text(good.read_text()[:100])
    assert main(["compare", str(good), str(cut)]) == 2
    _one_line_error(capsys)


@pytest.mark.parametrize("args, needle", [
    (["--threshold", "abc"], "threshold"),
    (["--threshold", "5"], "ambiguous"),
    (["--threshold", "-5%"], "threshold"),
    (["--alpha", "1.5"], "alpha"),
    (["--alpha", "x"], "alpha"),
    (["--format", "pdf"], "format"),
])
def test_malformed_options(good: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                           needle: str) -> None:
    code = _exit_code(lambda: main(["compare", str(good), str(good), *args]))
    assert code == 2
    assert needle in _one_line_error(capsys)


def test_unwritable_output(tmp_path: Path, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compare", str(good), str(good), "-o", str(blocker / "out.md")]) == 2
    assert "cannot write" in _one_line_error(capsys)


def _exit_code(fn: Callable[[], int]) -> int:
    """argparse errors exit through SystemExit; library errors return the code."""
    try:
        return fn()
    except SystemExit as exc:
        return int(exc.code or 0)
