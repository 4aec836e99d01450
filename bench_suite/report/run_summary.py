"""The table printed after a run, as data: its title, columns, cells and the lines under it.

Computed here, printed by the CLI (which only lays it out with rich): one row per case with
its median, the ± that describes it (between rounds, or within one process), its rate, its
speedup over numpy, its share of the measured peak where peaks were measured, and its notes.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench_suite.analysis import roofline
from bench_suite.report import tables
from bench_suite.report.format import fmt_rate, fmt_ratio, fmt_time
from bench_suite.store.results import Run, to_frame


@dataclass(frozen=True)
class SummaryView:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    footnotes: tuple[str, ...]  # plain text, one line each

    def left_aligned(self, column: str) -> bool:
        return column in ("case", "note")


def summary_view(run: Run) -> SummaryView:
    frame = roofline.add_roofline_columns(to_frame([run]), roofline.peaks_for_runs([run]))
    summary = tables.run_summary(frame)
    rounds = int(run.config.get("rounds", 1)) if isinstance(run.config.get("rounds", 1), int) else 1
    # "% peak" only where measured peaks exist (bench-suite peaks, saved beside the run)
    with_peak = "pct_of_peak" in summary and bool(summary["pct_of_peak"].notna().any())
    title = f"run {run.run_id} on {run.machine}" + (f", {rounds} rounds" if rounds > 1 else "")
    spread = "± rounds" if rounds > 1 else "± (1 process)"
    columns = ("case", "median", spread, "rate", "vs numpy", *(("% peak",) if with_peak else ()), "note")
    rows: list[tuple[str, ...]] = []
    skipped: dict[str, int] = {}
    contended = 0
    for row in summary.itertuples(index=False):
        if row.status == "ok":
            pct = getattr(row, "pct_of_peak", float("nan"))
            peak = ("-" if pct != pct else f"{pct:.0f}%",) if with_peak else ()
            suspect = bool(getattr(row, "speedup_contended", False) or getattr(row, "speedup_bimodal", False))
            notes = [n for n, on in (
                (f"contended: {_busy(row.contention)}", getattr(row, "contended", False)),
                ("bimodal", getattr(row, "bimodal", False)), ("noisy", row.noisy)) if on]
            contended += bool(getattr(row, "contended", False))
            rows.append((row.case_id, fmt_time(row.median_s), f"{row.rel_ci:.1%}",
                         fmt_rate(row.rate, row.rate_unit),
                         fmt_ratio(row.speedup_vs_numpy) + ("?" if suspect else ""),
                         *peak, ", ".join([*notes, *tables.gpu_row_notes(row)])))
        elif row.status == "skipped":
            skipped[row.reason] = skipped.get(row.reason, 0) + 1
        else:
            rows.append((row.case_id, "-", "", "", "", *(("",) if with_peak else ()), f"failed: {row.reason}"))
    foot = [f"skipped {count} case{'s' if count > 1 else ''}: {reason}" for reason, count in skipped.items()]
    if contended:
        foot.append(f"{contended} case{'s' if contended > 1 else ''} contended: other processes held "
                    "cores they needed while they were timed; their figures (and ratios marked ?) are "
                    "not to be trusted, and compare never calls them slower or faster")
    if rounds == 1:
        foot.append("one round: ± is the spread within one process; the spread between runs is "
                    "unknown (measure with --rounds, or see bench-suite calibrate)")
    foot += tables.gpu_notes(summary)
    return SummaryView(title, columns, tuple(rows), tuple(foot))


def _busy(contention: float | None) -> str:
    """Why a case is contended: other processes' load, or (where that was too small to show)
    its own threads waiting for a core."""
    if contention is not None and contention == contention and contention >= 0.05:
        return f"machine busy ({contention:.1f} cores)"
    return "machine busy (its threads waited for a core)"
