"""A :class:`~bench_suite.analysis.compare.Comparison` for people: its document (text, Markdown,
HTML through ``renderer.py``), its JSON and its figure.

Everything here formats what ``compare.compare`` computed; nothing is recomputed.
:func:`comparison_document` builds the one section model that every format renders, escaping
each string for its format there. matplotlib is imported only when the figure is drawn.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench_suite.analysis.compare import CasePair, Comparison
from bench_suite.report import renderer
from bench_suite.report.document import Cell, DisplayTable, Document, Figure, Section, Strong, para, png_size
from bench_suite.report.format import fmt_change, fmt_interval, fmt_pct, fmt_setting_pct, fmt_time, fmt_time_ratio

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

FORMATS = ("text", "md", "html", "json")

#: Order in which verdicts are listed: what needs attention first.
_ORDER = {"slower": 0, "faster": 1, "inconclusive": 2, "unchanged": 3}
#: Colours (Okabe-Ito): the warning colour marks regressions in the figure and the page.
VERDICT_COLOURS = {"slower": "#D55E00", "faster": "#009E73", "unchanged": "#555555",
                   "inconclusive": "#999999"}
#: The figure shows at most this many cases (the ones that changed, then the largest moves).
FIGURE_MAX_CASES = 150


# --- shared formatting --------------------------------------------------------------------


def ordered_pairs(c: Comparison) -> list[CasePair]:
    """Pairs in reading order: slower, faster, inconclusive, unchanged; largest ratio first."""
    def key(p: CasePair) -> tuple[int, float, str]:
        r = p.ratio if math.isfinite(p.ratio) else 1.0
        return _ORDER[p.verdict], -r, p.case_id

    return sorted(c.pairs, key=key)


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    if p < 1e-10:
        return "<1e-10"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


#: How each test method is described in the settings line.
_METHODS = {
    "paired rounds": "paired t-test on the rounds (ab: round r of each side side by side)",
    "rounds": "Welch t-test on the rounds' medians",
    "runs": "Welch t-test on the runs' medians",
    "samples": "bootstrap interval and Mann-Whitney U on one process's samples (one round per side: "
               "the spread between runs is unknown)",
}


def settings_line(c: Comparison) -> str:
    o = c.options
    over = f"over {c.tested} tested case{'s' if c.tested != 1 else ''}"
    corr = {"holm": f"Holm correction {over}",
            "bh": f"Benjamini-Hochberg false-discovery-rate correction {over}"}.get(
                o.correction, "no multiple-testing correction")
    combine = "pooled" if o.combine == "pool" else "latest only"
    methods = list(dict.fromkeys(p.method for p in c.pairs)) or ["samples"]
    how = "; ".join(_METHODS.get(m, m) for m in methods)
    return (f"threshold {fmt_setting_pct(o.threshold)}, alpha {o.alpha:g} ({corr}); {fmt_setting_pct(o.confidence)} "
            f"intervals; {how}; measurements {combine}")


def headline(c: Comparison) -> str:
    n = c.counts()
    parts = [f"{n[v]} {v}" for v in ("slower", "faster", "unchanged", "inconclusive")]
    verdict = (f"REGRESSION: {len(c.regressions)} case{'s' if len(c.regressions) != 1 else ''} "
               f"slower beyond {fmt_setting_pct(c.options.threshold)}" if c.has_regression else "no regression")
    flags: dict[str, int] = {}
    for p in c.pairs:
        if p.flag:
            flags[p.flag] = flags.get(p.flag, 0) + 1
    unjudged = (f"; not judged: {', '.join(f'{k} {v}' for k, v in flags.items())}" if flags else "")
    return f"{verdict} ({', '.join(parts)} of {len(c.pairs)} compared{unjudged})"


def fmt_units(p: CasePair) -> str:
    if p.method == "samples":
        return "1/1"
    return f"{p.base_rounds}/{p.cand_rounds}" + (" paired" if p.method == "paired rounds" else
                                                 " runs" if p.method == "runs" else "")


def fmt_detectable(p: CasePair) -> str:
    return fmt_pct(p.detectable, 1)


def hardware_line(c: Comparison) -> str:
    if not c.different_hardware:
        return ""
    hw = [d for d in c.env_differences if d.hardware]
    what = "; ".join(f"{d.label}: {d.base} vs {d.cand}" for d in hw)
    return f"different hardware ({what}): the ratios compare machines, not only code"


def _side(c: Comparison, which: str) -> str:
    s = c.base if which == "base" else c.cand
    runs = ", ".join(s.run_ids) if len(s.run_ids) <= 3 else f"{len(s.run_ids)} runs"
    bits = [f"runs {runs}", f"machine {', '.join(s.machines) or '-'}"]
    if s.commits:
        bits.append(f"commit {', '.join(s.commits)}")
    if s.sources != ("bench-suite",):
        bits.append(f"source {', '.join(s.sources)}")
    return f"{s.label} ({'; '.join(bits)})"


def _env_rows(c: Comparison) -> list[list[str]]:
    return [[d.label + (" (hardware)" if d.hardware else ""), d.base, d.cand] for d in c.env_differences]


def _pair_cells(p: CasePair) -> list[str]:
    return [p.case_id, fmt_time(p.base_median_s), fmt_time(p.cand_median_s), fmt_time_ratio(p.ratio),
            fmt_change(p.ratio), fmt_interval(p.ci_low, p.ci_high), fmt_p(p.p_adjusted),
            fmt_units(p), fmt_detectable(p), p.verdict, p.note]


def _pair_header(c: Comparison) -> list[str]:
    return ["case", "base median", "cand median", "ratio", "change",
            f"{fmt_setting_pct(c.options.confidence)} interval", "p (adj.)", "rounds", "detectable", "verdict",
            "note"]


# --- the document -------------------------------------------------------------------------


GEOMEAN_HEADER = ("op", "backend", "cases", "geomean", "change", "slower", "faster", "unchanged",
                  "inconclusive")


def geomean_rows(c: Comparison) -> list[list[str]]:
    """The geometric-mean table's cells (every format renders these)."""
    return [[g.op, g.backend, str(g.cases), fmt_time_ratio(g.geomean), fmt_change(g.geomean), str(g.slower),
             str(g.faster), str(g.unchanged), str(g.inconclusive)] for g in c.geomeans]


