"""Reports on disk: ``index.html``, ``summary.md``, ``results.csv`` and ``figures/*.png``.

Three steps, each a function of the one before:

1. :func:`build_report` computes: the frame, every table (``tables.py``) and every figure
   (``figures.py``, as PNG bytes). Nothing is formatted yet.
2. :func:`sections` formats the numbers into display tables of plain strings
   (``document.py``'s section model), and :func:`document` puts them under the report's head;
   the page and the summary render the same document, so they say the same thing.
3. ``renderer.py`` only lays the document out, escaping every string for its format: text
   from run files (machine names, GPU names, reasons) is data, never markup.

The HTML page is self-contained (inline CSS, figures as base64 ``data:`` URIs, no script,
nothing fetched from the network). The Markdown summary fits a GitHub Actions job summary and
a pull-request comment (GitHub caps a comment at 65,536 characters; the summary drops its least
important sections to stay under :data:`MARKDOWN_LIMIT`).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_suite.core.errors import OutputError
from bench_suite.report import fleet, renderer, tables
from bench_suite.report.document import Cell, Code, DisplayTable, Document, Figure, Section, para
from bench_suite.report.escape import csv_frame
from bench_suite.report.format import fmt_pct, fmt_rate, fmt_ratio, fmt_time, is_missing
from bench_suite.store.env_record import EnvRecord
from bench_suite.store.results import Run, atomic_write_text, to_frame

if TYPE_CHECKING:
    import pandas as pd

    from bench_suite.report.figures import RenderedFigure

MARKDOWN_LIMIT = 60_000
NOISY_MARK = "†"
NOISY_NOTE = (f"{NOISY_MARK} noisy: the interquartile range exceeds 10% of the median or the "
              "median's 95% confidence half-width exceeds 5% (both between rounds, where a case "
              "has several); trust it less.")
BUSY_MARK = "‡"
BUSY_NOTE = (f"{BUSY_MARK} contended or bimodal: timed while other processes held cores the case "
             "needed, or its rounds fall into two groups far apart; no comparison judges it.")


# --- 1. compute -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What the report says about one run, read defensively from its (untrusted) file."""

    series: str
    machine: str
    run_id: str
    created_at: str
    source: str
    complete: bool
    path: str
    command: str
    cpu: str
    cores: str
    memory: str
    gpus: str
    os: str
    python: str
    packages: str
    blas: str
    env_vars: str
    counts: Mapping[str, int]


@dataclass(frozen=True)
class Report:
    frame: pd.DataFrame
    runs: tuple[RunInfo, ...]
    tables: Mapping[str, pd.DataFrame]
    figures: tuple[RenderedFigure, ...]
    command: str = ""
    generated_at: str = ""


FrameHook = Callable[["pd.DataFrame", Sequence[Run]], "pd.DataFrame"]
#: Functions that add columns to the frame before anything is computed from it, such as the
#: roofline's ``peak_gflops`` and ``pct_of_peak``. A plugin module (``figures.PLUGINS``) adds
#: its hook with :func:`add_frame_hook` when it is imported.
FRAME_HOOKS: list[FrameHook] = []


def add_frame_hook(hook: FrameHook) -> FrameHook:
    if hook not in FRAME_HOOKS:
        FRAME_HOOKS.append(hook)
    return hook


