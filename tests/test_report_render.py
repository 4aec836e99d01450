"""Writing reports: the files, valid figures, escaping of hostile text, the CLI."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
from PIL import Image

from bench_suite.core.errors import OutputError
from bench_suite.frontends import cli
from bench_suite.report import figures, render
from bench_suite.store.results import COLUMNS, save_run, to_frame
from tests.report_data import HOSTILE, hostile_runs, meas, run, two_runs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUR_FIGURES = {"throughput", "speedup", "thread_scaling", "backward_forward"}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of two_runs() with every registered figure (plugins too), but no frame hooks:
    the frame is exactly ``to_frame``'s, whatever plugins would add."""
    out = tmp_path_factory.mktemp("report")
    figures.load_plugins()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(render, "FRAME_HOOKS", [])
        render.write_report(two_runs(), out, command="bench-suite report results/ -o out")
    return out


@pytest.fixture
def cheap_figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The registry replaced by one small figure (drawn only when something was measured)."""
    figures.load_plugins()
    calls: list[str] = []

    def dot(frame: pd.DataFrame) -> Figure | None:
        calls.append("dot")
        if not (frame["status"] == "ok").any():
            return None
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2, 2))
        fig.subplots().plot([1, 2], [1, 2])
        return fig

    monkeypatch.setattr(figures, "_REGISTRY", [])
    figures.register("dot", "A dot", "caption")(dot)
    yield calls


class _Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    p.close()
    return p


def test_report_files(report_dir: Path) -> None:
    assert {p.name for p in report_dir.iterdir()} == {"index.html", "summary.md", "results.csv",
                                                     "figures"}
    assert {p.stem for p in (report_dir / "figures").glob("*.png")} >= OUR_FIGURES
    csv = pd.read_csv(report_dir / "results.csv")
    assert list(csv.columns) == list(COLUMNS)
    assert len(csv) == len(to_frame(two_runs()))


def test_every_figure_is_a_valid_png(report_dir: Path) -> None:
    pngs = list((report_dir / "figures").glob("*.png"))
    assert pngs
    for path in pngs:
        with Image.open(path) as img:
            img.verify()  # the PNG structure and its CRCs
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
            lo, hi = img.convert("L").getextrema()
            assert hi - lo > 100, f"{path.name} is blank"


def test_page_is_self_contained_with_embedded_figures(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    tags = parse_html(page).tags
    imgs = [a for t, a in tags if t == "img"]
    on_disk = {p.read_bytes() for p in (report_dir / "figures").glob("*.png")}
    assert len(imgs) == len(on_disk)
    for a in imgs:
        src = a["src"] or ""
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png in on_disk
        with Image.open(io.BytesIO(png)) as img:
            assert (str(img.width), str(img.height)) == (a["width"], a["height"])
    # nothing to fetch: no scripts, stylesheets, frames or remote URLs
    assert not {t for t, _ in tags} & {"script", "link", "iframe", "object", "embed"}
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "bench-suite report results/ -o out" in page


def test_page_content(report_dir: Path) -> None:
    text = " ".join(parse_html((report_dir / "index.html").read_text(encoding="utf-8")).text)
    for phrase in ("Median time and throughput", "Speedup over the baseline", "CPU thread scaling",
                   "Backward time / forward time", "torch autograd / numpy hand-derived",
                   "Cost of recording the graph", "Noisy cells", "Skipped and failed cases",
                   "not enough GPU memory", "wrong result: rel_error 0.5", "10.00x", "5.00x",
                   "1.25x †"):
        assert phrase in text, phrase
    assert "% of peak" not in text and "Device peaks" not in text  # no roofline columns


def test_summary_fits_a_comment_and_states_the_command(report_dir: Path) -> None:
    md = (report_dir / "summary.md").read_text(encoding="utf-8")
    assert len(md) < 65_536
    assert "`bench-suite report results/ -o out`" in md
    assert "| laptop | matmul | float32 | n=128 | 1.25x † |" in md  # machine as a series
    assert "[Throughput against size](figures/throughput.png)" in md


def _md_tables(md: str) -> list[list[int]]:
    """Cells per row of every table, as a CommonMark + GFM-tables parser reads them."""
    from markdown_it import MarkdownIt

    tables: list[list[int]] = []
    for tok in MarkdownIt("commonmark", {"html": True}).enable("table").parse(md):
        if tok.type == "table_open":
            tables.append([])
        elif tok.type == "tr_open":
            tables[-1].append(0)
        elif tok.type in ("th_open", "td_open"):
            tables[-1][-1] += 1
    return tables


def test_hostile_text_is_escaped(tmp_path: Path) -> None:
    # the names also hold '$\bogus{$' (malformed mathtext: unescaped, savefig raises) and
    # start with '_' (which hides a legend entry)
    index = render.write_report(hostile_runs(), tmp_path, command="bench-suite report <b>x</b>")
    page = index.read_text(encoding="utf-8")
    parsed = parse_html(page)
    # the only tags are the renderer's own; no attribute that a name could have added
    assert {t for t, _ in parsed.tags} <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "code",
        "nav", "a", "section", "ul", "li", "figure", "img", "figcaption", "b", "table", "thead",
        "tbody", "tr", "th", "td", "details", "summary", "dl", "dt", "dd", "div"}
    assert not any(k.startswith("on") for _, a in parsed.tags for k in a)
    assert all((a.get("href") or "#").startswith("#") for t, a in parsed.tags if t == "a")
    assert all((a.get("src") or "").startswith("data:image/png;base64,")
               for t, a in parsed.tags if t == "img")
    assert len([t for t, _ in parsed.tags if t == "img"]) == len(list(tmp_path.glob("figures/*.png")))
    text = "".join(parsed.text)
    assert HOSTILE in text and "<b>x</b>" in text  # shown as the same visible text

    from markdown_it import MarkdownIt

    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    for tag in ("<script", "<img", "<em>", "<h2>injected", "<code>code", "href=\"javascript"):
        assert tag not in html, tag
    assert re.findall(r'<a href="([^"]*)"', html) == [
        f"figures/{p.name}" for p in sorted(tmp_path.glob("figures/*.png"),
                                            key=lambda p: html.find(p.name))]
    assert "<h1" not in html and html.count("<h2>") == 1  # the title only
    tables = _md_tables(md)
    assert tables
    for rows in tables:  # a '|' or a newline in a name or reason added or split no cell
        assert len(set(rows)) == 1, rows


def test_hostile_names_stay_in_the_legend() -> None:
    fig = figures.throughput_figure(to_frame(hostile_runs()))
    assert fig is not None
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sum(HOSTILE[:20] in t for t in texts) == len(texts) >= 3
    assert figures.safe_text("_x$y$") == "\u200b_x\\$y\\$"


def test_one_colour_per_backend_in_every_figure() -> None:
    frame = to_frame(two_runs())
    seen = 0
    for name in OUR_FIGURES:
        spec = next(s for s in figures.registered() if s.name == name)
        fig = spec.make(frame)
        assert fig is not None, name
        for ax in fig.axes:
            for line in ax.get_lines():
                parts = line.get_label().split(" · ")
                # "machine · backend · threads=..." or "machine · torch-cuda / numpy · ..."
                backend = next((p.split(" / ")[0] for p in parts
                                if p.split(" / ")[0] in figures.BACKEND_COLOURS), None)
                if backend and "peak" not in line.get_label():
                    assert line.get_color().lower() == figures.BACKEND_COLOURS[backend].lower()
                    seen += 1
    assert seen > 10


def test_log_size_axis_when_sizes_span_decades() -> None:
    ms = [meas("matmul", b, n, n**3 * 1e-11) for b in ("numpy", "torch-cpu") for n in (16, 64, 256)]
    fig = figures.throughput_figure(to_frame([run("m", ms)]))
    assert fig is not None
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "n×n" in ax.get_xlabel() and "GFLOP/s" in ax.get_ylabel()


def test_peaks_drawn_and_tabled_when_known(tmp_path: Path) -> None:
    runs = two_runs()
    frame = to_frame(runs).assign(peak_gflops=40.0, peak_gbps=30.0, pct_of_peak=12.6)
    fig = figures.throughput_figure(frame)
    assert fig is not None
    assert any("peak" in line.get_label() for ax in fig.axes for line in ax.get_lines())
    render.write_report(runs, tmp_path, frame=frame, with_figures=False)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "13% of peak" in page and "Device peaks" in page  # percent, rounded


def test_frame_hooks_add_columns(tmp_path: Path) -> None:
    def hook(frame: pd.DataFrame, runs: object) -> pd.DataFrame:
        return frame.assign(pct_of_peak=50.0)

    render.add_frame_hook(hook)
    try:
        render.write_report(two_runs(), tmp_path, with_figures=False)
    finally:
        render.FRAME_HOOKS.remove(hook)
    assert "50% of peak" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_registry_figures_written_none_skipped_stale_removed(
        tmp_path: Path, cheap_figures: list[str]) -> None:
    render.write_report(two_runs(), tmp_path)
    assert [p.name for p in tmp_path.glob("figures/*.png")] == ["dot.png"]
    skipped = run("m", [meas("matmul", "torch-cuda", 64, None, threads=None, status="skipped",
                             reason="no CUDA")])
    render.write_report([skipped], tmp_path)
    assert cheap_figures == ["dot", "dot"]
    assert not list(tmp_path.glob("figures/*.png"))  # None: not drawn, the old one removed
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "no CUDA" in page and "No figures" in page
    with pytest.raises(ValueError):
        figures.register("../evil", "x")


def test_markdown_shortened_to_fit() -> None:
    rep = render.build_report(two_runs(), with_figures=False)
    full = render.to_markdown(rep)
    short = render.to_markdown(rep, limit=len(full) // 2)
    assert len(short) <= len(full) // 2
    assert "Left out to fit a comment" in short and "Left out" not in full
    assert "### Runs" in short and "### Skipped and failed cases" in short


def test_output_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        render.write_report(two_runs(), f, with_figures=False)


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    cheap_figures: list[str]) -> None:
    for r in two_runs():
        save_run(r, tmp_path / "results" / f"{r.run_id}.json")
    out = tmp_path / "rep"
    assert cli.main(["report", str(tmp_path / "results"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'index.html'}"
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert f"`bench-suite report {tmp_path / 'results'} -o {out}`" in md
    assert "laptop" in md and "gpubox" in md and (out / "figures" / "dot.png").exists()


def test_cli_report_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["report", str(bad), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", str(bad)])  # -o is required
    assert exc.value.code == 2


def test_report_of_a_run_without_measurements(tmp_path: Path) -> None:
    index = render.write_report([run("m", [])], tmp_path)
    text = " ".join(parse_html(index.read_text(encoding="utf-8")).text)
    assert "0 / 0 / 0" in text and "Every case ran." in text
    assert (tmp_path / "results.csv").read_text(encoding="utf-8").startswith("run_id,machine,")


def test_planted_formulas_links_and_mentions_come_out_inert(tmp_path: Path) -> None:
    import csv

    formula = '=HYPERLINK("https://evil.example/x","click")'
    chatter = "see https://evil.example and www.evil.example, ask @octocat or a@b.example, fixes #12"
    ms = [meas("matmul", "numpy", 64, 1e-4),
          meas("hadamard", "numpy", 64, None, status="failed", reason=formula),
          meas("hadamard", "torch-cpu", 64, None, status="skipped", reason=chatter)]
    render.write_report([run(formula, ms, gpu=formula)], tmp_path)
    with open(tmp_path / "results.csv", newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    # no cell a spreadsheet would evaluate; the text itself is all there, behind an apostrophe
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    assert f"'{formula}" in cells
    assert any(float(c) == 1e-4 for c in cells if c.replace(".", "", 1).replace("e-", "", 1).isdigit())
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    # GitHub would link or notify on these; with an invisible joiner inside, it does not
    for live in ("https://", "www.evil", "@octocat", "@b.example", "#12"):
        assert live not in md, live
    visible = md.replace("\u2060", "")  # the text as it reads is unchanged
    assert "https://evil.example and www.evil.example, ask @octocat" in visible


def test_a_report_prepares_its_frame_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_suite.report import tables

    calls = []
    real = tables._prepare
    monkeypatch.setattr(tables, "_prepare", lambda f: calls.append(1) or real(f))
    rep = render.build_report(two_runs(), with_figures=True)
    assert len(calls) == 1 and not tables._PREPARED  # once, and nothing kept afterwards
    # outside a report, prepare is computed as before (and equal to what the report used)
    frame = rep.frame
    assert tables.prepare(frame).equals(real(frame)) and len(calls) == 2
