"""Figures (matplotlib, Agg), each a function ``(frame) -> Figure | None`` in a registry.

A figure function takes the tidy frame of ``results.to_frame`` (possibly with the roofline
columns of ``bench_suite.analysis.roofline``), computes what it needs through ``tables`` and returns a
``matplotlib.figure.Figure``, or ``None`` when the frame has nothing for it to show (no
backward ops, a single thread count...). ``render.py`` saves every figure of the registry.

Adding a figure from another module::

    from bench_suite.report.figures import register

    @register("roofline", "Roofline", "Achieved GFLOP/s against arithmetic intensity ...")
    def roofline(frame): ...

Modules named in ``PLUGINS`` are imported (when they exist) the first time the registry is
read, so ``bench_suite/report/roofline_plot.py`` registers itself just by existing.

Style, the same in every figure: one fixed colour per backend (``backend_colour``), one marker
per series (machine or run), the line style for a third dimension the figure names in its
legend; log axes where values span a wide range; units on every axis.

matplotlib is imported inside the functions, never at module import, and only through
``Figure`` and the Agg canvas: no pyplot, no global state, no GUI backend.
"""

from __future__ import annotations

import importlib
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench_suite.core.cases import DTYPES, OPS
from bench_suite.report import tables

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FigureFn = Callable[["pd.DataFrame"], "Figure | None"]


@dataclass(frozen=True)
class FigureSpec:
    name: str  # file stem under figures/: letters, digits, '-' and '_' only
    title: str
    caption: str
    make: FigureFn


_REGISTRY: list[FigureSpec] = []
#: Modules that register figures of their own when imported (optional: absent is fine).
PLUGINS: tuple[str, ...] = ("bench_suite.report.roofline_plot", "bench_suite.report.fleet")
_plugins_loaded = False


def register(name: str, title: str, caption: str = "") -> Callable[[FigureFn], FigureFn]:
    """Decorator: add a figure function to the registry (a later one replaces the same name)."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"figure name {name!r}: use letters, digits, '-' and '_'")

    def deco(fn: FigureFn) -> FigureFn:
        spec = FigureSpec(name, title, caption, fn)
        for i, old in enumerate(_REGISTRY):
            if old.name == name:
                _REGISTRY[i] = spec
                break
        else:
            _REGISTRY.append(spec)
        return fn

    return deco


def load_plugins() -> None:
    """Import the modules of ``PLUGINS`` that exist, once: they register their figures."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in PLUGINS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the plugin exists but something it needs does not
                raise


def registered() -> list[FigureSpec]:
    """Every registered figure, in order, plugins included."""
    load_plugins()
    return list(_REGISTRY)


@dataclass(frozen=True)
class RenderedFigure:
    spec: FigureSpec
    png: bytes
    width_px: int
    height_px: int


def render_figures(frame: pd.DataFrame, specs: Iterable[FigureSpec] | None = None,
                   dpi: int = 100) -> list[RenderedFigure]:
    """Draw every figure that has something to show and return it as PNG bytes."""
    import io

    out = []
    for spec in registered() if specs is None else specs:
        fig = spec.make(frame)
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        w, h = fig.get_size_inches() * dpi
        out.append(RenderedFigure(spec, buf.getvalue(), round(w), round(h)))
    return out


# --- style ----------------------------------------------------------------------------------

#: Okabe-Ito colours (readable by colour-blind readers), fixed per backend in every figure.
BACKEND_COLOURS: dict[str, str] = {
    "numpy": "#0072B2",
    "torch-cpu": "#E69F00",
    "torch-cuda": "#009E73",
    "torch-cuda:1": "#CC79A7",
}
_SPARE_COLOURS = ("#D55E00", "#56B4E9", "#882255", "#44AA99", "#999933", "#332288")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
THREAD_STYLES = {"all": "-", "1": "--"}


def backend_colour(backend: str) -> str:
    """The backend's colour: fixed for known ones, a stable pick (not ``hash``) for others."""
    if backend in BACKEND_COLOURS:
        return BACKEND_COLOURS[backend]
    return _SPARE_COLOURS[zlib.crc32(backend.encode()) % len(_SPARE_COLOURS)]


def threads_style(label: str) -> str:
    return THREAD_STYLES.get(label, ":")


#: Longest label part taken from a run file (a machine name): legends must fit the figure.
MAX_LABEL = 40