def build_report(runs: Sequence[Run], command: str | None = None, with_figures: bool = True,
                 frame: pd.DataFrame | None = None) -> Report:
    """Every number and figure of the report, computed once. ``frame`` defaults to
    ``to_frame(runs)`` passed through :data:`FRAME_HOOKS`; a given frame is used as it is."""
    if frame is None:
        from bench_suite.report import figures

        figures.load_plugins()  # they may add frame hooks
        frame = to_frame(runs)
        for hook in FRAME_HOOKS:
            frame = hook(frame, runs)
    with tables.prepared_once(frame) as prepared:
        series_of = dict(zip(prepared["run_id"], prepared["series"], strict=False))
        computed = {
            "time": tables.time_table(frame),
            "speedup": tables.speedup_table(frame),
            "scaling": tables.thread_scaling(frame),
            "backward_forward": tables.backward_forward(frame),
            "autograd_vs_hand": tables.autograd_vs_hand(frame),
            "grad_cost": tables.grad_cost(frame),
            "noisy": tables.noisy_cells(frame),
            "untrusted": tables.untrusted_cells(frame),
            "noise": _noise_table(runs),
            "launch_bound": tables.launch_bound_cells(frame),
            "problems": tables.problem_groups(frame),
            "headline": tables.headline(frame),
            "peaks": tables.peaks(frame),
            "fleet": fleet.fleet_table(frame),
            "break_even": tables.break_even_points(frame),
            "break_even_notes": _notes_frame(tables.break_even_notes(frame)),
            "mlp_breakdown": tables.mlp_breakdown(frame),
            "create_where": tables.create_where(frame),
        }
        computed["fleet_devices"] = fleet.device_summary(computed["fleet"])
        rendered: tuple[RenderedFigure, ...] = ()
        if with_figures and len(frame):
            from bench_suite.report import figures

            rendered = tuple(figures.render_figures(frame))
    infos = tuple(_run_info(r, series_of.get(r.run_id, r.machine)) for r in runs)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Report(frame, infos, computed, rendered, command or "", now)


def _noise_table(runs: Sequence[Run]) -> pd.DataFrame:
    """Each case's smallest detectable change on its machine, from the noise profiles
    (``bench-suite calibrate``) found beside the run files; empty where there are none."""
    import pandas as pd

    from bench_suite.analysis.noise import summarize_profile
    from bench_suite.store.noise import profiles_for_runs

    rows = []
    for machine, profile in profiles_for_runs(runs).items():
        rows += [{"machine": machine, **r} for r in summarize_profile(profile, 5, 8)]
    return pd.DataFrame(rows)


def _notes_frame(notes: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"note": notes}, dtype=object)


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value)


def _run_info(run: Run, series: str) -> RunInfo:
    env = EnvRecord.of(run.env)
    argv = run.config.get("argv")
    command = ""
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        command = "bench-suite " + shlex.join(argv)
    mem = env.memory.total_bytes
    pkgs = ", ".join(f"{k} {v}" for k, v in env.packages.items() if v is not None)
    blas_text = "; ".join(
        " ".join(_text(x) for x in (b.internal_api, b.version, b.architecture)).strip()
        + f" ({_text(b.num_threads)} threads)"
        for b in env.blas
    )
    counts = {s: sum(m.status == s for m in run.measurements) for s in ("ok", "skipped", "failed")}
    return RunInfo(
        series=series,
        machine=run.machine,
        run_id=run.run_id,
        created_at=run.created_at,
        source=run.source,
        complete=run.complete,
        path=run.path,
        command=command,
        cpu=_text(env.cpu.model),
        cores=_text(env.cpu.usable_cores),
        memory=f"{mem / 2**30:.1f} GiB" if mem is not None and mem > 0 else "",
        gpus=", ".join(g.name for g in env.gpus if g.name),
        os=_text(env.os.platform),
        python=_text(env.python.version),
        packages=pkgs,
        blas=blas_text,
        env_vars=", ".join(f"{k}={v}" for k, v in env.env_vars.items()),
        counts=counts,
    )


# --- 2. format ------------------------------------------------------------------------------


def _ratio_cell(value: float, noisy: bool = False, title: str = "") -> Cell:
    if value is None or not math.isfinite(value):
        return Cell("-")
    return Cell(fmt_ratio(value) + (f" {NOISY_MARK}" if noisy else ""), noisy, title)


def _pivot(df: pd.DataFrame, keys: Sequence[tuple[str, str]], col: str, order: Sequence[str],
           cell: Callable[[Any], Cell], title: str, caption: str = "",
           col_header: Callable[[str], str] = str) -> DisplayTable | None:
    """Long table -> display table: one row per distinct ``keys``, one column per ``col`` value."""
    if df.empty:
        return None
    key_cols = [k for k, _ in keys]
    rows = []
    grouped = df.groupby(key_cols, sort=False, dropna=False)
    for key, g in grouped:
        key = key if isinstance(key, tuple) else (key,)
        by_col = {getattr(r, col): r for r in g.itertuples(index=False)}
        rows.append((
            *(Cell(_key_text(k), left=True) for k in key),
            *(cell(by_col[c]) if c in by_col else Cell("-") for c in order),
        ))
    header = (*(h for _, h in keys), *(col_header(c) for c in order))
    return DisplayTable(title, header, tuple(rows), caption, len(keys))