def _cells(row: Sequence[str], left: set[int], tone: str = "", tone_col: int | None = None) -> tuple[Cell, ...]:
    return tuple(Cell(x, left=i in left, tone=tone if i == tone_col else "") for i, x in enumerate(row))


#: The text columns of each table (the rest are numbers, aligned right).
_PAIR_TEXT, _GEOMEAN_TEXT = {0, 5, 9, 10}, {0, 1}
_VERDICT_COL = 9


def comparison_document(c: Comparison, figure: bool = False) -> Document:
    """The comparison as a document; ``figure``: draw the ratio per case (the page shows it)."""
    head = [para(Strong("BASE"), " ", _side(c, "base"), tone="meta"),
            para(Strong("CAND"), " ", _side(c, "cand"), tone="meta"),
            para(headline(c), tone="bad" if c.has_regression else "good"),
            para(f"{settings_line(c)}. Verdicts are explained in docs/compare.md.", tone="muted")]
    if not c.env_differences:
        head.append(para("Environment: same machine, software and settings."))
    secs = []
    if c.env_differences:
        env = DisplayTable("", ("differs in", "BASE", "CAND"),
                           tuple(_cells(r, {0, 1, 2}) for r in _env_rows(c)))
        secs.append(Section("environment", "Environment differs", tables=(env,),
                            warning=hardware_line(c)))
    png = figure_png(c) if figure else None
    if png is not None:
        drawn = Figure("comparison", "Ratio per case",
                       "Time ratio CAND / BASE per case with its interval (log scale; above 1 is "
                       "slower); regressions in the warning colour.", png, *png_size(png))
        secs.append(Section("figure", "Ratio per case", figures=(drawn,)))
    if c.pairs:
        pairs = ordered_pairs(c)
        table = DisplayTable("", tuple(_pair_header(c)),
                             tuple(_cells(_pair_cells(p), _PAIR_TEXT, p.verdict, _VERDICT_COL) for p in pairs),
                             row_tones=tuple(p.verdict for p in pairs))
        secs.append(Section("cases", "Cases", tables=(table,)))
    if c.geomeans:
        table = DisplayTable("", GEOMEAN_HEADER, tuple(_cells(r, _GEOMEAN_TEXT) for r in geomean_rows(c)))
        secs.append(Section("geomeans", "Geometric mean of ratios", tables=(table,)))
    for side, items in (("BASE", c.only_base), ("CAND", c.only_cand)):
        if items:
            secs.append(Section(f"only-{side.lower()}", f"only in {side} ({len(items)})",
                                items=tuple(f"{o.case_id} ({o.status})" for o in items)))
    # one list per reason: a CPU-only machine skips every CUDA case for the same one
    for k, (why, ids) in enumerate(not_compared_groups(c)):
        secs.append(Section(f"not-compared-{k}", f"Not compared ({len(ids)}): {why}", items=tuple(ids)))
    return Document("bench-suite compare", tuple(secs), head=tuple(head), level=3)


