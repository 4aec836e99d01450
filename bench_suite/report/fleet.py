"""Fleets: the same case on many devices of one model, each against the fleet's median.

A *device* is a host and a device on it: ``node7 cuda:3``, or ``node7 cpu#1`` for the share
of a host's cores a rank of a launch had (``device_index`` = its local rank), or ``node7 cpu``
for a whole machine. Devices are compared only with devices of the same model (the
``device_name`` of their measurements) on the same case (op, backend family, dtype, shape,
threads, grad mode): an A100 is never a straggler among H100s.

For each such case, a device's figure is its rate (GFLOP/s, or GB/s for memory-bound ops; the
median over its runs when it has several) divided by the fleet's median of the same case. A
device's standing is the median of those ratios over its cases; more than
:data:`STRAGGLER_BELOW` below 1 flags it as a straggler, by host and index. The silicon lottery
and uneven cooling spread healthy GPUs of one node by a few percent; more than 5% is worth a
look (``bench-suite doctor`` on that device says why).

Tables here, computed from ``results.to_frame``; the figure registers itself with the report's
figure registry (``figures.PLUGINS``); :func:`fleet_section` is the report's section.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench_suite.report import tables
from bench_suite.report.document import Cell, DisplayTable, Section
from bench_suite.report.figures import register, safe_text
from bench_suite.report.format import fmt_pct, fmt_rate, is_missing

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: A device more than this fraction below the fleet median is flagged.
STRAGGLER_BELOW = 0.05
#: The per-case table shows at most this many cases (those with the widest spread).
MAX_CASE_COLUMNS = 8

_CASE_KEY = ["model", "op", "family", "dtype", "size", "threads_label", "grad_mode"]
_DEVICE_KEY = ["host", "device", "device_index"]
_FLEET_COLUMNS = ["model", "case", "op", "family", "dtype", "size", "threads_label", "grad_mode",
                  "device_label", "host", "device", "device_index", "rate", "rate_unit",
                  "fleet_median", "rel", "below", "devices_in_fleet"]


def _family(backend: str) -> str:
    return backend.split(":", 1)[0]


def device_label(host: object, device: object, index: object) -> str:
    host_text = str(host) if isinstance(host, str) and host else "?"
    if device == "cpu":
        dev = "cpu" if is_missing(index) else f"cpu#{int(index)}"  # type: ignore[call-overload]
    else:
        dev = str(device)
    return f"{host_text} {dev}"


@tables.once_per_report
def fleet_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per device per case that at least two devices of one model measured: the
    device's rate, the fleet's median and their ratio ``rel``; ``below`` when ``rel`` is
    more than :data:`STRAGGLER_BELOW` under 1. Empty when no case has two devices."""
    import pandas as pd

    need = {"host", "device_index"}
    if frame.empty or not need <= set(frame.columns):
        return pd.DataFrame(columns=_FLEET_COLUMNS)
    df = frame[(frame["status"] == "ok")].copy()
    if df.empty:
        return pd.DataFrame(columns=_FLEET_COLUMNS)
    rate_col = df["op"].map(tables.primary_rate)
    df["rate"] = [row[c] for c, (_, row) in zip(rate_col, df.iterrows(), strict=True)]
    df["rate_unit"] = rate_col.map(tables.RATE_UNIT)
    df = df[df["rate"].astype("float64") > 0]
    if df.empty:
        return pd.DataFrame(columns=_FLEET_COLUMNS)
    df["model"] = df["device_name"].fillna("").astype(str)
    df["family"] = df["backend"].map(_family)
    df["host"] = df["host"].fillna("").astype(str)
    df["device_label"] = [device_label(h, d, i) for h, d, i in
                          zip(df["host"], df["device"], df["device_index"], strict=True)]
    per_device = (df.groupby([*_CASE_KEY, "device_label"], dropna=False, sort=False)
                  .agg(rate=("rate", "median"), rate_unit=("rate_unit", "first"),
                       host=("host", "first"), device=("device", "first"),
                       device_index=("device_index", "first"))
                  .reset_index())
    counts = per_device.groupby(_CASE_KEY, dropna=False)["device_label"].transform("nunique")
    per_device = per_device[counts >= 2].copy()
    if per_device.empty:
        return pd.DataFrame(columns=_FLEET_COLUMNS)
    grouped = per_device.groupby(_CASE_KEY, dropna=False)["rate"]
    per_device["fleet_median"] = grouped.transform("median")
    per_device["devices_in_fleet"] = grouped.transform("count")
    per_device["rel"] = per_device["rate"] / per_device["fleet_median"]
    per_device["below"] = per_device["rel"] < 1 - STRAGGLER_BELOW
    per_device["case"] = [
        f"{op}/{fam}/{dt}/{size}/threads={t}" + ("/grad" if g == "grad" and not op.endswith("_backward") else "")
        for op, fam, dt, size, t, g in zip(per_device["op"], per_device["family"], per_device["dtype"],
                                          per_device["size"], per_device["threads_label"],
                                          per_device["grad_mode"], strict=True)]
    out = per_device[_FLEET_COLUMNS].copy()
    out["device_index"] = out["device_index"].astype("Int64")
    return out.sort_values(["model", "case", "host", "device", "device_index"],
                           kind="stable").reset_index(drop=True)