def safe_text(text: object, limit: int = 0) -> str:
    """Text from run files made inert for matplotlib: ``$`` would start mathtext (and a
    malformed formula raises while saving), and a leading ``_`` hides a legend entry.
    ``limit``: cut to that many characters (with an ellipsis)."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text))
    if limit and len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def _markers(frame: pd.DataFrame) -> dict[str, str]:
    series = sorted(dict.fromkeys(tables.prepare(frame)["series"]))
    return {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(series)}


def _ordered(values: Iterable[str], known: tuple[str, ...]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return sorted(vals, key=lambda v: (known.index(v) if v in known else len(known), v))


def _panels(df: pd.DataFrame, row_col: str = "op") -> tuple[Figure, list[tuple[str, str, Axes]]]:
    """One panel per (op, dtype) present: rows of ops and columns of dtypes, or, with a single
    dtype, the ops wrapped two to a row (a long single column is hard to read)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ops = _ordered(df[row_col], OPS)
    dtypes = _ordered(df["dtype"], DTYPES)
    present = set(zip(df[row_col], df["dtype"], strict=True))
    if len(dtypes) == 1:
        keys = [(op, dtypes[0]) for op in ops]
        ncols = min(2, len(keys))
        grid = [keys[i:i + ncols] for i in range(0, len(keys), ncols)]
    else:
        ncols = len(dtypes)
        grid = [[(op, dt) for dt in dtypes] for op in ops]
    fig = Figure(figsize=(4.6 * ncols + 0.4, 3.3 * len(grid) + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(grid), ncols, squeeze=False)
    out = []
    for i, row in enumerate(grid):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row) or row[j] not in present:
                ax.set_axis_off()  # an empty slot, or an op not measured in this dtype
                continue
            out.append((row[j][0], row[j][1], ax))
    return fig, out


def _log_if_wide(ax: Axes, axis: str, values: Iterable[float], base: float = 10,
                 ratio: float = 20) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    vals = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if vals and max(vals) / min(vals) >= ratio:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=base)
        # plain numbers (8, 100) rather than powers (2^3, 10^2): read at a glance; label the
        # minor ticks too when the values span less than two decades (few major ticks)
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(FuncFormatter(_plain))
        few = max(vals) / min(vals) < 100
        target.set_minor_formatter(FuncFormatter(_minor) if few and base == 10 else NullFormatter())


def _plain(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _minor(value: float, _pos: object = None) -> str:
    """Minor ticks of a log10 axis: label 2, 3 and 5 of each decade, not every one."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2, 3, 5) else ""


def _size_axis(ax: Axes, dims: Iterable[float]) -> None:
    """x axis of sizes: log base 2 when they span 4x or more, ticks at the sizes measured."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ds = sorted({d for d in dims if math.isfinite(d) and d > 0})
    if not ds:
        return
    if ds[-1] / ds[0] >= 4:
        ax.set_xscale("log", base=2)
    if len(ds) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(ds))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{d:g}" if d < 1e5 else f"{d:.3g}" for d in ds])
    ax.set_xlabel("matrix size n (n×n; non-square: geometric mean of dims)", fontsize=8)