def _status(status: str, reason: str) -> str:
    return f"{status} ({reason})" if reason else status


def not_compared_groups(c: Comparison) -> list[tuple[str, list[str]]]:
    """Cases not compared, grouped by why: a CPU-only machine skips every CUDA case for the
    same reason, and one line says so better than a dozen."""
    groups: dict[str, list[str]] = {}
    for n in c.not_compared:
        if (n.base_status, n.base_reason) == (n.cand_status, n.cand_reason):
            why = f"{n.base_status} on both sides" + (f" ({n.base_reason})" if n.base_reason else "")
        else:
            why = (f"BASE {_status(n.base_status, n.base_reason)}; "
                   f"CAND {_status(n.cand_status, n.cand_reason)}")
        groups.setdefault(why, []).append(n.case_id)
    return list(groups.items())


# --- JSON ---------------------------------------------------------------------------------


def render_json(c: Comparison) -> str:
    return json.dumps(c.to_dict(), indent=1, allow_nan=False, ensure_ascii=False) + "\n"


# --- figure -------------------------------------------------------------------------------


def figure_pairs(c: Comparison) -> tuple[list[CasePair], int]:
    """The pairs the figure shows (at most FIGURE_MAX_CASES) and how many could be shown."""
    shown = [p for p in c.pairs if math.isfinite(p.ratio) and p.ratio > 0]
    total = len(shown)
    if total > FIGURE_MAX_CASES:
        shown.sort(key=lambda p: (p.verdict == "unchanged", -abs(math.log(p.ratio))))
        shown = shown[:FIGURE_MAX_CASES]
    shown.sort(key=lambda p: p.case_id, reverse=True)  # top to bottom in id order
    return shown, total


def ratio_ticks(lo: float, hi: float, most: int = 12) -> list[float]:
    """Readable ticks for a log axis of ratios: 1 always, then round values (1.05, 1.1, 1.2,
    2, 5, 10...) at least 1/most of the axis apart, so a narrow axis still gets labels."""
    cands = {b * 10.0**k for k in range(-6, 7) for b in (1, 2, 5)}
    cands |= {0.5, 0.8, 0.9, 0.95, 1.05, 1.1, 1.2, 1.5, 3}
    inside = sorted(t for t in cands if lo <= t <= hi)
    gap = math.log(hi / lo) / most
    kept = [1.0] if lo <= 1.0 <= hi else []
    for t in sorted(inside, key=lambda t: abs(math.log(t))):  # outward from 1
        if all(abs(math.log(t / k)) >= gap for k in kept):
            kept.append(t)
    if len(kept) < 3:  # a very narrow axis: evenly spaced values, rounded
        kept += [float(f"{lo * (hi / lo) ** (i / 4):.3g}") for i in range(5)]
    return sorted(set(kept))