def device_summary(fleet: pd.DataFrame) -> pd.DataFrame:
    """One row per device of a fleet: its cases, the median of its ratios to the fleet median
    (its standing), its slowest case, and ``straggler`` when its standing is more than
    :data:`STRAGGLER_BELOW` under the median."""
    import pandas as pd

    cols = ["model", "device_label", "host", "device", "device_index", "cases", "median_rel",
            "min_rel", "slowest_case", "cases_below", "straggler"]
    if fleet.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (model, label), g in fleet.groupby(["model", "device_label"], sort=False):
        worst = g.loc[g["rel"].idxmin()]
        median_rel = float(g["rel"].median())
        rows.append({
            "model": model, "device_label": label, "host": g["host"].iloc[0],
            "device": g["device"].iloc[0], "device_index": g["device_index"].iloc[0],
            "cases": len(g), "median_rel": median_rel, "min_rel": float(worst["rel"]),
            "slowest_case": worst["case"], "cases_below": int(g["below"].sum()),
            "straggler": median_rel < 1 - STRAGGLER_BELOW,
        })
    out = pd.DataFrame(rows, columns=cols)
    out["device_index"] = out["device_index"].astype("Int64")
    return out.sort_values(["model", "host", "device", "device_index"], kind="stable").reset_index(drop=True)


def case_columns(fleet: pd.DataFrame, limit: int = MAX_CASE_COLUMNS) -> list[str]:
    """The cases to show side by side: the ``limit`` with the widest spread across devices."""
    if fleet.empty:
        return []
    spread = fleet.groupby("case", sort=False)["rel"].agg(lambda r: float(r.max() - r.min()))
    return list(spread.sort_values(ascending=False, kind="stable").index[:limit])


def stragglers_text(summary: pd.DataFrame) -> str:
    """"node2 cuda:3 (91%), ..." for the flagged devices; "" when none is."""
    flagged = summary[summary["straggler"]] if not summary.empty else summary
    return ", ".join(f"{r.device_label} ({r.median_rel:.0%})" for r in flagged.itertuples(index=False))


