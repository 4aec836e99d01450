"""The roofline figure: achieved GFLOP/s against arithmetic intensity, ceilings drawn.

Needs the columns of ``roofline.add_roofline_columns`` for its ceilings (``peak_gflops``,
``peak_gbps`` measured; ``datasheet_gflops``, ``datasheet_gbps``); without them it still
plots the points. One panel per device (machine and device name), log-log axes; per dtype a
measured roof (solid) and a datasheet/theoretical roof (dashed); points coloured by backend,
with a marker per dtype, filled on every core and hollow on one thread.

Registered with the report's figure registry on import (``figures.PLUGINS``), together with a
frame hook (``render.add_frame_hook``) that adds the roofline columns to every report: peaks
from ``peaks.json`` beside the run files, else the CPU's theoretical peak from the run's
environment and the GPU datasheet catalogue (``roofline.peaks_for_runs``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench_suite.analysis import roofline
from bench_suite.core.cases import DTYPES
from bench_suite.report import render
from bench_suite.report.figures import MARKERS, backend_colour, register, safe_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from bench_suite.store.results import Run

_DTYPE_MARKERS = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(DTYPES)}
_ROOF_GREYS = ("0.15", "0.45", "0.6", "0.3")


@render.add_frame_hook
def roofline_columns(frame: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """The report's frame with the roofline columns, from the peaks the runs can find."""
    return roofline.add_roofline_columns(frame, roofline.peaks_for_runs(runs))


@register(
    "roofline",
    "Roofline",
    "Achieved GFLOP/s against arithmetic intensity (FLOPs per byte of the least traffic the op "
    "needs), log-log, one panel per device. Solid roofs: the measured peaks of `bench-suite "
    "peaks` (best matmul, large copy); dashed: the datasheet or theoretical peak. A point's "
    "height below its roof is the fraction of the attainable rate it reached; filled points "
    "ran on every core, hollow ones on one thread (the roof drawn is the all-core one).",
)
def roofline_figure(frame: pd.DataFrame) -> Figure | None:
    df = frame[(frame["status"] == "ok") & (frame["gflops"] > 0) & (frame["intensity"] > 0)]
    if df.empty:
        return None
    df = df.assign(panel=[_panel(m, dev, name, several=frame["machine"].nunique() > 1)
                          for m, dev, name in zip(df["machine"], df["device"], df["device_name"],
                                                  strict=True)])
    panels = list(dict.fromkeys(df["panel"]))
    fig, axes = _new_figure(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        cell = df[df["panel"] == panel]
        _draw_roofs(ax, cell)
        for (backend, dtype, threads), g in cell.groupby(["backend", "dtype", "threads_label"],
                                                          sort=True):
            colour = backend_colour(str(backend))
            ax.scatter(g["intensity"], g["gflops"], s=22, marker=_DTYPE_MARKERS.get(dtype, "o"),
                       edgecolors=colour, facecolors=colour if threads == "all" else "none",
                       linewidths=1.0, label=safe_text(f"{backend} · {dtype}"), zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(safe_text(panel), fontsize=10)
        ax.set_xlabel("arithmetic intensity (FLOP/byte); filled: every core, hollow: 1 thread",
                      fontsize=8)
        ax.set_ylabel("achieved GFLOP/s", fontsize=8)
    return _finish(fig, axes)


def _new_figure(panels: int) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * panels + 3.6, 4.6), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, no pyplot: no global state, no GUI
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def _finish(fig: Figure, axes: list[Axes]) -> Figure:
    fig.suptitle("Roofline", fontsize=12)
    handles: dict[str, object] = {}
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=7,
                   frameon=False)
    return fig


def _panel(machine: str, device: str, name: str, several: bool) -> str:
    label = f"{device} · {name}" if name else device
    return f"{machine}: {label}" if several else label


def _roofs(cell: pd.DataFrame) -> list[tuple[str, str, float, float]]:
    """(kind, dtype, GFLOP/s, GB/s) per roof of this panel: the all-core (largest) figure.
    ``kind``: measured, datasheet or theoretical (from the ``*_source`` columns)."""
    out = []
    for kind, fcol, bcol, scol in (
            ("measured", "peak_gflops", "peak_gbps", "peak_source"),
            ("datasheet", "datasheet_gflops", "datasheet_gbps", "datasheet_source")):
        if fcol not in cell.columns or bcol not in cell.columns:
            continue
        for dtype, g in cell.groupby("dtype", sort=True):
            f, b = g[fcol].max(), g[bcol].max()
            if _pos(f):  # a roof without bandwidth (CPU theoretical) is flat
                label = kind
                if kind == "datasheet" and scol in g.columns:
                    sources = [str(x) for x in g[scol] if str(x)]
                    label = sources[0].split(" ")[0].split(":")[0] if sources else kind
                out.append((label, str(dtype), float(f), float(b) if _pos(b) else math.nan))
    return out


def _pos(x: float) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _draw_roofs(ax: Axes, cell: pd.DataFrame) -> None:
    import numpy as np

    roofs = _roofs(cell)
    if not roofs:
        ax.text(0.02, 0.98, "no peaks known: run `bench-suite peaks`", transform=ax.transAxes,
                fontsize=7, va="top", color="0.4")
        return
    ridges = [f / b for _, _, f, b in roofs if _pos(b)]
    # lists: with no bandwidth roof there are no ridges, and min(x) of one float raises
    lo = min([float(cell["intensity"].min()), *ridges]) / 4
    hi = max([float(cell["intensity"].max()), *ridges]) * 4
    x = np.geomspace(lo, hi, 200)
    dtypes = sorted({d for _, d, _, _ in roofs}, key=lambda d: DTYPES.index(d) if d in DTYPES else 99)
    for kind, dtype, flops, bw in roofs:
        grey = _ROOF_GREYS[dtypes.index(dtype) % len(_ROOF_GREYS)]
        memory = f"{bw:,.0f} GB/s" if _pos(bw) else "no memory roof"
        ax.plot(x, np.minimum(flops, x * bw) if _pos(bw) else np.full_like(x, flops), color=grey,
                linestyle="-" if kind == "measured" else "--", linewidth=1.1,
                label=safe_text(f"{kind} roof · {dtype} ({flops:,.0f} GFLOP/s, {memory})"),
                zorder=2)
