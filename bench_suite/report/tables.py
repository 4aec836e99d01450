"""Tables, as pandas DataFrames computed from the tidy frame of ``results.to_frame``.

Compute first, render second: every function here returns numbers in a DataFrame; ``render.py``
and the CLI only format them. All tables are *long* (one row per cell of the finished table)
so that figures and renderers can pivot them as they like.

Words used in column names:

* ``series``: what a line in a figure and a block of a table stands for, one per run:
  the machine name, with the run id added when one machine has several runs in the report.
* ``dim``: one number for a shape, to sort and plot by: ``n`` for square shapes, the
  geometric mean of the dimensions otherwise.
* speedups are always *baseline time / candidate time* (above 1: the candidate is faster);
  cost ratios (backward/forward, grad/no_grad, autograd/hand-derived) are *time / time*.
* ``noisy``: either input cell of a ratio is noisy (see ``stats.Summary.noisy``).

Columns from ``bench_suite.analysis.roofline`` (``peak_gflops``, ``peak_gbps``, ``attainable_gflops``,
``pct_of_peak``) are carried through when the frame has them and ignored when it does not.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from bench_suite.core.cases import BACKENDS, OP_RATE, OPS, fixed_grad_mode, is_backward, is_cuda_backend, variant_axis

if TYPE_CHECKING:
    import pandas as pd

#: The rate each op is judged by: GFLOP/s where arithmetic dominates, GB/s where memory does.
PRIMARY_RATE = {
    "matmul": "gflops",
    "matmul_backward": "gflops",
    "hadamard": "gbps",
    "hadamard_backward": "gbps",
    **OP_RATE,  # and the newer ops (the layer, training step, bmm: GFLOP/s; copies, fill: GB/s)
}
RATE_UNIT = {"gflops": "GFLOP/s", "gbps": "GB/s"}

#: Columns that identify a case apart from its backend (what "the same case" means when
#: backends are compared).
CASE_KEYS = ["machine", "op", "dtype", "m", "k", "n", "size", "variant", "threads_label",
             "grad_mode"]

#: Optional columns that ``bench_suite.analysis.roofline`` may add to the frame (measured peaks, and
#: datasheet or theoretical ones); percentages are in percent, not fractions.
PEAK_COLUMNS = ("peak_gflops", "peak_gbps", "attainable_gflops", "pct_of_peak",
                "datasheet_gflops", "datasheet_gbps", "pct_of_datasheet", "datasheet_source",
                "link_gbps", "pct_of_link", "link_source")

#: The CPU baseline every speedup is measured against, and the CPU that a GPU is held to.
BASELINE = "numpy"
CPU_TORCH = "torch-cpu"

# Same case apart from backend, per series (the frame's ``size`` label encodes the shape).
_KEYS = ["series", "op", "dtype", "size", "dim", "variant", "threads_label", "grad_mode"]


def primary_rate(op: str) -> str:
    """``gflops`` or ``gbps``: the rate an op is judged by (GFLOP/s for unknown ops)."""
    return PRIMARY_RATE.get(op, "gflops")


def forward_op(op: str) -> str:
    """``matmul`` for ``matmul_backward``: the forward op a backward op differentiates."""
    return op[: -len("_backward")] if op.endswith("_backward") else op


def peak_columns(frame: pd.DataFrame) -> list[str]:
    """The roofline columns this frame has (none unless ``bench_suite.analysis.roofline`` added them)."""
    return [c for c in PEAK_COLUMNS if c in frame.columns]


def _order(values: pd.Series, known: tuple[str, ...]) -> pd.Series:
    """Sort key: known names in their canonical order, then the rest alphabetically."""
    rank = {name: i for i, name in enumerate(known)}
    return values.map(lambda v: (rank.get(v, len(rank)), str(v)))


def _grad_key(modes: pd.Series) -> pd.Series:
    # the plain forward first, then the one that records the graph
    return modes.map(lambda g: 0 if g == "no_grad" else 1)


def _threads_key(labels: pd.Series) -> pd.Series:
    # "1" < "2" < ... < "all": numeric counts first, every core last
    return labels.map(lambda t: (1, 0) if t == "all" else (0, int(t)) if str(t).isdigit() else (2, 0))


#: While a report is built (:func:`prepared_once`): the frame it is built from, that frame
#: prepared, and the tables computed from it so far, so that the twenty tables that start from
#: it do not each prepare it again, and the figures draw the very tables the sections show.
_PREPARED: list[tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]] = []

Table = Callable[["pd.DataFrame"], "pd.DataFrame"]


@contextlib.contextmanager
def prepared_once(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """Within the block, :func:`prepare` of this very frame object is computed once, and so is
    each table marked :func:`once_per_report` (each caller gets its own copy, so none can change
    another's)."""
    _PREPARED.append((frame, _prepare(frame), {}))
    try:
        yield _PREPARED[-1][1]
    finally:
        _PREPARED.pop()


def once_per_report(table: Table) -> Table:
    """Mark a table of the frame: within :func:`prepared_once` of that frame it is computed
    once, for the report's section and its figure alike."""
    key = f"{table.__module__}.{table.__qualname__}"

    @functools.wraps(table)
    def shared(frame: pd.DataFrame) -> pd.DataFrame:
        for original, _prepared, computed in reversed(_PREPARED):
            if original is frame:
                if key not in computed:
                    computed[key] = table(frame)
                return computed[key].copy()
        return table(frame)

    return shared


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with ``series``, ``dim``, ``rate``, ``rate_unit`` and ``rel_iqr`` added, one row
    per (run, case) and sorted the way every table is shown."""
    for original, prepared, _computed in reversed(_PREPARED):
        if original is frame:
            return prepared.copy()
    return _prepare(frame)


def _prepare(frame: pd.DataFrame) -> pd.DataFrame:
    import numpy as np

    df = with_variant(frame).drop_duplicates(subset=["run_id", "case_id"], keep="first").copy()
    runs_per_machine = df.groupby("machine")["run_id"].transform("nunique")
    df["series"] = [
        m if count <= 1 else f"{m} ({r})"
        for m, r, count in zip(df["machine"], df["run_id"], runs_per_machine, strict=True)
    ]
    m = df["m"].astype("float64")
    n = df["n"].astype("float64")
    k = df["k"].astype("float64")
    df["dim"] = np.where(k.isna(), np.sqrt(m * n), np.cbrt(m * k.fillna(1.0) * n))
    df["dim"] = df["dim"].round(6)  # cube roots of cubes are not always exact
    rate_col = df["op"].map(primary_rate)
    df["rate"] = np.where(rate_col == "gbps", df["gbps"], df["gflops"])
    df["rate_unit"] = rate_col.map(RATE_UNIT)
    df["rel_iqr"] = (df["q3_s"] - df["q1_s"]) / df["median_s"]
    df = df.assign(
        _op=_order(df["op"], OPS), _b=_order(df["backend"], BACKENDS),
        _t=_threads_key(df["threads_label"]), _g=_grad_key(df["grad_mode"]),
    )
    df = df.sort_values(["_op", "series", "dtype", "dim", "_t", "_g", "_b"], kind="stable")
    return df.drop(columns=["_op", "_b", "_t", "_g"]).reset_index(drop=True)


def with_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``variant`` column ("" where a frame from elsewhere has none)."""
    return frame if "variant" in frame.columns else frame.assign(variant="")


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    df = prepare(frame)
    return df[(df["status"] == "ok") & (df["median_s"] > 0)].reset_index(drop=True)


def run_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The table printed after a run: one row per measurement, with its median, its rate and
    its speedup over numpy on the same machine, op, dtype, shape, threads and grad mode.

    numpy has no grad mode: its forward time is the baseline for torch's no_grad and grad.
    ``pct_of_peak`` is added when the frame has it (from ``bench_suite.analysis.roofline``).
    """
    import pandas as pd

    df = with_variant(frame).copy()
    df["rate"] = [row[primary_rate(op)] for op, (_, row) in zip(df["op"], df.iterrows(), strict=True)]
    df["rate_unit"] = [RATE_UNIT[primary_rate(op)] for op in df["op"]]
    base = df[(df["backend"] == BASELINE) & (df["status"] == "ok")]
    base = base[[*CASE_KEYS[:-1], "median_s"]].rename(columns={"median_s": "numpy_median_s"})
    base = base.drop_duplicates(subset=CASE_KEYS[:-1], keep="first")
    df = df.merge(base, on=CASE_KEYS[:-1], how="left")
    df["speedup_vs_numpy"] = df["numpy_median_s"] / df["median_s"]
    # a speedup is only as trustworthy as both of its times: a contended numpy time once
    # read as a 117x "speedup" of torch over numpy
    flags = [f for f in _FLAGS if f in df.columns]
    base_flags = df[(df["backend"] == BASELINE) & (df["status"] == "ok")][
        [*CASE_KEYS[:-1], *flags]].drop_duplicates(subset=CASE_KEYS[:-1], keep="first")
    df = df.merge(base_flags.rename(columns={f: f"numpy_{f}" for f in flags}), on=CASE_KEYS[:-1],
                  how="left")
    cols = ["case_id", "status", "median_s", "rel_ci", "rate", "rate_unit", "speedup_vs_numpy",
            "noisy", "reason"]
    cols += [c for c in ("pct_of_peak", *GPU_FLAGS) if c in df.columns]
    for flag in flags:
        df[f"speedup_{flag}"] = df[flag].astype(bool) | df[f"numpy_{flag}"].astype("boolean").fillna(False)
        cols += [flag, f"speedup_{flag}"]
    cols += [c for c in ("rounds", "contention") if c in df.columns]
    # in the order of every other table (op, dtype, size, threads, grad mode, backend), not the
    # order the cases happened to run in (a random one, per round)
    order = {cid: i for i, cid in enumerate(prepare(frame)["case_id"])}
    df = df.assign(_o=df["case_id"].map(order)).sort_values("_o", kind="stable")
    return pd.DataFrame(df[cols]).reset_index(drop=True)


#: Flags of a measurement that make its figures, and ratios built on them, less trustworthy.
_FLAGS = ("contended", "bimodal")


#: GPU flags of the frame (``results.to_frame``): True, False, or NA where not known.
GPU_FLAGS = ("launch_bound", "throttled", "power_capped")
LAUNCH_BOUND_NOTE = ("launch-bound: the host took as long to queue the calls as the GPU took "
                     "to run them, so the CUDA events timed the launch rate, not the kernels; "
                     "rerun with --cuda-graphs to time the kernels")


def _flag(row: object, name: str) -> bool:
    """True where the row's flag is set; False where it is not, or NA (unknown)."""
    try:
        return bool(getattr(row, name, False))
    except TypeError:  # pd.NA
        return False


def gpu_row_notes(row: object) -> list[str]:
    """Short notes on one row of :func:`run_summary` (a namedtuple): launch-bound, throttled,
    power-capped."""
    return [label for name, label in (("launch_bound", "launch-bound"), ("throttled", "throttled"),
                                      ("power_capped", "power-capped")) if _flag(row, name)]


def row_notes(row: object) -> list[str]:
    """:func:`gpu_row_notes`, after "noisy" where the row is."""
    return (["noisy"] if _flag(row, "noisy") else []) + gpu_row_notes(row)


def gpu_notes(summary: pd.DataFrame) -> list[str]:
    """Lines to print under the run's table about its GPU flags."""
    out = []
    for name, text in (
        ("launch_bound", LAUNCH_BOUND_NOTE),
        ("throttled", "throttled: NVML saw thermal or hardware slowdown while it was timed"),
        ("power_capped", "power-capped: the GPU held its power limit while it was timed "
                         "(dense GEMMs do; not throttling)"),
    ):
        if name in summary.columns:
            count = int(summary[name].fillna(False).astype(bool).sum())
            if count:
                out.append(f"{count} case{'s' if count > 1 else ''} {text}")
    return out


def launch_bound_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """CUDA measurements whose events timed the host's launches rather than the kernels."""
    df = ok_rows(frame)
    cols = ["series", "op", "case_id", "median_s"]
    if "launch_bound" not in df.columns:
        return df[cols].iloc[0:0].reset_index(drop=True)
    return df[df["launch_bound"].fillna(False).astype(bool)][cols].reset_index(drop=True)


@once_per_report
def time_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Median time and throughput of every measured case, by op, size and backend.

    Columns: ``_KEYS``, backend, threads, median_s, rel_ci, noisy, gflops, gbps, rate,
    rate_unit (and the roofline columns when present).
    """
    df = ok_rows(frame)
    cols = [*_KEYS, "backend", "device", "threads", "median_s", "rel_ci", "noisy", "gflops",
            "gbps", "rate", "rate_unit", *peak_columns(df),
            *(c for c in ("contended", "bimodal", "rounds") if c in df.columns)]
    return df[cols].reset_index(drop=True)


def _cell(df: pd.DataFrame, backend: str, suffix: str) -> pd.DataFrame:
    cols = {"median_s": f"{suffix}_s", "ci_low_s": f"{suffix}_low", "ci_high_s": f"{suffix}_high",
            "noisy": f"{suffix}_noisy"}
    part = df[df["backend"] == backend][[*_KEYS, *cols]]
    return part.rename(columns=cols)


def speedup_pairs(backends: list[str]) -> list[tuple[str, str]]:
    """(candidate, baseline) pairs: every backend over numpy, every GPU over torch-cpu."""
    pairs = [(b, BASELINE) for b in backends if b != BASELINE]
    pairs += [(b, CPU_TORCH) for b in backends if is_cuda_backend(b) and CPU_TORCH in backends]
    return pairs


@once_per_report
def speedup_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Speedup of each backend over numpy, and of each GPU over torch-cpu, at equal series, op,
    dtype, size, threads and grad mode (torch's graph-recording forward has no numpy twin).

    ``speedup = baseline_s / candidate_s``; ``speedup_low``/``speedup_high`` pair the ends of the
    two medians' confidence intervals (a conservative interval for the ratio).
    """
    import pandas as pd

    df = ok_rows(frame)
    backends = list(dict.fromkeys(df["backend"]))
    parts = []
    for cand, base in speedup_pairs(backends):
        merged = _cell(df, cand, "candidate").merge(_cell(df, base, "baseline"), on=_KEYS)
        if merged.empty:
            continue
        merged.insert(len(_KEYS), "candidate", cand)
        merged.insert(len(_KEYS) + 1, "baseline", base)
        merged.insert(len(_KEYS) + 2, "pair", f"{cand} / {base}")
        parts.append(merged)
    cols = [*_KEYS, "candidate", "baseline", "pair", "candidate_s", "baseline_s", "speedup",
            "speedup_low", "speedup_high", "noisy"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    out["speedup"] = out["baseline_s"] / out["candidate_s"]
    out["speedup_low"] = out["baseline_low"] / out["candidate_high"]
    out["speedup_high"] = out["baseline_high"] / out["candidate_low"]
    out["noisy"] = out["candidate_noisy"] | out["baseline_noisy"]
    return _resort(out[cols])


def _resort(df: pd.DataFrame, by: tuple[str, ...] = ("series", "dtype", "dim", "_t", "_g")) -> pd.DataFrame:
    keys = df.assign(_op=_order(df["op"], OPS), _t=_threads_key(df["threads_label"]),
                     _g=_grad_key(df["grad_mode"]))
    if "backend" in keys.columns:
        keys = keys.assign(_b=_order(keys["backend"], BACKENDS))
    keys = keys.sort_values(["_op", *by], kind="stable")
    helpers = [c for c in ("_op", "_t", "_g", "_b") if c in keys.columns]
    return keys.drop(columns=helpers).reset_index(drop=True)


@once_per_report
def thread_scaling(frame: pd.DataFrame) -> pd.DataFrame:
    """CPU thread scaling: speedup over 1 thread and parallel efficiency (speedup / threads).

    One row per (series, op, backend, dtype, size, grad mode, thread count) for every group
    that has a 1-thread measurement and at least one other count. ``threads`` is the count in
    force while timing (``all`` resolved to the machine's cores).
    """
    import pandas as pd

    df = ok_rows(frame)
    df = df[(df["device"] == "cpu") & df["threads"].notna()]
    group = ["series", "op", "backend", "dtype", "size", "dim", "variant", "grad_mode"]
    cols = [*group, "threads_label", "threads", "median_s", "speedup", "efficiency", "noisy"]
    one = df[df["threads"] == 1][[*group, "median_s", "noisy"]].drop_duplicates(subset=group)
    one = one.rename(columns={"median_s": "t1_s", "noisy": "t1_noisy"})
    counts = df.groupby(group, sort=False)["threads"].transform("size")
    out = df[counts >= 2].merge(one, on=group)
    if out.empty:
        return pd.DataFrame(columns=cols)
    out["speedup"] = out["t1_s"] / out["median_s"]
    out["efficiency"] = out["speedup"] / out["threads"].astype("float64")
    out["noisy"] = out["noisy"] | out["t1_noisy"]
    out = out[cols].copy()
    out["threads"] = out["threads"].astype("Int64")
    return _resort(out, ("series", "_b", "dtype", "dim", "_g", "_t"))


@once_per_report
def backward_forward(frame: pd.DataFrame) -> pd.DataFrame:
    """Backward time over forward time per backend (theory: 2 for matmul by FLOPs).

    The forward is the plain (no_grad) forward of the same backend, size, dtype and threads.
    ``theory`` is the ratio of the work the op is judged by: FLOPs for matmul (compute-bound),
    bytes for the Hadamard product (memory-bound, 5N/3N).
    """
    import pandas as pd

    df = ok_rows(frame)
    bw = df[_backward_mask(df)].copy()
    cols = ["series", "op", "backend", "dtype", "size", "dim", "variant", "threads_label",
            "forward_s", "backward_s", "ratio", "theory", "noisy"]
    if bw.empty:
        return pd.DataFrame(columns=cols)
    bw["forward_op"] = bw["op"].map(forward_op)
    fw = df[df["grad_mode"] == "no_grad"]
    key = ["series", "backend", "dtype", "size", "variant", "threads_label"]
    fw = fw[[*key, "op", "median_s", "noisy", "flops", "bytes"]].rename(columns={
        "op": "forward_op", "median_s": "forward_s", "noisy": "f_noisy", "flops": "f_flops",
        "bytes": "f_bytes"})
    out = bw.merge(fw, on=[*key, "forward_op"])
    out["backward_s"] = out["median_s"]
    out["ratio"] = out["backward_s"] / out["forward_s"]
    by_flops = out["op"].map(primary_rate) == "gflops"
    out["theory"] = (out["flops"] / out["f_flops"]).where(by_flops, out["bytes"] / out["f_bytes"])
    out["noisy"] = out["noisy"] | out["f_noisy"]
    return out[cols].reset_index(drop=True)


def _backward_mask(df: pd.DataFrame) -> pd.Series:
    # astype(bool): an empty object Series used as a mask would select columns instead of rows
    return df["op"].map(is_backward_op).astype(bool)


def is_backward_op(op: str) -> bool:
    try:
        return is_backward(op)
    except KeyError:
        return False


def autograd_vs_hand(frame: pd.DataFrame) -> pd.DataFrame:
    """torch autograd's backward time over numpy's hand-derived gradients (same series, op,
    dtype, size and threads). Above 1: autograd is slower than the hand-written chain rule."""
    sp = speedup_table(frame)
    sp = sp[(sp["baseline"] == BASELINE) & _backward_mask(sp)].copy()
    sp = sp.rename(columns={"candidate": "backend", "candidate_s": "autograd_s",
                            "baseline_s": "hand_s"})
    sp["ratio"] = sp["autograd_s"] / sp["hand_s"]
    cols = ["series", "op", "backend", "dtype", "size", "dim", "variant", "threads_label",
            "autograd_s", "hand_s", "ratio", "noisy"]
    return sp[cols].reset_index(drop=True)


def grad_cost(frame: pd.DataFrame) -> pd.DataFrame:
    """What recording the autograd graph costs a forward op: grad time over no_grad time."""
    df = ok_rows(frame)
    key = ["series", "op", "backend", "dtype", "size", "dim", "variant", "threads_label"]
    return _ratio_table(df[~_backward_mask(df)], key, "grad_mode", ("grad", "grad_s"), ("no_grad", "no_grad_s"))


def _ratio_table(df: pd.DataFrame, key: list[str], column: str, over: tuple[str, str],
                 under: tuple[str, str]) -> pd.DataFrame:
    """Rows whose ``column`` is ``over[0]`` beside those where it is ``under[0]``, matched on
    ``key``: their medians (named ``under[1]`` and ``over[1]``), ``ratio`` = over / under and
    ``noisy`` where either is."""
    import pandas as pd

    cols = [*key, under[1], over[1], "ratio", "noisy"]
    top = df[df[column] == over[0]][[*key, "median_s", "noisy"]]
    bottom = df[df[column] == under[0]][[*key, "median_s", "noisy"]]
    out = top.merge(bottom, on=key, suffixes=("_o", "_u"))
    if out.empty:
        return pd.DataFrame(columns=cols)
    out[over[1]] = out["median_s_o"]
    out[under[1]] = out["median_s_u"]
    out["ratio"] = out[over[1]] / out[under[1]]
    out["noisy"] = out["noisy_o"] | out["noisy_u"]
    return out[cols].reset_index(drop=True)


def noisy_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurements whose spread is too wide to trust their median to a few percent."""
    df = ok_rows(frame)
    cols = ["series", "op", "case_id", "median_s", "rel_ci", "rel_iqr", "n_samples", "converged"]
    return df[df["noisy"]][cols].reset_index(drop=True)


def untrusted_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurements taken while other processes held the cores they needed (``contended``),
    or whose rounds fall into two groups far apart (``bimodal``): their figures are shown,
    but no comparison judges them."""
    import pandas as pd

    cols = ["series", "case_id", "median_s", "rel_ci", "rounds", "contention", "contended", "bimodal"]
    if "contended" not in frame.columns:
        return pd.DataFrame(columns=cols)
    df = ok_rows(frame)
    return df[df["contended"] | df["bimodal"]][cols].reset_index(drop=True)


def rounds_by_series(frame: pd.DataFrame) -> dict[str, int]:
    """The most rounds any measurement of a series holds (1: one process per case)."""
    if "rounds" not in frame.columns:
        return {}
    df = ok_rows(frame)
    return {str(k): int(v) for k, v in df.groupby("series")["rounds"].max().items()}


def problems(frame: pd.DataFrame) -> pd.DataFrame:
    """Skipped and failed cases, each with its reason."""
    df = prepare(frame)
    cols = ["series", "op", "case_id", "status", "reason"]
    return df[df["status"] != "ok"][cols].reset_index(drop=True)


def problem_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Skipped and failed cases grouped by series, status and reason: a count and the ids."""
    import pandas as pd

    p = problems(frame)
    cols = ["series", "status", "reason", "count", "case_ids"]
    if p.empty:
        return pd.DataFrame(columns=cols)
    out = (p.groupby(["series", "status", "reason"], sort=False)["case_id"]
           .agg(count="size", case_ids=list).reset_index())
    # failures first: they are bugs or wrong results, skips are expected on some machines
    out["_s"] = out["status"].map({"failed": 0, "skipped": 1}).fillna(2)
    return out.sort_values(["_s", "series"], kind="stable").drop(columns="_s")[cols].reset_index(drop=True)


def headline(frame: pd.DataFrame) -> pd.DataFrame:
    """The parallel-core speedups at a glance, per series, op and dtype at the largest size
    measured: each CPU backend's speedup from 1 thread to all cores, and the backend-over-
    backend speedups at all threads (plain forward or backward pass).

    Long format: series, op, dtype, size, dim, what (``torch-cpu / numpy`` or
    ``numpy: all threads / 1``), value, threads (the core count for thread speedups), noisy.
    """
    import pandas as pd

    cols = ["series", "op", "dtype", "size", "dim", "what", "value", "threads", "noisy"]
    rows = []
    sp = speedup_table(frame)
    sp = sp[(sp["threads_label"] == "all") & (sp["grad_mode"] == sp["op"].map(plain_mode))
            & is_default_variant(sp)]
    for _, g in sp.groupby(["series", "op", "dtype"], sort=False):
        for r in g[g["dim"] == g["dim"].max()].itertuples(index=False):
            rows.append((r.series, r.op, r.dtype, r.size, r.dim, r.pair, r.speedup, None, r.noisy))
    sc = thread_scaling(frame)
    sc = sc[(sc["threads_label"] == "all") & (sc["grad_mode"] == sc["op"].map(plain_mode))
            & is_default_variant(sc)]
    for _, g in sc.groupby(["series", "op", "dtype"], sort=False):
        for r in g[g["dim"] == g["dim"].max()].itertuples(index=False):
            rows.append((r.series, r.op, r.dtype, r.size, r.dim, f"{r.backend}: all threads / 1",
                         r.speedup, int(r.threads), r.noisy))
    out = pd.DataFrame(rows, columns=cols)
    out["threads"] = out["threads"].astype("Int64")
    if out.empty:
        return out
    out = out.assign(_op=_order(out["op"], OPS))
    out = out.sort_values(["_op", "series", "dtype"], kind="stable").drop(columns="_op")
    return out.reset_index(drop=True)


def plain_mode(op: str) -> str:
    """The grad mode of an op's plain timing: no_grad for forward ops, grad for backward ops
    and the training step (the one mode they have)."""
    try:
        fixed = fixed_grad_mode(op)
    except KeyError:  # an op from another version of the suite
        return "grad" if is_backward_op(op) else "no_grad"
    return fixed or "no_grad"


def default_variant(op: str) -> str:
    """The variant an op's plain timing has: "" for ops without one, else the axis default."""
    try:
        axis = variant_axis(op)
    except KeyError:
        return ""
    return axis.default if axis is not None else ""


def is_default_variant(df: pd.DataFrame) -> pd.Series:
    """Rows at their op's default variant (ReLU, pageable memory, created on the device)."""
    if df.empty:
        return df["op"].astype(bool)
    return (df["variant"] == df["op"].map(default_variant)).astype(bool)


#: Ceilings shown in the peaks table when the frame has them (``bench_suite.analysis.roofline``).
PEAK_TABLE_COLUMNS = ("peak_gflops", "peak_gbps", "datasheet_gflops", "datasheet_gbps")


def peaks(frame: pd.DataFrame) -> pd.DataFrame:
    """Known device peaks per series, device, dtype and thread setting (empty without the
    roofline's columns)."""
    import pandas as pd

    key = ["series", "device", "dtype", "threads_label"]
    cols = [c for c in PEAK_TABLE_COLUMNS if c in frame.columns]
    if not cols:
        return pd.DataFrame(columns=key)
    df = prepare(frame)
    df = df.dropna(subset=cols, how="all")
    return df[[*key, *cols]].drop_duplicates(subset=key).reset_index(drop=True)


# --- when the GPU pays off, transfers included ------------------------------------------------

#: Ops of the break-even figure, and how many n x n operands the round trip copies to the
#: device: matmul copies A and B; a layer's weights live on the device with it, so ``linear``
#: copies its input X (and both copy their n x n result back).
BREAK_EVEN_OPS: dict[str, int] = {"matmul": 2, "linear": 1}


def _square_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of square cases (``n=N``: every dimension N), with ``n`` as a plain int."""
    sq = df[df["size"].astype(str).str.fullmatch(r"n=\d+")].copy()
    sq["n"] = sq["n"].astype("int64")
    return sq


@once_per_report
def break_even(frame: pd.DataFrame) -> pd.DataFrame:
    """Time against size of three ways to do a matmul or a ``linear`` layer, from measured
    rows only: numpy on the host (every core), the GPU's compute alone, and the round trip
    (copies in, compute, copy of the result back) per host memory.

    Long: series, op, variant, dtype, n, backend (the GPU; "numpy" for the host), way
    (host | gpu | round_trip), memory ("" or pageable | pinned), time_s, and for round trips
    h2d_s, d2h_s, compute_s. A round trip exists only at sizes where all its parts were
    measured (same series, GPU, dtype and host memory): nothing is estimated.
    """
    import pandas as pd

    cols = ["series", "op", "variant", "dtype", "n", "backend", "way", "memory", "time_s",
            "h2d_s", "d2h_s", "compute_s"]
    df = ok_rows(frame)
    df = _square_rows(df[(df["grad_mode"] == "no_grad")
                         & df["op"].isin([*BREAK_EVEN_OPS, "h2d", "d2h"])])
    cuda = df["backend"].map(is_cuda_backend).astype(bool)
    host = df[(df["backend"] == BASELINE) & (df["threads_label"] == "all")
              & df["op"].isin(list(BREAK_EVEN_OPS))]
    gpu = df[cuda & df["op"].isin(list(BREAK_EVEN_OPS))]
    copies = df[cuda & df["op"].isin(["h2d", "d2h"])]
    rows: list[dict[str, object]] = []
    for r in host.itertuples(index=False):
        rows.append({"series": r.series, "op": r.op, "variant": r.variant, "dtype": r.dtype,
                     "n": r.n, "backend": r.backend, "way": "host", "memory": "",
                     "time_s": r.median_s})
    copy_s = {(r.series, r.backend, r.dtype, r.n, r.op, r.variant): r.median_s
              for r in copies.itertuples(index=False)}
    memories = sorted({r.variant for r in copies.itertuples(index=False)})
    for r in gpu.itertuples(index=False):
        base = {"series": r.series, "op": r.op, "variant": r.variant, "dtype": r.dtype,
                "n": r.n, "backend": r.backend}
        rows.append({**base, "way": "gpu", "memory": "", "time_s": r.median_s})
        for mem in memories:
            h2d = copy_s.get((r.series, r.backend, r.dtype, r.n, "h2d", mem))
            d2h = copy_s.get((r.series, r.backend, r.dtype, r.n, "d2h", mem))
            if h2d is None or d2h is None:
                continue
            rows.append({**base, "way": "round_trip", "memory": mem,
                         "time_s": BREAK_EVEN_OPS[r.op] * h2d + r.median_s + d2h,
                         "h2d_s": h2d, "d2h_s": d2h, "compute_s": r.median_s})
    out = pd.DataFrame(rows, columns=cols)
    out["n"] = out["n"].astype("int64")
    out = out.assign(_op=_order(out["op"], tuple(BREAK_EVEN_OPS)))
    out = out.sort_values(["series", "_op", "variant", "dtype", "backend", "way", "memory", "n"],
                          kind="stable")
    return out.drop(columns="_op").reset_index(drop=True)


@once_per_report
def break_even_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Where the round trip beats numpy on the host, per series, op, variant, dtype, GPU and
    host memory: ``n_break`` is the smallest size measured from which the round trip is
    faster at every larger size measured (both sides measured there).

    ``status``: ``from`` (it pays off from ``n_break``), ``always`` (at every size compared),
    ``never`` (at none), ``mixed`` (ahead at some sizes, not at the largest), ``no common
    size`` (both sides exist, at no same size). ``sizes``:
    the sizes compared; ``host_s``/``trip_s``: the two times at ``n_break``.
    """
    import pandas as pd

    be = break_even(frame)
    cols = ["series", "op", "variant", "dtype", "backend", "memory", "status", "n_break",
            "host_s", "trip_s", "sizes"]
    rows = []
    host = be[be["way"] == "host"]
    trips = be[be["way"] == "round_trip"]
    for key, g in trips.groupby(["series", "op", "variant", "dtype", "backend", "memory"],
                                sort=False):
        series, op, variant, dtype, _backend, _memory = key
        h = host[(host["series"] == series) & (host["op"] == op) & (host["variant"] == variant)
                 & (host["dtype"] == dtype)]
        h_s = dict(zip(h["n"], h["time_s"], strict=True))
        t_s = dict(zip(g["n"], g["time_s"], strict=True))
        sizes = sorted(set(h_s) & set(t_s))
        status, n_break = "no common size", None
        if sizes:
            faster = [t_s[n] < h_s[n] for n in sizes]
            if all(faster):
                status, n_break = "always", sizes[0]
            elif not any(faster):
                status = "never"
            elif not faster[-1]:
                status = "mixed"  # ahead somewhere below, but not at the largest size
            else:
                last_slower = max(i for i, f in enumerate(faster) if not f)
                status, n_break = "from", sizes[last_slower + 1]
        rows.append({**dict(zip(cols[:6], key, strict=True)), "status": status,
                     "n_break": n_break,
                     "host_s": h_s.get(n_break) if n_break is not None else None,
                     "trip_s": t_s.get(n_break) if n_break is not None else None,
                     "sizes": sizes})
    out = pd.DataFrame(rows, columns=cols)
    out["n_break"] = out["n_break"].astype("Int64")
    for col in ("host_s", "trip_s"):
        out[col] = out[col].astype("float64")
    return out


def break_even_notes(frame: pd.DataFrame) -> list[str]:
    """What the break-even figure leaves out, and why: one line per missing side, for every
    series that measured something on a GPU (a CPU-only run gets no lines: there is no GPU
    side to miss). Nothing missing is ever estimated."""
    df = ok_rows(frame)
    df = df[df["grad_mode"] == "no_grad"]
    be = break_even(frame)
    notes: list[str] = []
    gpu_series = set(df[df["backend"].map(is_cuda_backend).astype(bool)]["series"])
    for series in sorted(gpu_series):
        mine = df[df["series"] == series]
        for op in BREAK_EVEN_OPS:
            for dtype in sorted(set(mine[mine["op"] == op]["dtype"])):
                cell = be[(be["series"] == series) & (be["op"] == op) & (be["dtype"] == dtype)]
                where = f"{series} · {op} {dtype}"
                ways = set(cell["way"])
                if "host" not in ways:
                    notes.append(f"{where}: no numpy case at every core at a square size: the "
                                 "host line is left out")
                if "gpu" not in ways:
                    notes.append(f"{where}: no GPU case at a square size: the GPU compute and "
                                 "round-trip lines are left out")
                    continue
                gpu_n = set(cell[cell["way"] == "gpu"]["n"])
                trips = cell[cell["way"] == "round_trip"]
                if trips.empty:
                    notes.append(f"{where}: no h2d and d2h measured at its sizes (same GPU and "
                                 "dtype): the round trip is left out")
                    continue
                for memory, t in trips.groupby("memory", sort=True):
                    missing = sorted(gpu_n - set(t["n"]))
                    if missing:
                        notes.append(f"{where}: the round trip ({memory}) is left out at n="
                                     + ", ".join(str(n) for n in missing)
                                     + " (h2d or d2h not measured there)")
    return notes


# --- the training step, where its time goes --------------------------------------------------

STEP_PHASES: tuple[str, ...] = ("forward", "backward", "update")


@once_per_report
def mlp_breakdown(frame: pd.DataFrame) -> pd.DataFrame:
    """The training step's time per backend, and its forward, backward and update timed on
    their own (``phases.time_phases``): median seconds, each phase's share of their sum, and
    the sum over the whole step's median (near 1: the phases account for the step).

    One row per series, backend, dtype, size and threads with at least one phase measured.
    """
    import pandas as pd

    df = ok_rows(frame)
    cols = ["series", "backend", "dtype", "size", "dim", "threads_label", "step_s",
            *(f"{p}_s" for p in STEP_PHASES), "phases_s", *(f"{p}_share" for p in STEP_PHASES),
            "phases_over_step", "noisy"]
    phase_cols = [f"phase_{p}_s" for p in STEP_PHASES]
    if df.empty or not set(phase_cols) <= set(df.columns):
        return pd.DataFrame(columns=cols)
    df = df[(df["op"] == "mlp_step") & df[phase_cols].notna().any(axis=1)].copy()
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["step_s"] = df["median_s"]
    for p in STEP_PHASES:
        df[f"{p}_s"] = df[f"phase_{p}_s"]
    df["phases_s"] = df[[f"{p}_s" for p in STEP_PHASES]].sum(axis=1, min_count=len(STEP_PHASES))
    for p in STEP_PHASES:
        df[f"{p}_share"] = df[f"{p}_s"] / df["phases_s"]
    df["phases_over_step"] = df["phases_s"] / df["step_s"]
    return _resort(df[["op", *cols, "grad_mode"]].assign(op="mlp_step"),
                   ("series", "_b", "dtype", "dim", "_t"))[cols]


# --- create it where it will be used ---------------------------------------------------------


def create_where(frame: pd.DataFrame) -> pd.DataFrame:
    """``create`` on the device against creating on the host and copying over, per GPU:
    ``ratio`` = host-then-copy time / on-device time (above 1: creating where the array is
    used is that much faster)."""
    df = ok_rows(frame)
    key = ["series", "backend", "dtype", "size", "dim"]
    return _ratio_table(df[df["op"] == "create"], key, "variant", ("host", "host_s"), ("device", "device_s"))