def fleet_section(f: pd.DataFrame, d: pd.DataFrame) -> Section | None:
    """The fleet as a section: each device against the median of its fleet (devices of one
    model, same case); ``f`` is :func:`fleet_table`, ``d`` its :func:`device_summary`. None
    where no case had two devices."""
    if f.empty:
        return None
    flagged = stragglers_text(d)
    models = d["model"].nunique()
    intro = (f"{len(d)} devices{f' of {models} models' if models > 1 else ''}, each against the "
             "median of the devices of its model on the same case. ")
    intro += (f"More than {STRAGGLER_BELOW:.0%} below the fleet median: {flagged}."
              if flagged else f"No device is more than {STRAGGLER_BELOW:.0%} below the fleet median.")
    rows = tuple(
        (Cell(str(r.host), left=True), Cell(str(r.device) + ("" if is_missing(r.device_index) or r.device != "cpu"
                                                              else f"#{int(r.device_index)}"), left=True),
         Cell(str(r.model), left=True), Cell(str(r.cases)), Cell(fmt_pct(r.median_rel)),
         Cell(f"{r.slowest_case} ({fmt_pct(r.min_rel)})", left=True),
         Cell(f"straggler: {fmt_pct(1 - r.median_rel)} below" if r.straggler else "", left=True,
              noisy=bool(r.straggler)))
        for r in d.itertuples(index=False)
    )
    devices = DisplayTable(
        "Devices", ("host", "device", "model", "cases", "median % of fleet", "slowest case", "flag"),
        rows, f"Median % of fleet: the median over the device's cases of its rate / the fleet's "
        f"median rate on that case. Flagged: more than {STRAGGLER_BELOW:.0%} below.", 3)
    shown = case_columns(f)
    by_cell = {(r.device_label, r.case): r for r in f.itertuples(index=False)}
    case_rows = []
    for r in d.itertuples(index=False):
        cells = []
        for case in shown:
            c = by_cell.get((r.device_label, case))
            cells.append(Cell("-") if c is None else Cell(
                f"{fmt_rate(c.rate, c.rate_unit)} · {fmt_pct(c.rel)}", bool(c.below),
                f"fleet median {fmt_rate(c.fleet_median, c.rate_unit)} over {c.devices_in_fleet} devices"))
        case_rows.append((Cell(str(r.device_label), left=True), *cells))
    more = f.groupby("case").ngroups - len(shown)
    per_case = DisplayTable(
        "Per case", ("device", *shown), tuple(case_rows),
        "Rate · % of the fleet median, per case" + (f" (the {len(shown)} cases with the widest "
                                                   f"spread; {more} more in results.csv)" if more > 0 else "")
        + ". Highlighted: more than 5% below.", 1)
    return Section("fleet", "Fleet", intro=intro, tables=(devices, per_case), priority=2)


@register(
    "fleet",
    "Each device against the fleet median",
    "Per device (host and index), its rate on each case as a percentage of the median of the "
    "devices of the same model on the same case (dots), and the median of those (bar). The "
    "dashed line is 5% below the median: a bar under it is a straggler (red).",
)
def fleet_figure(frame: pd.DataFrame) -> Figure | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fleet = fleet_table(frame)
    if fleet.empty:
        return None
    summary = device_summary(fleet)
    models = list(dict.fromkeys(summary["model"]))
    widest = max(int((summary["model"] == m).sum()) for m in models)
    fig = Figure(figsize=(min(max(5.5, 2.0 + 0.55 * widest), 18), 3.2 * len(models) + 0.8),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(models), 1, squeeze=False)
    ops = list(dict.fromkeys(fleet["op"]))
    colours = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#999933")
    for ax, model in zip((a[0] for a in axes), models, strict=True):
        s = summary[summary["model"] == model].reset_index(drop=True)
        f = fleet[fleet["model"] == model]
        xs = {label: i for i, label in enumerate(s["device_label"])}
        ax.bar(range(len(s)), [100 * v for v in s["median_rel"]], width=0.6, alpha=0.35,
               color=["#D55E00" if flag else "#7f7f7f" for flag in s["straggler"]])
        for k, op in enumerate(ops):
            g = f[f["op"] == op]
            if g.empty:
                continue
            n = max(len(ops), 1)
            offset = (k - (n - 1) / 2) * 0.5 / n
            ax.scatter([xs[d] + offset for d in g["device_label"]], [100 * v for v in g["rel"]],
                       s=14, color=colours[k % len(colours)], label=safe_text(op), zorder=3)
        ax.axhline(100, color="0.2", linewidth=0.8)
        ax.axhline(100 * (1 - STRAGGLER_BELOW), color="#D55E00", linewidth=0.8, linestyle="--")
        lows = [100 * v for v in f["rel"] if math.isfinite(v)]
        ax.set_ylim(min(90.0, min(lows) - 2), max(105.0, max(lows) + 2))
        ax.set_xticks(range(len(s)))
        ax.set_xticklabels([safe_text(x, 30) for x in s["device_label"]], rotation=30 if len(s) > 4 else 0,
                           ha="right" if len(s) > 4 else "center", fontsize=8)
        ax.set_ylabel("% of fleet median", fontsize=8)
        ax.set_title(safe_text(model or "unknown device", 60), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("Each device against the fleet median", fontsize=12)
    return fig
