"""``bench-suite profile CASE_ID``: where the time of one case goes.

The case is prepared and verified exactly as a run would (``harness.ready``), warmed up, and
then called ``calls`` times under a profiler:

* torch backends: ``torch.profiler`` with CPU activity, plus CUDA activity on a GPU. A Chrome
  trace is written (chrome://tracing, https://ui.perfetto.dev) and the table lists operators
  (``aten::mm``) and, on a GPU, kernels, each with its self time and its share of the total
  self time of its activity (CPU or CUDA).
* numpy: ``cProfile``, a Python-level profile (numpy's ufuncs and BLAS calls are C code,
  counted inside the Python function that calls them). Its stats are written with
  ``pstats.dump_stats`` (snakeviz, ``python -m pstats``).

Compute first, print second: :func:`profile_case` returns a :class:`ProfileResult`; the CLI
formats it.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_suite.backends import Backend, get_backend
from bench_suite.core.cases import Case, is_cuda_backend
from bench_suite.core.errors import OutputError, UsageError

if TYPE_CHECKING:
    import pandas as pd

#: Profile about this long when the number of calls is not given.
TARGET_S = 0.5
MIN_CALLS, MAX_CALLS = 3, 1000
TABLE_COLUMNS = ("name", "activity", "calls", "self_s", "total_s", "share")


@dataclass(frozen=True)
class ProfileResult:
    case: Case
    tool: str  # "torch.profiler" | "cProfile"
    calls: int
    wall_s: float  # host time of the profiled calls (profiler overhead included)
    trace_path: str
    table: pd.DataFrame  # TABLE_COLUMNS, sorted by share within activity, CUDA first
    rel_error: float
    check: str


def default_trace_path(case: Case, tool: str, folder: str | Path = "profiles") -> Path:
    slug = re.sub(r"[^A-Za-z0-9.=_-]+", "_", case.id.replace("/", "__"))
    return Path(folder) / (slug + (".prof" if tool == "cProfile" else ".trace.json"))


def profile_case(
    case: Case,
    seed: int = 0,
    trace: str | Path | None = None,
    calls: int | None = None,
    backend_for: Callable[[str], Backend] = get_backend,
) -> ProfileResult:
    """Prepare, verify, warm up and profile ``case``; write its trace; return the table.

    Raises ``UsageError`` for a case that cannot run here or gives a wrong result (nothing
    worth profiling), ``OutputError`` for an unwritable trace path.
    """
    from bench_suite.measure import harness

    tool = "cProfile" if case.backend == "numpy" else "torch.profiler"
    path = Path(trace) if trace is not None else default_trace_path(case, tool)
    if path.is_dir():
        raise OutputError(f"cannot write the trace to {path}: it is a folder")
    backend = backend_for(case.backend)
    try:
        ready = harness.ready(case, seed, backend)
    except harness.Unavailable as exc:
        raise UsageError(f"cannot profile {case.id} here: {exc}") from None
    except harness.WrongResult as exc:
        raise UsageError(f"not profiling a wrong result: {exc}") from None
    with ready:
        try:  # made only now: a case that cannot run leaves no empty folder behind
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write the trace to {path}: {exc.strerror or exc}") from None
        call = _with_reset(ready.call, ready.reset)
        n = calls or _calls_for(call, ready.synchronize)
        if tool == "cProfile":
            table, wall = _cprofile(call, n, path)
        else:
            table, wall = _torch_profile(call, ready.synchronize, n, path,
                                         cuda=is_cuda_backend(case.backend))
    return ProfileResult(case, tool, n, wall, str(path), table, ready.rel_error, ready.check)


def _with_reset(call: Callable[[], object], reset: Callable[[], None] | None) -> Callable[[], object]:
    """A training step restores its weights before each profiled call (else it would train
    on, and diverge): the restore's copies then show in the profile, under their own names."""
    if reset is None:
        return call

    def step() -> object:
        reset()
        return call()

    return step


def _calls_for(call: Callable[[], object], sync: Callable[[], None]) -> int:
    """Warm up, then as many calls as fit in TARGET_S (within MIN_CALLS..MAX_CALLS)."""
    for _ in range(2):
        call()
    sync()
    t0 = time.perf_counter()
    call()
    sync()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(MIN_CALLS, min(MAX_CALLS, math.ceil(TARGET_S / one)))


def _write_guard(path: Path) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise OutputError(f"cannot write the trace to {path}: {exc.strerror or exc}") from None

    return guard()


def _cprofile(call: Callable[[], object], calls: int, path: Path) -> tuple[pd.DataFrame, float]:
    import cProfile
    import pstats

    import pandas as pd

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(calls):
        call()
    prof.disable()
    wall = time.perf_counter() - t0
    with _write_guard(path):
        prof.dump_stats(str(path))
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, ncalls, tt, ct, _callers) in stats.items():
        if func == "<method 'disable' of '_lsprof.Profiler' objects>":
            continue  # the profiler switching itself off
        where = "" if filename == "~" else f" ({Path(filename).name}:{line})"
        rows.append({"name": f"{func}{where}", "activity": "python", "calls": int(ncalls),
                     "self_s": float(tt), "total_s": float(ct)})
    return _finish_table(pd.DataFrame(rows, columns=list(TABLE_COLUMNS[:-1]))), wall


def _torch_profile(call: Callable[[], object], sync: Callable[[], None], calls: int, path: Path,
                   cuda: bool) -> tuple[pd.DataFrame, float]:
    import pandas as pd
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        sync()
        wall = time.perf_counter() - t0
    with _write_guard(path):
        prof.export_chrome_trace(str(path))
    rows = []
    for e in prof.key_averages():
        self_cpu = float(getattr(e, "self_cpu_time_total", 0.0)) * 1e-6
        self_dev = float(_first(e, ("self_device_time_total", "self_cuda_time_total"))) * 1e-6
        if self_cpu > 0 or not self_dev:
            rows.append({"name": e.key, "activity": "cpu", "calls": int(e.count),
                         "self_s": self_cpu, "total_s": float(e.cpu_time_total) * 1e-6})
        if self_dev > 0:
            total_dev = float(_first(e, ("device_time_total", "cuda_time_total"))) * 1e-6
            rows.append({"name": e.key, "activity": "cuda", "calls": int(e.count),
                         "self_s": self_dev, "total_s": total_dev})
    return _finish_table(pd.DataFrame(rows, columns=list(TABLE_COLUMNS[:-1]))), wall


def _first(obj: Any, names: tuple[str, ...]) -> float:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def _finish_table(df: pd.DataFrame) -> pd.DataFrame:
    """Share of the activity's total self time; CUDA rows first (the GPU's time is what a
    CUDA case is about), then by share."""
    totals = df.groupby("activity")["self_s"].transform("sum")
    df["share"] = (df["self_s"] / totals).where(totals > 0, 0.0)
    order = {"cuda": 0, "cpu": 1, "python": 2}
    df = df.assign(_a=df["activity"].map(order)).sort_values(["_a", "share"], ascending=[True, False])
    return df.drop(columns="_a").reset_index(drop=True)[list(TABLE_COLUMNS)]