def _finish(fig: Figure, title: str, panels: list[tuple[str, str, Axes]]) -> Figure:
    fig.suptitle(title, fontsize=12)
    handles: dict[str, Any] = {}
    for _, _, ax in panels:
        ax.grid(True, which="major", alpha=0.3)
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        # one legend for the figure, below the panels: the same entries apply to every panel
        longest = max(len(label) for label in handles)
        ncols = max(1, min(3, len(handles), 150 // (longest + 10)))  # ~150 characters a line
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=ncols, fontsize=8, frameon=False)
    return fig


def _label(*parts: object) -> str:
    return " · ".join(safe_text(p, MAX_LABEL) for p in parts if p not in (None, ""))


def _several(df: pd.DataFrame) -> bool:
    return df["series"].nunique() > 1


# --- the figures ----------------------------------------------------------------------------


@register(
    "throughput",
    "Throughput against size",
    "Achieved rate per backend (GFLOP/s for matmul, GB/s for the Hadamard product): solid at "
    "every core, dashed on one thread. Horizontal lines are the device's known peaks: dotted "
    "measured (bench-suite peaks), dash-dotted datasheet (GPU) or theoretical (CPU); for the "
    "copies (h2d, d2h), dashed, the host-device link's.",
)
def throughput_figure(frame: pd.DataFrame) -> Figure | None:
    df = tables.time_table(frame)
    df = df[df["grad_mode"] == df["op"].map(tables.plain_mode)]
    if df.empty:
        return None
    markers = _markers(frame)
    several = _several(df)
    fig, panels = _panels(df)
    for op, dtype, ax in panels:
        cell = df[(df["op"] == op) & (df["dtype"] == dtype)]
        unit = tables.RATE_UNIT[tables.primary_rate(op)]
        ax.set_title(safe_text(f"{op} · {dtype}"), fontsize=10)
        ax.set_ylabel(f"throughput ({unit})", fontsize=8)
        for (series, backend, threads), g in cell.groupby(
                ["series", "backend", "threads_label"], sort=False):
            g = g.sort_values("dim")
            ax.plot(g["dim"], g["rate"], color=backend_colour(backend),
                    linestyle=threads_style(threads), marker=markers[series], markersize=4,
                    label=_label(series if several else "", backend, f"threads={threads}"))
        _draw_peaks(ax, cell, op, several)
        _size_axis(ax, cell["dim"])
        _log_if_wide(ax, "y", cell["rate"], ratio=20)
    return _finish(fig, "Throughput against size (higher is better)", panels)


#: Ceilings drawn in the throughput figure: (column prefix, line style, label).
_CEILINGS = (("peak", ":", "peak"), ("datasheet", "-.", "spec peak"),
             ("link", "--", "link peak"))  # the host-device link: copies only


def _draw_peaks(ax: Axes, cell: pd.DataFrame, op: str, several: bool) -> None:
    """The device's known peaks (``bench_suite.analysis.roofline`` columns) as horizontal ceilings:
    measured dotted, datasheet/theoretical dash-dotted; one per device and thread setting, in
    the GPU backend's colour or dark grey for the CPU (its backends share one ceiling)."""
    unit = "gflops" if tables.primary_rate(op) == "gflops" else "gbps"
    for prefix, style, name in _CEILINGS:
        col = f"{prefix}_{unit}"
        if col not in cell.columns or "device" not in cell.columns:
            continue
        peaks = cell[["series", "device", "backend", "threads_label", col]].dropna(subset=[col])
        peaks = peaks.drop_duplicates(subset=["series", "device", "threads_label", col])
        for r in peaks.itertuples(index=False):
            value = float(getattr(r, col))
            if math.isfinite(value) and value > 0:
                cpu = r.device == "cpu"
                ax.axhline(value, color="0.25" if cpu else backend_colour(r.backend),
                           linestyle=style, linewidth=1.2,
                           label=_label(series_label(r.series, several), f"{r.device} {name}",
                                        f"threads={r.threads_label}"))


def series_label(series: str, several: bool) -> str:
    return series if several else ""


@register(
    "speedup",
    "Speedup over numpy against size",
    "Time of the baseline over time of the backend, at every core and equal dtype and size: "
    "solid over numpy, dashed for a GPU over torch-cpu. Above 1 the backend is faster; bars "
    "span the two medians' confidence intervals.",
)
def speedup_figure(frame: pd.DataFrame) -> Figure | None:
    sp = tables.speedup_table(frame)
    sp = sp[sp["grad_mode"] == sp["op"].map(tables.plain_mode)]
    sp = sp[sp["threads_label"] == "all"] if (sp["threads_label"] == "all").any() else sp
    if sp.empty:
        return None
    markers = _markers(frame)
    several = _several(sp)
    fig, panels = _panels(sp)
    for op, dtype, ax in panels:
        cell = sp[(sp["op"] == op) & (sp["dtype"] == dtype)]
        ax.set_title(safe_text(f"{op} · {dtype}"), fontsize=10)
        ax.set_ylabel("speedup (×)", fontsize=8)
        ax.axhline(1.0, color="0.4", linewidth=0.8)
        for (series, cand, base, threads), g in cell.groupby(
                ["series", "candidate", "baseline", "threads_label"], sort=False):
            g = g.sort_values("dim")
            err = [(g["speedup"] - g["speedup_low"]).clip(lower=0),
                   (g["speedup_high"] - g["speedup"]).clip(lower=0)]
            ax.errorbar(g["dim"], g["speedup"], yerr=err, color=backend_colour(cand),
                        linestyle="-" if base == tables.BASELINE else "--",
                        marker=markers[series], markersize=4, capsize=2,
                        label=_label(series_label(series, several), f"{cand} / {base}",
                                     f"threads={threads}"))
        _size_axis(ax, cell["dim"])
        _log_if_wide(ax, "y", [*cell["speedup_low"], *cell["speedup_high"], 1.0], base=2,
                     ratio=8)
    return _finish(fig, "Speedup over the baseline at every core (above 1: faster)", panels)


@register(
    "thread_scaling",
    "CPU thread scaling against the ideal line",
    "Speedup over one thread on the same backend, against the thread count. The dashed black "
    "line is ideal (linear) scaling; the distance below it is lost parallel efficiency. "
    "Largest size solid, smallest dotted.",
)
def scaling_figure(frame: pd.DataFrame) -> Figure | None:
    sc = tables.thread_scaling(frame)
    sc = sc[sc["grad_mode"] == sc["op"].map(tables.plain_mode)]
    if sc.empty:
        return None
    markers = _markers(frame)
    several = _several(sc)
    fig, panels = _panels(sc)
    for op, dtype, ax in panels:
        cell = sc[(sc["op"] == op) & (sc["dtype"] == dtype)]
        ax.set_title(safe_text(f"{op} · {dtype}"), fontsize=10)
        dims = sorted(set(cell["dim"]))
        shown = {dims[-1]: "-", dims[0]: ":"}  # largest solid, smallest dotted
        for (series, backend, dim), g in cell.groupby(["series", "backend", "dim"], sort=False):
            if dim not in shown:
                continue
            g = g.sort_values("threads")
            ax.plot(g["threads"].astype(float), g["speedup"], color=backend_colour(backend),
                    linestyle=shown[dim], marker=markers[series], markersize=4,
                    label=_label(series_label(series, several), backend, g["size"].iloc[0]))
        top = float(cell["threads"].max())
        ax.plot([1, top], [1, top], color="black", linestyle="--", linewidth=0.9,
                label="ideal (linear)")
        if top >= 8:
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ticks = sorted({int(t) for t in cell["threads"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("threads", fontsize=8)
        ax.set_ylabel("speedup over 1 thread (×)", fontsize=8)
    return _finish(fig, "CPU thread scaling", panels)


@register(
    "backward_forward",
    "Backward time over forward time",
    "Time of the backward pass over the plain forward, per backend and size: solid at every "
    "core, dashed on one thread. The grey dashed line is the ratio of the work (FLOPs for "
    "matmul, bytes for the Hadamard product).",
)
def backward_forward_figure(frame: pd.DataFrame) -> Figure | None:
    bf = tables.backward_forward(frame)
    if bf.empty:
        return None
    markers = _markers(frame)
    several = _several(bf)
    fig, panels = _panels(bf)
    for op, dtype, ax in panels:
        cell = bf[(bf["op"] == op) & (bf["dtype"] == dtype)]
        ax.set_title(safe_text(f"{op} / {tables.forward_op(op)} · {dtype}"), fontsize=10)
        ax.set_ylabel("backward / forward time (×)", fontsize=8)
        for theory in sorted(set(cell["theory"].round(6))):
            ax.axhline(theory, color="0.5", linestyle="--", linewidth=1,
                       label=f"work ratio ({theory:.3g})")
        for (series, backend, threads), g in cell.groupby(
                ["series", "backend", "threads_label"], sort=False):
            g = g.sort_values("dim")
            ax.plot(g["dim"], g["ratio"], color=backend_colour(backend),
                    linestyle=threads_style(threads), marker=markers[series], markersize=4,
                    label=_label(series_label(series, several), backend, f"threads={threads}"))
        _size_axis(ax, cell["dim"])
        _log_if_wide(ax, "y", cell["ratio"], base=2, ratio=8)
        ax.set_ylim(bottom=0) if ax.get_yscale() == "linear" else None
    return _finish(fig, "Backward over forward (lower is cheaper)", panels)


def _panel_op(op: str, variant: str) -> str:
    """An op with its variant when that is not the op's default: ``linear (gelu)``."""
    default = tables.default_variant(op)
    return op if not variant or variant == default else f"{op} ({variant})"


#: Line style of each way of doing the work in the break-even figure.
_WAY_STYLES = {("gpu", ""): "--", ("round_trip", "pageable"): "-", ("round_trip", "pinned"): ":"}


@register(
    "break_even",
    "When the GPU pays off, transfers included",
    "Time per call against size for matmul and the linear layer, three ways: numpy on the host "
    "at every core; the GPU's compute alone (dashed); and the round trip, from measured rows: "
    "the operands copied to the GPU (matmul: A and B; the layer: its input, its weights living "
    "on the GPU), the compute, the result copied back (solid: pageable host memory, dotted: "
    "pinned). A vertical line marks the size from which the round trip beats the host. A side "
    "that was not measured is left out (the break-even section says which), never estimated.",
)
def break_even_figure(frame: pd.DataFrame) -> Figure | None:
    be = tables.break_even(frame)
    if be.empty or not (be["way"] != "host").any():
        return None
    be = be.assign(panel=[_panel_op(o, v) for o, v in zip(be["op"], be["variant"], strict=True)])
    points = tables.break_even_points(frame)
    several = be["series"].nunique() > 1
    markers = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(sorted(set(be["series"])))}
    fig, panels = _panels(be, row_col="panel")
    for panel, dtype, ax in panels:
        cell = be[(be["panel"] == panel) & (be["dtype"] == dtype)]
        ax.set_title(safe_text(f"{panel} · {dtype}"), fontsize=10)
        ax.set_ylabel("time per call (s)", fontsize=8)
        for (series, backend, way, memory), g in cell.groupby(
                ["series", "backend", "way", "memory"], sort=False):
            g = g.sort_values("n")
            what = {"host": f"{backend} on the host", "gpu": f"{backend} compute alone",
                    "round_trip": f"{backend} with copies ({memory})"}[way]
            ax.plot(g["n"], g["time_s"], color=backend_colour(backend),
                    linestyle=_WAY_STYLES.get((way, memory), "-"), marker=markers[series],
                    markersize=4, linewidth=1.8 if way == "round_trip" else 1.2,
                    label=_label(series_label(series, several), what))
        op, variant = cell["op"].iloc[0], cell["variant"].iloc[0]
        mine = points[(points["op"] == op) & (points["variant"] == variant)
                      & (points["dtype"] == dtype) & points["n_break"].notna()]
        for r in mine.itertuples(index=False):
            ax.axvline(int(r.n_break), color=backend_colour(r.backend),
                       linestyle=_WAY_STYLES.get(("round_trip", r.memory), "-"), linewidth=0.8,
                       alpha=0.7, label=_label(series_label(r.series, several),
                                               f"break-even ({r.memory}): n={int(r.n_break)}"))
            ax.annotate(f"n={int(r.n_break)}", (int(r.n_break), 1.0),
                        xycoords=("data", "axes fraction"), xytext=(3, -10),
                        textcoords="offset points", fontsize=7, color=backend_colour(r.backend))
        _size_axis(ax, cell["n"].astype(float))
        _log_if_wide(ax, "y", cell["time_s"], ratio=20)
    return _finish(fig, "When the GPU pays off: time per call, copies included (lower is better)",
                   panels)


_PHASE_COLOURS = {"forward": "#56B4E9", "backward": "#D55E00", "update": "#CC79A7"}


@register(
    "mlp_breakdown",
    "Where a training step's time goes",
    "One training step of the 3-layer MLP per backend and size: its forward (with the loss), "
    "backward and SGD update, each timed on its own, as shares of their sum; the label gives "
    "the whole step's median. The black tick is the whole step (timed as one call) on the same "
    "scale: left of 100%, the parts cost more run apart (caches, Python between them); right "
    "of it, the step has overhead the parts do not.",
)
def mlp_breakdown_figure(frame: pd.DataFrame) -> Figure | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bd = tables.mlp_breakdown(frame)
    if bd.empty:
        return None
    several = bd["series"].nunique() > 1
    dtypes = _ordered(bd["dtype"], DTYPES)
    rows = max(len(bd[bd["dtype"] == d]) for d in dtypes)
    fig = Figure(figsize=(8.5, 1.2 + 0.42 * rows * len(dtypes) + 0.6 * len(dtypes)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(dtypes), 1, squeeze=False)
    panels = []
    from matplotlib.ticker import PercentFormatter

    from bench_suite.report.format import fmt_time

    for dtype, (ax,) in zip(dtypes, axes, strict=True):
        cell = bd[bd["dtype"] == dtype].reset_index(drop=True)
        labels = [_label(series_label(r.series, several), r.backend, r.size,
                         f"threads={r.threads_label}", f"step {fmt_time(r.step_s)}")
                  for r in cell.itertuples(index=False)]
        y = list(range(len(cell)))[::-1]
        left = [0.0] * len(cell)
        for phase in tables.STEP_PHASES:
            widths = [0.0 if v != v else float(v) for v in cell[f"{phase}_share"]]
            ax.barh(y, widths, left=left, color=_PHASE_COLOURS[phase], height=0.6, label=phase)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        whole = [1.0 / v if v == v and v > 0 else float("nan") for v in cell["phases_over_step"]]
        ax.scatter(whole, y, marker="|", s=300, color="black", linewidths=2,
                   label="whole step", zorder=3)
        ax.set_yticks(y, labels, fontsize=8)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("share of the three parts' time", fontsize=8)
        ax.set_title(safe_text(f"mlp_step · {dtype}"), fontsize=10)
        panels.append(("mlp_step", dtype, ax))
    return _finish(fig, "Training step: forward, backward and update", panels)