def comparison_figure(c: Comparison) -> MplFigure | None:
    """Ratio per case with its interval on a log axis; regressions in the warning colour."""
    pairs, total = figure_pairs(c)
    if not pairs:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from bench_suite.report.figures import safe_text

    o = c.options
    fig = Figure(figsize=(10, 1.4 + 0.24 * len(pairs)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.axvspan(o.lower, o.upper, color="#dddddd", alpha=0.6, lw=0,
               label=f"within ±{fmt_setting_pct(o.threshold)} (threshold)")
    ax.axvline(1.0, color="black", lw=0.8)
    ys = range(len(pairs))
    for verdict in ("unchanged", "inconclusive", "faster", "slower"):
        sel = [(y, p) for y, p in zip(ys, pairs, strict=True) if p.verdict == verdict]
        if not sel:
            continue
        x = [p.ratio for _, p in sel]
        lo = [p.ratio - p.ci_low if math.isfinite(p.ci_low) else 0.0 for _, p in sel]
        hi = [p.ci_high - p.ratio if math.isfinite(p.ci_high) else 0.0 for _, p in sel]
        ax.errorbar(x, [y for y, _ in sel], xerr=[lo, hi], fmt="o", ms=4, capsize=2,
                    color=VERDICT_COLOURS[verdict], label=verdict)
    ax.set_xscale("log")
    # plottable ratios only: a ratio of subnormal medians can be 0 or inf, which no log axis holds
    values = [v for p in pairs for v in (p.ratio, p.ci_low, p.ci_high) if 1e-12 < v < 1e12]
    span = max([*values, o.upper]) / min([*values, o.lower])
    pad = span ** 0.04  # 4% of the axis on each side, so edge points keep their markers
    lo_x = min([*values, o.lower]) / pad
    hi_x = max([*values, o.upper]) * pad
    ax.set_xlim(lo_x, hi_x)
    ax.xaxis.set_major_locator(FixedLocator(ratio_ticks(lo_x, hi_x)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([safe_text(p.case_id) for p in pairs], fontsize=7)
    ax.set_ylim(-0.7, len(pairs) - 0.3)
    ax.set_xlabel(f"time ratio CAND / BASE (log scale; >1 is slower), "
                  f"{fmt_setting_pct(o.confidence)} bootstrap interval", fontsize=8)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    title = "Comparison per case"
    if total > len(pairs):
        title += f" (the {len(pairs)} of {total} that moved most)"
    ax.set_title(title, fontsize=10)
    return fig


def figure_png(c: Comparison, dpi: int = 100) -> bytes | None:
    fig = comparison_figure(c)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


_SUFFIX_FORMATS = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json",
                   ".txt": "text"}


def format_for(output: str | os.PathLike[str] | None, fmt: str | None) -> str:
    """The format asked for, else the one the output file's suffix names, else text."""
    if fmt:
        return fmt
    if output:
        return _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "text")
    return "text"


def write_output(text: str, path: Path) -> None:
    """Write a rendered comparison atomically; an unwritable path is one OutputError line."""
    from bench_suite.core.errors import OutputError
    from bench_suite.store.results import atomic_write_text

    try:
        atomic_write_text(Path(path), text)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def render(c: Comparison, fmt: str) -> str:
    """The comparison in one of ``FORMATS``."""
    renderers: dict[str, Callable[[Comparison], str]] = {
        "text": lambda c: renderer.to_text(comparison_document(c)),
        "md": lambda c: renderer.to_markdown(comparison_document(c)),
        "html": lambda c: renderer.to_html(comparison_document(c, figure=True)),
        "json": render_json,
    }
    if fmt not in renderers:
        from bench_suite.core.errors import UsageError

        raise UsageError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    return renderers[fmt](c)
