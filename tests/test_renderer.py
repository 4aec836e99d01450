"""The one renderer: every document (report, comparison, fleet, doctor) laid out as HTML,
Markdown and text, escaping every string from data in one place for its format."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bench_suite.analysis.compare import CompareOptions, compare
from bench_suite.analysis.diagnosis import DeviceCheck, DoctorReport, FigureCheck, Finding
from bench_suite.report import comparison, render, renderer
from bench_suite.report.doctor_document import doctor_document
from bench_suite.report.document import Cell, Code, DisplayTable, Document, Para, Section, para, png_size
from tests.report_data import meas, run

SCRIPT = "<script>alert(1)</script>"
LIVE = "@user https://x.example/a www.x.example #12 mail@x.example"


def planted_runs() -> list:
    """A failure reason and a CPU name that are markup, on a machine whose name would be live."""
    ms = [meas("matmul", "numpy", 64, 4e-4), meas("matmul", "torch-cpu", 64, 2e-4),
          meas("hadamard", "numpy", 64, None, status="failed", reason=f"reason {SCRIPT}")]
    return [run(f"box {LIVE}", ms, cpu=f"cpu {SCRIPT}")]


def _csp(page: str) -> list[str]:
    return re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)


# --- HTML -----------------------------------------------------------------------------------


def test_a_planted_script_in_a_reason_and_a_cpu_name_reaches_the_page_escaped(tmp_path: Path) -> None:
    page = render.write_report(planted_runs(), tmp_path / "rep", with_figures=False).read_text()
    assert "<script" not in page
    assert f"reason {SCRIPT}".replace("<", "&lt;").replace(">", "&gt;") in page
    assert f"cpu {SCRIPT}".replace("<", "&lt;").replace(">", "&gt;") in page


def test_every_string_of_a_document_is_escaped_once() -> None:
    hostile = '<b x="1">\'&amp;'
    doc = Document(hostile, (Section(hostile, hostile, intro=hostile, items=(hostile,), notes=(hostile,),
                                     warning=hostile,
                                     tables=(DisplayTable(hostile, (hostile,), ((Cell(hostile, title=hostile),),),
                                                          hostile),),
                                     details=((hostile, ((hostile, hostile),)),)),),
                   subject=hostile, head=(para(hostile, Code(hostile), tone="meta"),), nav=True,
                   footnote=hostile)
    page = renderer.to_html(doc)
    assert "<b x=" not in page and "&amp;amp;" in page  # escaped, and only once
    assert page.count("&lt;b x=&quot;1&quot;&gt;&#x27;&amp;amp;") >= 14


def test_one_csp_and_one_stylesheet_on_the_report_and_the_comparison_pages(tmp_path: Path) -> None:
    runs = planted_runs()
    report_page = render.write_report(runs, tmp_path / "rep", with_figures=False).read_text()
    compare_page = comparison.render(compare(runs, runs, CompareOptions()), "html")
    for page in (report_page, compare_page):
        assert _csp(page) == [renderer.CSP]
        assert "default-src 'none'" in renderer.CSP and "script" not in renderer.CSP
        assert f"<style>\n{renderer.stylesheet()}</style>" in page
        assert page.count("<style>") == 1 and "<script" not in page


def test_the_comparison_figure_is_embedded_with_its_size() -> None:
    runs = planted_runs()
    slower = [run("box", [meas("matmul", "numpy", 64, 8e-4), meas("matmul", "torch-cpu", 64, 2e-4)])]
    page = comparison.render(compare(runs, slower, CompareOptions()), "html")
    img = re.search(r'<img src="data:image/png;base64,[^"]+" alt="Ratio per case" width="(\d+)" '
                    r'height="(\d+)">', page)
    assert img is not None and int(img.group(1)) > 300
    assert '<tr class="slower">' in page


def test_png_size_reads_the_header() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big")
    assert png_size(png) == (640, 480)
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + b"\0" * 30)


def test_an_unknown_tone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tone"):
        Para(("x",), tone="blink")


# --- Markdown -------------------------------------------------------------------------------


def _live(md: str) -> list[str]:
    """What GitHub would turn into a link or a mention."""
    return re.findall(r"(?i)(?<![\w\u2060])@\w|https?://|(?<![\w/])www\.|(?<!\w)#\d", md)


def test_markdown_from_data_is_inert(tmp_path: Path) -> None:
    render.write_report(planted_runs(), tmp_path / "rep", with_figures=False)
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "box @\u2060user" in summary and _live(summary) == []
    assert re.search(r"(?<!\\)<script", summary) is None and "\\<script\\>" in summary
    doc = Document(LIVE, (Section("s", LIVE, intro=LIVE, items=(LIVE,), notes=(LIVE,), warning=LIVE,
                                  tables=(DisplayTable(LIVE, (LIVE,), ((Cell(LIVE),),), LIVE),),
                                  details=((LIVE, ((LIVE, LIVE),)),)),),
                   head=(para(LIVE, tone="bad"), para("x ", Code(LIVE))), footnote=LIVE)
    md = renderer.to_markdown(doc)
    assert _live(md.replace(renderer.md_code(LIVE), "")) == []  # a code span is never a link
    assert md.count("@\u2060user") >= 10


def test_markdown_of_the_comparison_keeps_its_table_shape() -> None:
    runs = planted_runs()
    md = comparison.render(compare(runs, runs, CompareOptions()), "md")
    table = [line for line in md.splitlines() if line.startswith("| ")]
    widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table[:3]}
    assert len(widths) == 1 and table[1].startswith("| :-- | --: |")
    assert _live(md) == []


# --- text -----------------------------------------------------------------------------------


def test_text_tables_are_aligned() -> None:
    t = DisplayTable("", ("name", "time", "note"),
                     ((Cell("matmul", left=True), Cell("1 ms"), Cell("ok", left=True)),
                      (Cell("hadamard_backward", left=True), Cell("120.5 µs"), Cell("a\x1b[31mb", left=True))))
    lines = renderer.text_table(t)
    assert lines == ["name                   time  note",
                     "matmul                 1 ms  ok",
                     "hadamard_backward  120.5 µs  a [31mb"]
    # every cell of a column starts (left) or ends (right) at the same place
    assert len({line.index("ok") for line in lines[1:2]} | {lines[0].index("note")}) == 1


def test_text_of_a_document() -> None:
    doc = Document("bench-suite thing", (
        Section("a", "Loud", warning="machines differ", items=("x/y",)),
        Section("b", "Quiet", notes=("verdict: fine",)),
    ), head=(para("BASE ", "here", tone="meta"), para("no regression", tone="good")), footnote="done")
    assert renderer.to_text(doc) == ("bench-suite thing\nBASE here\n\nno regression\n\n"
                                     "LOUD -- machines differ\n  x/y\n\nQuiet:\n  verdict: fine\n\ndone\n")


# --- the doctor -----------------------------------------------------------------------------


def _doctor_report(model: str) -> DoctorReport:
    figures = (FigureCheck("matmul_bfloat16", "matmul bfloat16", "FLOP/s", 600e12, 794.5e12),
               FigureCheck("copy", "device copy", "B/s", 3.0e12, 3.0e12))
    gpu = DeviceCheck("cuda:1", "torch-cuda", model, "H100 SXM5 80GB", figures,
                      (Finding("power limit lowered to 450 W (default 700 W)", fault=True),),
                      "below normal", "power limit lowered to 450 W (default 700 W)",
                      state={"available": True, "power_limit_w": 450, "default_power_limit_w": 700,
                             "load": {"sm_clock_mhz": 1980, "reasons": {"sw_power_cap": 1.0}},
                             "processes": [{"own": True}, {"own": False}]},
                      seconds=1.25)
    cpu = DeviceCheck("cpu", "numpy", "Fake CPU", "", (), (), "unknown model",
                      state={"governor": "performance", "load_average_1m": 0.5,
                             "load": {"cores": 8, "other_cores": 0.25},
                             "blas": [{"user_api": "blas", "internal_api": "openblas", "version": "0.3",
                                       "architecture": "Haswell"}]})
    return DoctorReport("node1", "2026-01-01T00:00:00+00:00", (gpu, cpu))


def test_the_doctor_document_in_text() -> None:
    text = renderer.to_text(doctor_document(_doctor_report("NVIDIA H100 80GB HBM3")))
    lines = text.splitlines()
    assert lines[0] == "bench-suite doctor: node1"
    assert "cuda:1 NVIDIA H100 80GB HBM3 (reference: H100 SXM5 80GB):" in lines
    header = next(line for line in lines if line.startswith("figure "))
    row = next(line for line in lines if line.startswith("matmul bfloat16"))
    assert len(row) == len(header)  # the last column is right-aligned to the header
    assert "600.0 TFLOP/s" in row and "794.5 TFLOP/s" in row and row.endswith("76% (low)          90%")
    assert "  fault: power limit lowered to 450 W (default 700 W)" in lines
    assert "  verdict: below normal: power limit lowered to 450 W (default 700 W)  (1.2 s)" in lines
    assert any("sw_power_cap 100%" in line and "other processes: 1" in line for line in lines)
    assert "cpu Fake CPU (unknown model):" in lines
    assert any(line.startswith("  state: governor performance; other processes 0.25 of 8 cores")
               and "BLAS openblas 0.3 Haswell" in line for line in lines)
    assert lines[-1] == "2 devices checked: 1 below normal"


def test_the_doctor_document_escapes_a_planted_model() -> None:
    doc = doctor_document(_doctor_report(f"GPU {SCRIPT} @user"))
    page = renderer.to_html(doc)
    assert "<script" not in page and "GPU &lt;script&gt;" in page and _csp(page) == [renderer.CSP]
    md = renderer.to_markdown(doc)
    assert re.search(r"(?<!\\)<script", md) is None and _live(md) == []
    assert "\x1b" not in renderer.to_text(doctor_document(_doctor_report("GPU \x1b[2J")))


# --- figures draw the report's tables -------------------------------------------------------


def test_figures_draw_the_tables_the_sections_show(monkeypatch: pytest.MonkeyPatch) -> None:
    import collections
    import functools

    from bench_suite.report import tables
    from bench_suite.store.results import to_frame
    from tests.report_data import two_runs

    computed: collections.Counter[str] = collections.Counter()
    for name in ("time_table", "speedup_table", "thread_scaling", "backward_forward", "break_even_points"):
        body = getattr(tables, name).__wrapped__

        def counted(frame: Any, body: Any = body, name: str = name) -> Any:
            computed[name] += 1
            return body(frame)

        monkeypatch.setattr(tables, name, tables.once_per_report(functools.wraps(body)(counted)))
    rep = render.build_report(two_runs(), with_figures=True)
    assert {"throughput", "speedup", "thread_scaling", "backward_forward"} <= {f.spec.name for f in rep.figures}
    assert computed["time_table"] == computed["speedup_table"] == computed["thread_scaling"] == 1
    assert set(computed.values()) == {1}
    frame = to_frame(two_runs())
    with tables.prepared_once(frame):
        first = tables.time_table(frame)
        first["median_s"] = -1.0  # each caller gets its own copy
        assert (tables.time_table(frame)["median_s"] > 0).all()
    assert computed["time_table"] == 2