def _key_text(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _series_key(df: pd.DataFrame) -> list[tuple[str, str]]:
    return [("series", "machine")] if df["series"].nunique() > 1 else []


def _present(values: Any, known: Sequence[str]) -> list[str]:
    vals = list(dict.fromkeys(values))
    return sorted(vals, key=lambda v: (list(known).index(v) if v in known else len(known), v))


def _time_cell(r: Any) -> Cell:
    op = r.op
    parts = [fmt_time(r.median_s)]
    if tables.is_backward_op(op):  # both rates for the backward passes
        parts += [fmt_rate(r.gflops, "GFLOP/s"), fmt_rate(r.gbps, "GB/s")]
    else:
        parts.append(fmt_rate(r.rate, r.rate_unit))
    parts.extend(_pct_of_peak(r))
    busy = bool(getattr(r, "contended", False) or getattr(r, "bimodal", False))
    text = " · ".join(parts) + (f" {NOISY_MARK}" if r.noisy else "") + (f" {BUSY_MARK}" if busy else "")
    return Cell(text, bool(r.noisy) or busy, f"±{r.rel_ci:.1%} (95% CI of the median)")


def _pct_of_peak(r: Any) -> list[str]:
    """"42% of peak" against the measured peak, else against the datasheet (GPU) or
    theoretical (CPU) one; nothing when no peak is known. The columns are in percent."""
    pct = getattr(r, "pct_of_peak", None)
    if isinstance(pct, float) and math.isfinite(pct):
        return [f"{pct:.0f}% of peak"]
    pct = getattr(r, "pct_of_datasheet", None)
    if isinstance(pct, float) and math.isfinite(pct):
        source = str(getattr(r, "datasheet_source", "") or "")
        return [f"{pct:.0f}% of {'theoretical' if source.startswith('theoretical') else 'datasheet'}"]
    pct = getattr(r, "pct_of_link", None)  # copies: against the host-device link
    if isinstance(pct, float) and math.isfinite(pct):
        return [f"{pct:.0f}% of {getattr(r, 'link_source', '') or 'link'}"]
    return []


def _op_axes(op: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The key columns an op's tables need beyond dtype, size and threads: its grad mode
    where it has both, and its variant (activation, host memory, where created) if any."""
    from bench_suite.core.cases import OP_INFO, fixed_grad_mode, variant_axis

    if op not in OP_INFO:  # an op from another version of the suite
        return ([] if tables.is_backward_op(op) else [("grad_mode", "grad mode")]), []
    grad = [("grad_mode", "grad mode")] if fixed_grad_mode(op) is None else []
    axis = variant_axis(op)
    return grad, ([("variant", axis.title)] if axis is not None else [])


def _op_sections(rep: Report) -> list[Section]:
    from bench_suite.core.cases import BACKENDS, OPS

    out = []
    tt, sp, sc = rep.tables["time"], rep.tables["speedup"], rep.tables["scaling"]
    for op in _present(tt["op"], OPS):
        t = tt[tt["op"] == op]
        grad, variant = _op_axes(op)
        keys = [*_series_key(t), ("dtype", "dtype"), ("size", "size"),
                ("threads_label", "threads"), *grad, *variant]
        rate = tables.RATE_UNIT[tables.primary_rate(op)]
        found: list[DisplayTable | None] = [_pivot(
            t, keys, "backend", _present(t["backend"], BACKENDS), _time_cell,
            "Median time and throughput",
            f"Median time per call · {'GFLOP/s and GB/s' if tables.is_backward_op(op) else rate}"
            " by backend. Hover a cell for its confidence interval.")]
        s = sp[sp["op"] == op]
        if not s.empty:
            found.append(_pivot(
                s, keys, "pair", list(dict.fromkeys(s["pair"])),
                lambda r: _ratio_cell(r.speedup, r.noisy,
                                      f"{r.speedup_low:.2f}–{r.speedup_high:.2f} (from the CIs)"),
                "Speedup over the baseline",
                "Baseline time / backend time at equal dtype, size, threads and grad mode; "
                "above 1 the first backend is faster."))
        c = sc[sc["op"] == op]
        if not c.empty:
            labels = _present(c["threads_label"], ())
            labels.sort(key=lambda x: (x == "all", int(x) if x.isdigit() else 0))
            ckeys = [*_series_key(c), ("backend", "backend"), ("dtype", "dtype"), ("size", "size"),
                     *grad, *variant]
            found.append(_pivot(
                c, ckeys, "threads_label", labels,
                lambda r: Cell(f"{fmt_ratio(r.speedup)} · {fmt_pct(r.efficiency)}"
                               + (f" {NOISY_MARK}" if r.noisy else ""), bool(r.noisy),
                               f"{int(r.threads)} threads"),
                "CPU thread scaling",
                "Speedup over 1 thread · parallel efficiency (speedup / threads), by thread "
                "count ('all' is every usable core).",
                col_header=lambda x: f"threads={x}"))
        if op == "mlp_step":
            found.append(_mlp_breakdown_table(rep.tables["mlp_breakdown"]))
        if op == "create":
            found.append(_create_where_table(rep.tables["create_where"]))
        out.append(Section(f"op-{op}", op, tables=tuple(x for x in found if x is not None),
                           priority=4))
    return out


def _mlp_breakdown_table(bd: pd.DataFrame) -> DisplayTable | None:
    if bd.empty:
        return None
    keys = (*(("series",) if bd["series"].nunique() > 1 else ()), "backend", "dtype", "size",
            "threads_label")
    header = (*(("machine",) if len(keys) == 5 else ()), "backend", "dtype", "size", "threads",
              "step", "forward", "backward", "update", "parts / step")
    rows = []
    for r in bd.itertuples(index=False):
        cells = [Cell(_key_text(getattr(r, k)), left=True) for k in keys]
        cells.append(Cell(fmt_time(r.step_s) + (f" {NOISY_MARK}" if r.noisy else ""), bool(r.noisy)))
        for p in tables.STEP_PHASES:
            t, share = getattr(r, f"{p}_s"), getattr(r, f"{p}_share")
            cells.append(Cell("-" if t != t else f"{fmt_time(t)} · {fmt_pct(share)}"))
        cells.append(Cell(fmt_pct(r.phases_over_step)))
        rows.append(tuple(cells))
    return DisplayTable(
        "Where the training step's time goes", header, tuple(rows),
        "Forward (with the loss), backward and SGD update, each timed on its own (its state "
        "restored before every call, outside the timed region), with its share of the three; "
        "'parts / step': their sum over the whole step's median.", len(keys))


def _create_where_table(cw: pd.DataFrame) -> DisplayTable | None:
    if cw.empty:
        return None
    keys = [*_series_key(cw), ("backend", "backend"), ("dtype", "dtype"), ("size", "size")]
    rows = tuple(
        (*(Cell(_key_text(getattr(r, k)), left=True) for k, _ in keys),
         Cell(fmt_time(r.device_s)), Cell(fmt_time(r.host_s)), _ratio_cell(r.ratio, r.noisy))
        for r in cw.itertuples(index=False))
    return DisplayTable(
        "Create it where it will be used", (*(h for _, h in keys), "on the device",
                                            "on the host, then copied", "host+copy / device"),
        rows, "A new array of standard-normal numbers made where it is used, against made on "
        "the host and copied over (pageable memory, as .to(device)); above 1 creating on the "
        "device is that much faster.", len(keys))


def _break_even_sentences(points: pd.DataFrame) -> list[str]:
    """One sentence per machine and GPU: from which size the round trip beats the host."""
    if points.empty:
        return []
    several = points["series"].nunique() > 1
    out = []
    for (series, backend), g in points.groupby(["series", "backend"], sort=False):
        memory = "pageable" if (g["memory"] == "pageable").any() else str(g["memory"].iloc[0])
        items = []
        for r in g[g["memory"] == memory].itertuples(index=False):
            sizes = list(r.sizes)
            what = f"{r.op}{'' if r.variant in ('', 'relu') else f' ({r.variant})'} {r.dtype}"
            if r.status == "from":
                items.append(f"{what} from n={int(r.n_break)}")
            elif r.status == "always":
                items.append(f"{what} at every size measured (from n={sizes[0]})")
            elif r.status == "never":
                items.append(f"{what} at no size measured (up to n={sizes[-1]})")
            elif r.status == "mixed":
                items.append(f"{what} at some sizes but not at the largest (n={sizes[-1]})")
        if items:
            where = f" on {series}" if several else ""
            out.append(f"Break-even{where}: counting the copies to and from {backend} "
                       f"({memory} host memory), the GPU beats numpy on the host for "
                       + "; ".join(items) + ".")
    return out


def _break_even_section(rep: Report) -> Section | None:
    points, notes = rep.tables["break_even"], list(rep.tables["break_even_notes"]["note"])
    if points.empty and not notes:
        return None
    sentences = _break_even_sentences(points)
    table = None
    if not points.empty:
        keys = [*_series_key(points), ("op", "op"), ("variant", "activation"), ("dtype", "dtype"),
                ("backend", "GPU"), ("memory", "host memory")]
        rows = tuple(
            (*(Cell(_key_text(getattr(r, k)), left=True) for k, _ in keys),
             Cell("-" if r.n_break is None or is_missing(r.n_break) else f"n={int(r.n_break)}"),
             Cell(str(r.status), left=True),
             Cell("-" if r.host_s != r.host_s else fmt_time(r.host_s)),
             Cell("-" if r.trip_s != r.trip_s else fmt_time(r.trip_s)),
             Cell(", ".join(str(n) for n in r.sizes), left=True))
            for r in points.itertuples(index=False))
        table = DisplayTable(
            "Round trip against the host", (*(h for _, h in keys), "break-even", "status",
                                            "numpy there", "round trip there", "sizes compared"),
            rows, "Round trip: measured h2d of the operands (matmul: A and B; linear: X, its "
            "weights living on the GPU), the GPU's compute and d2h of the result; against numpy "
            "at every core. Break-even: the smallest size from which the round trip is faster "
            "at every larger size compared.", len(keys))
    return Section("break-even", "Break-even: when the GPU pays off", intro=" ".join(sentences),
                   tables=(table,) if table else (),
                   items=tuple(f"left out: {n}" for n in notes), priority=1)


def _autograd_section(rep: Report) -> Section | None:
    from bench_suite.core.cases import BACKENDS

    found = []
    bf = rep.tables["backward_forward"]
    theory = bf.groupby("op", sort=False)["theory"].first() if not bf.empty else {}
    # (table, title, caption, column header): the three ratio tables share one layout
    ratio_tables: list[tuple[str, str, str, Callable[[str], str] | None]] = [
        ("backward_forward", "Backward time / forward time",
         "Backward pass over the plain (no_grad) forward of the same backend. Work ratio: "
         + ", ".join(f"{op} {v:.3g}" for op, v in dict(theory).items())
         + " (FLOPs for matmul, bytes for the Hadamard product).", None),
        ("autograd_vs_hand", "torch autograd / numpy hand-derived gradients",
         "Time of torch's autograd backward over numpy computing the same gradients by hand; "
         "above 1 autograd is slower.", lambda b: f"{b} / numpy"),
        ("grad_cost", "Cost of recording the graph (grad / no_grad)",
         "Forward time with autograd recording over the plain forward; above 1 recording "
         "costs time.", None),
    ]
    for name, title, caption, header in ratio_tables:
        df = rep.tables[name]
        if df.empty:
            continue
        keys = [*_series_key(df), ("op", "op"), ("dtype", "dtype"), ("size", "size"),
                ("threads_label", "threads")]
        extra = {"col_header": header} if header is not None else {}
        found.append(_pivot(df, keys, "backend", _present(df["backend"], BACKENDS),
                            lambda r: _ratio_cell(r.ratio, r.noisy), title, caption, **extra))
    found = [x for x in found if x is not None]
    if not found:
        return None
    return Section("autograd", "Autograd", tables=tuple(found), priority=3)


def _headline_section(rep: Report) -> Section | None:
    h = rep.tables["headline"]
    if h.empty:
        return None
    keys = [*_series_key(h), ("op", "op"), ("dtype", "dtype"), ("size", "size")]
    whats = list(dict.fromkeys(h["what"]))
    whats.sort(key=lambda w: (":" in w, w))  # backend pairs first, then thread speedups

    def cell(r: Any) -> Cell:
        c = _ratio_cell(r.value, r.noisy)
        if r.threads is not None and not is_missing(r.threads) and c.text != "-":
            return Cell(f"{c.text} on {int(r.threads)}", c.noisy, c.title)
        return c

    table = _pivot(h, keys, "what", whats, cell, "Parallel speedups at the largest size",
                   "At every core, plain forward or backward pass. 'X / Y': Y's time over X's; "
                   "'all threads / 1': speedup of all cores over one, on N cores.")
    return Section("headline", "Headline", tables=(table,) if table else (), priority=1)


_PEAK_HEADERS = {"peak_gflops": "measured peak GFLOP/s", "peak_gbps": "measured peak GB/s",
                 "datasheet_gflops": "datasheet GFLOP/s", "datasheet_gbps": "datasheet GB/s"}


def _peaks_section(rep: Report) -> Section | None:
    p = rep.tables["peaks"]
    if p.empty:
        return None
    cols = [c for c in _PEAK_HEADERS if c in p.columns]
    keys = ("series", "device", "dtype", "threads_label")
    header = ("machine", "device", "dtype", "threads", *(_PEAK_HEADERS[c] for c in cols))
    rows = tuple(
        (*(Cell(_key_text(getattr(r, k)), left=True) for k in keys),
         *(Cell(fmt_rate(float(getattr(r, c)), "").strip()) for c in cols))
        for r in p.itertuples(index=False)
    )
    table = DisplayTable("Known peaks", header, rows,
                         "The ceilings drawn in the throughput figure (from bench_suite.analysis.roofline).", 4)
    return Section("peaks", "Device peaks", tables=(table,), priority=6)


def _case_cells(r: Any) -> tuple[Cell, Cell, Cell]:
    """The machine, the case and its median: how the lists of single cases begin."""
    return Cell(str(r.series), left=True), Cell(str(r.case_id), left=True), Cell(fmt_time(r.median_s))


def _noisy_section(rep: Report) -> Section:
    n = rep.tables["noisy"]
    if n.empty:
        return Section("noisy", "Noisy cells", intro="No noisy cells.", priority=2)
    rows = tuple(
        (*_case_cells(r),
         Cell(f"±{r.rel_ci:.1%}"), Cell(fmt_pct(r.rel_iqr)), Cell(str(r.n_samples)),
         Cell("yes" if r.converged else "no"))
        for r in n.itertuples(index=False)
    )
    table = DisplayTable("Noisy cells", ("machine", "case", "median", "95% CI", "IQR / median",
                                         "samples", "converged"), rows, NOISY_NOTE, 2)
    return Section("noisy", "Noisy cells", tables=(table,), priority=2)


def _trust_section(rep: Report) -> Section:
    """How far the figures can be trusted between runs: rounds, interference, noise floor."""
    rounds = tables.rounds_by_series(rep.frame)
    one = sorted(k for k, v in rounds.items() if v <= 1)
    intro = ("Each ± is the spread between rounds (each round a fresh process) where a case has "
             "several; with one round it is the spread within one process, and the spread "
             "between runs is unknown.")
    if one:
        intro += f" One round only: {', '.join(one)}."
    u = rep.tables["untrusted"]
    out: list[DisplayTable] = []
    if not u.empty:
        rows = tuple(
            (*_case_cells(r),
             Cell(f"±{r.rel_ci:.1%}"), Cell(str(r.rounds)),
             Cell("-" if r.contention != r.contention else f"{r.contention:.2f}"),
             Cell(", ".join(n for n, on in (("contended", r.contended), ("bimodal", r.bimodal)) if on),
                  left=True))
            for r in u.itertuples(index=False))
        out.append(DisplayTable(
            "Contended or bimodal cells",
            ("machine", "case", "median", "±", "rounds", "other cores", "why"), rows, BUSY_NOTE, 2))
    n = rep.tables["noise"]
    if not n.empty:
        rows = tuple(
            (Cell(str(r.machine), left=True), Cell(str(r.case_id), left=True), Cell(fmt_pct(r.round_sd, 1)),
             Cell(fmt_pct(r.pair_sd, 1)), Cell(fmt_pct(r.detectable_runs, 1)), Cell(fmt_pct(r.detectable_ab, 1)),
             Cell("bimodal" if r.bimodal else "", left=True))
            for r in n.itertuples(index=False))
        out.append(DisplayTable(
            "Noise floor (bench-suite calibrate)",
            ("machine", "case", "rounds spread", "pairs spread", "detectable: run vs run (5 rounds)",
             "detectable: ab (8 rounds)", "note"), rows,
            "The smallest change a comparison on this machine finds with 90% power at alpha 0.01.", 2))
    if not out:
        intro += " No case was contended or bimodal."
    return Section("trust", "Run-to-run spread and interference", intro=intro, tables=tuple(out),
                   priority=2)


def _launch_bound_section(rep: Report) -> Section | None:
    lb = rep.tables.get("launch_bound")
    if lb is None or lb.empty:
        return None  # no CUDA case was launch-bound (or none was timed with events)
    rows = tuple(
        _case_cells(r)
        for r in lb.itertuples(index=False)
    )
    table = DisplayTable("Launch-bound cases", ("machine", "case", "median (launch rate)"), rows,
                         "The host took as long to queue these calls as the GPU took to run them: "
                         "their times are the launch rate, not the kernels'. Time them with "
                         "bench-suite run --cuda-graphs.", 2)
    return Section("launch_bound", "Launch-bound cases", tables=(table,), priority=2)


def _problems_section(rep: Report) -> Section:
    p = rep.tables["problems"]
    if p.empty:
        return Section("problems", "Skipped and failed cases", intro="Every case ran.", priority=1)
    rows = []
    for r in p.itertuples(index=False):
        ids = list(r.case_ids)
        shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
        rows.append((Cell(str(r.series), left=True), Cell(str(r.status), left=True),
                     Cell(str(r.reason) or "(no reason given)", left=True), Cell(str(r.count)),
                     Cell(shown, left=True, title="\n".join(ids))))
    table = DisplayTable("Skipped and failed cases", ("machine", "status", "reason", "cases",
                                                      "which"), tuple(rows),
                         "Failed: the case raised or its result was wrong (not timed). "
                         "Skipped: the backend cannot run it here.", 3)
    return Section("problems", "Skipped and failed cases", tables=(table,), priority=1)


def _runs_section(rep: Report) -> Section:
    rows = tuple(
        (Cell(i.series, left=True), Cell(i.run_id, left=True), Cell(i.created_at, left=True),
         Cell(i.cpu or "-", left=True), Cell(i.cores or "-"), Cell(i.gpus or "-", left=True),
         Cell(f"{i.counts['ok']} / {i.counts['skipped']} / {i.counts['failed']}"),
         Cell("yes" if i.complete else "no (interrupted)", left=True))
        for i in rep.runs
    )
    table = DisplayTable("", ("machine", "run", "started", "CPU", "cores", "GPU",
                                  "ok / skipped / failed", "complete"), rows, left_cols=4)
    items = tuple(f"run on {i.series}: {i.command}" for i in rep.runs if i.command)
    return Section("runs", "Runs", tables=(table,), priority=0, items=items)


def _environment_section(rep: Report) -> Section:
    details = tuple(
        (f"{i.series} · {i.run_id}", tuple((k, v) for k, v in (
            ("source", i.source), ("file", i.path), ("OS", i.os), ("Python", i.python),
            ("memory", i.memory), ("packages", i.packages), ("BLAS", i.blas),
            ("environment variables", i.env_vars), ("command", i.command),
        ) if v))
        for i in rep.runs
    )
    return Section("environment", "Environment", details=details, priority=7)


def sections(rep: Report) -> list[Section]:
    """The report's content as display tables of plain strings, in page order."""
    out: list[Section | None] = [
        _runs_section(rep),
        _headline_section(rep),
        _break_even_section(rep),
        Section("figures", "Figures", figures=tuple(_figure(f) for f in rep.figures), priority=6),
        *_op_sections(rep),
        _autograd_section(rep),
        fleet.fleet_section(rep.tables["fleet"], rep.tables["fleet_devices"]),
        _peaks_section(rep),
        _noisy_section(rep),
        _trust_section(rep),
        _launch_bound_section(rep),
        _problems_section(rep),
        _environment_section(rep),
    ]
    return [s for s in out if s is not None]


# --- 3. the document ---------------------------------------------------------------------


def _figure(f: RenderedFigure) -> Figure:
    return Figure(f.spec.name, f.spec.title, f.spec.caption, f.png, f.width_px, f.height_px)


def document(rep: Report, secs: Sequence[Section] | None = None) -> Document:
    """The report as one document: the page's head names the machines and the command; the
    summary's points to the page."""
    secs = sections(rep) if secs is None else secs
    machines = ", ".join(dict.fromkeys(i.series for i in rep.runs))
    head = [para(f"Machines: {machines or '-'} · generated {rep.generated_at}", tone="meta")]
    if rep.command:
        head.append(para("Made by: ", Code(rep.command), tone="meta"))
    made = (para("Made by ", Code(rep.command), f" · generated {rep.generated_at}.") if rep.command
            else para(f"Generated {rep.generated_at}."))
    summary_head = (made, para("The full report, with figures, is ", Code("index.html"),
                               " beside this file; every number is in ", Code("results.csv"), "."))
    return Document("bench-suite report", tuple(secs), subject=machines, head=tuple(head),
                    summary_head=summary_head, nav=True, footnote=NOISY_NOTE)


def to_html(rep: Report, secs: Sequence[Section] | None = None) -> str:
    return renderer.to_html(document(rep, secs))


def to_markdown(rep: Report, secs: Sequence[Section] | None = None,
                limit: int = MARKDOWN_LIMIT) -> str:
    return renderer.to_markdown(document(rep, secs), limit)


# --- writing --------------------------------------------------------------------------------


def write_report(runs: Sequence[Run], out_dir: str | Path, command: str | None = None,
                 frame: pd.DataFrame | None = None, with_figures: bool = True) -> Path:
    """Write ``index.html``, ``summary.md``, ``results.csv`` and ``figures/*.png`` under
    ``out_dir``; return the path of ``index.html``. ``command``: the command line that made the
    report, printed in it so a reader can make it again. ``frame``: see :func:`build_report`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write a report to {out}: it is a file, not a folder")
    rep = build_report(runs, command, with_figures=with_figures, frame=frame)
    secs = sections(rep)
    page = to_html(rep, secs)
    summary = to_markdown(rep, secs)
    csv = csv_frame(rep.frame).to_csv(index=False)
    figdir = out / "figures"
    try:
        figdir.mkdir(parents=True, exist_ok=True)
        written = set()
        for f in rep.figures:
            path = figdir / f"{f.spec.name}.png"
            path.write_bytes(f.png)
            written.add(path.name)
        _remove_stale_figures(figdir, written)
        for name, text in (("results.csv", csv), ("summary.md", summary), ("index.html", page)):
            atomic_write_text(out / name, text)
            _readable(out / name)
    except OSError as exc:
        raise OutputError(f"cannot write a report to {out}: {exc.strerror or exc}") from None
    return out / "index.html"


def _readable(path: Path) -> None:
    """A report is for sharing: the mode a plain ``open`` would give (``atomic_write_text``'s
    temporary file is private, 0600), not owner-only."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _remove_stale_figures(figdir: Path, keep: set[str]) -> None:
    """A figure that has nothing to show this time must not survive from an older report."""
    from bench_suite.report.figures import registered

    for spec in registered():
        path = figdir / f"{spec.name}.png"
        if path.name not in keep and path.exists():
            path.unlink()
