"""asv front end: benchmark classes generated from the case grid, one class per op.

``benchmarks/`` holds no logic: it asks :func:`benchmark_classes` for the classes and puts
them in its namespace, so a new op, backend or dtype appears in asv without touching it.
Each generated class follows asv's conventions:

* ``params``/``param_names`` are the case axes (backend, dtype, size, threads and, for
  forward ops, grad_mode) of the grid chosen by ``$BENCH_SUITE_ASV_PRESET`` (default ``ci``,
  small enough for CI; ``quick``, ``default`` or ``full`` are the CLI's presets), limited to
  the backends in ``$BENCH_SUITE_ASV_BACKENDS`` when it is set;
* ``setup`` prepares and verifies the case through :mod:`bench_suite.measure.harness` (the runner's
  backends, inputs, reference and tolerance) and raises ``NotImplementedError`` with the
  reason for combinations that are not in the grid or cannot run here (asv shows n/a); a
  wrong result raises ``RuntimeError``, a benchmark failure;
* ``timer`` synchronizes the case's device before reading the host clock, so ``time_op``
  times the calls until the device has finished them, not only their launches. asv
  (asv_runner 0.3) times the calls of a class with a ``setup`` one by one and re-runs setup
  between samples: the prepared case is kept for the process, and ``repeat`` asks for up to
  100 one-call samples per round. Each sample then carries asv's own call overhead (about
  1 µs here): compare sub-10 µs cases within asv; the suite's ``track_*`` figures time blocks
  of calls and have no such overhead;
* ``track_gflops`` (matmul ops) or ``track_gbps`` (element-wise ops) measure the rate with the
  suite's own :func:`bench_suite.core.timing.measure` (CUDA events on a GPU); where a GPU is
  present, ``track_peak_gpu_mem`` records the case's peak device memory;
* ``version`` is a hash of the op's definition (see :func:`op_version`), not of this code, so
  asv keeps its history when the adapter is refactored and starts afresh when what a case
  measures changes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bench_suite.core import grid, ops, stats
from bench_suite.core.cases import (
    OP_INFO,
    OP_RATE,
    OPS,
    Case,
    is_cuda_backend,
    op_family,
    op_ndim,
    parse_backends,
    variant_axis,
)
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import SamplingPlan
from bench_suite.measure import harness

PRESET_ENV = "BENCH_SUITE_ASV_PRESET"
BACKENDS_ENV = "BENCH_SUITE_ASV_BACKENDS"
#: "1" or "0" overrides the probe for a GPU (which decides whether peak memory is tracked).
GPU_ENV = "BENCH_SUITE_ASV_GPU"
#: Seconds that one ``track_*`` call may spend measuring (the suite's own stopping rule).
TRACK_BUDGET_ENV = "BENCH_SUITE_ASV_TRACK_BUDGET"
DEFAULT_TRACK_BUDGET_S = 0.25

#: Bump when what a case id names changes in a way the definitions below do not show (the
#: way a backward op is timed, say): every op's asv history then starts afresh.
CASE_SCHEME = 1

SEED = 0  # the CLI's default seed: asv times the same inputs as `bench-suite run`
#: Rounds (processes) per benchmark and seconds of sampling per benchmark over all rounds.
ASV_ROUNDS = 4
ASV_TIME_S = 1.0


def class_name(op: str) -> str:
    """``matmul_backward`` -> ``MatmulBackward``: the asv class of an op."""
    return "".join(part.capitalize() for part in op.split("_"))


def op_version(op: str) -> str:
    """A hash of what the op's cases compute and count: the asv ``version`` of its class.

    It covers the case-id scheme, the op's family, its inputs and outputs, its FLOP and byte
    counts and the tolerance its results are held to; not the adapter's code.
    """
    building_block = op_family(op) in ("matmul", "elementwise")
    probe = Case(op, "numpy", "float64", (2, 3, 5, 7)[: op_ndim(op)])
    doc: dict[str, object] = {
        "scheme": CASE_SCHEME,
        "op": op,
        "info": list(OP_INFO[op]),
        "inputs": {k: list(v) for k, v in ops.input_shapes(probe).items()},
        "outputs": {k: list(v) for k, v in ops.output_shapes(probe).items()},
        "flops": ops.flops(probe),
        "bytes": ops.bytes_moved(probe),
        "tolerance": ops.TOLERANCE,
    }
    axis = variant_axis(op)
    if axis is not None:  # (the building blocks have none: their hashes stay as they were)
        doc["variants"] = [axis.name, list(axis.values), axis.default]
    if not building_block:  # how the newer ops are checked is part of what they measure
        doc["check"] = {"tolerance": ops.tolerance(probe), "learning_rate": ops.LEARNING_RATE,
                        "ks": [ops.KS_SIGMAS, ops.KS_ROUNDING]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def selected_cases(environ: Mapping[str, str] = os.environ) -> tuple[str, list[Case]]:
    """The grid's name and cases, as chosen by the environment."""
    name = environ.get(PRESET_ENV, "").strip() or grid.DEFAULT_GRID
    backends_text = environ.get(BACKENDS_ENV, "").strip()
    backends = parse_backends(backends_text) if backends_text else None
    return name, grid.grid_cases(grid.grid_sweep(name), backends)


def gpu_present(environ: Mapping[str, str] = os.environ, dev: Path = Path("/dev")) -> bool:
    """Whether an NVIDIA GPU is visible, without importing torch (discovery stays fast)."""
    flag = environ.get(GPU_ENV, "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    if environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return (dev / "nvidiactl").exists() or any(dev.glob("nvidia[0-9]*"))


def track_budget(environ: Mapping[str, str] = os.environ) -> float:
    text = environ.get(TRACK_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_TRACK_BUDGET_S
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{TRACK_BUDGET_ENV}={text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise UsageError(f"{TRACK_BUDGET_ENV}={text!r} is out of range (0..3600 s)")
    return value


# --- the generated classes ------------------------------------------------------------------


def _skip_here(reason: str) -> BaseException:
    """The exception that makes asv show n/a from inside a benchmark body."""
    try:
        from asv_runner.benchmarks.mark import SkipNotImplemented
    except ImportError:  # called outside asv (tests): the plain form asv would also accept in setup
        return NotImplementedError(reason)
    return SkipNotImplemented(reason)


#: The case prepared in this process. asv (asv_runner 0.3) re-runs ``setup`` and
#: ``teardown`` around every sample of a benchmark that has a ``setup``; preparing and
#: verifying anew each time would cost more than the op and leave cold caches, so the
#: prepared case is kept for the process (asv spawns one per parameter combination).
_CACHED: dict[str, harness.ReadyCase] = {}


def _prepared(case: Case) -> harness.ReadyCase:
    ready = _CACHED.get(case.id)
    if ready is not None:
        return ready
    release()
    try:
        ready = harness.ready(case, SEED)
    except harness.Unavailable as exc:
        raise NotImplementedError(f"{case.id}: {exc}") from None
    except harness.WrongResult as exc:
        raise RuntimeError(str(exc)) from None  # a failure, never n/a
    _CACHED[case.id] = ready
    return ready


def release() -> None:
    """Release the prepared case of this process (restores threads, frees device memory)."""
    while _CACHED:
        _case_id, ready = _CACHED.popitem()
        ready.close()


atexit.register(release)


class _CaseBenchmark:
    """What every generated class shares. Subclasses set the class variables below."""

    #: asv's own unit of replication, as the suite's: ``rounds`` processes per benchmark,
    #: which ``asv continuous --interleave-rounds`` alternates between the two commits so that
    #: drift of the machine hits both. Four, not asv's default two, so that there is more than
    #: one alternation; each round then takes a quarter of the time: one call per sample (asv
    #: times calls one by one when a class has a setup), 5 to 100 samples, at most 0.25 s.
    rounds: ClassVar[int] = ASV_ROUNDS
    repeat: ClassVar[tuple[int, int, float]] = (5, 100, ASV_TIME_S / ASV_ROUNDS)

    _op: ClassVar[str]
    _grid: ClassVar[str]
    _valid: ClassVar[frozenset[str]]
    param_names: ClassVar[list[str]]
    _ready: harness.ReadyCase | None = None
    _call: Callable[[], object]

    def _case(self, values: Sequence[object]) -> Case:
        try:
            case = grid.case_from_values(self._op, self.param_names, values)
        except UsageError as exc:
            raise NotImplementedError(f"not a case: {exc}") from None
        if case.id not in self._valid:
            raise NotImplementedError(f"{case.id} is not in the {self._grid!r} grid")
        return case

    def setup(self, *values: object) -> None:
        case = self._case(values)
        self._ready = _prepared(case)
        self._call = self._ready.call  # time_op's one indirection: asv times calls one by one
        if self._ready.reset is not None:
            # A training step changes its weights: put them back. asv re-runs setup before
            # every timed call of a class with a setup, so each call trains the same step.
            self._ready.reset()
        harness.set_synchronize(self._ready.synchronize)

    def teardown(self, *values: object) -> None:
        # asv re-runs teardown and setup between samples; the prepared case stays cached
        # for the next setup (see _prepared) and is released at exit.
        harness.set_synchronize(None)
        self._ready = None

    def _ready_case(self) -> harness.ReadyCase:
        if self._ready is None:  # pragma: no cover - asv runs setup first
            raise RuntimeError("setup did not run")
        return self._ready

    def time_op(self, *values: object) -> None:
        self._call()

    def _median_s(self) -> float:
        config = SamplingPlan(time_budget_s=track_budget(), target_rel_ci=0.02, min_samples=5,
                              warmup_s=0.01)
        return stats.summarize(self._ready_case().measure(config).samples_s).median


def _track_gflops(self: _CaseBenchmark, *values: object) -> float:
    ready = self._ready_case()
    return ops.flops(ready.case) / self._median_s() / 1e9


def _track_gbps(self: _CaseBenchmark, *values: object) -> float:
    ready = self._ready_case()
    return ops.bytes_moved(ready.case) / self._median_s() / 1e9


def _track_peak_gpu_mem(self: _CaseBenchmark, *values: object) -> int:
    ready = self._ready_case()
    if not is_cuda_backend(ready.case.backend):
        raise _skip_here(f"{ready.case.id}: peak GPU memory is tracked for CUDA cases only")
    ready.call()
    ready.synchronize()
    peak = ready.peak_memory_bytes()
    if peak is None:  # pragma: no cover - CUDA backends always report it
        raise _skip_here(f"{ready.case.id}: this backend reports no peak memory")
    return peak


_track_gflops.unit = "GFLOP/s"  # type: ignore[attr-defined]
_track_gbps.unit = "GB/s"  # type: ignore[attr-defined]
_track_peak_gpu_mem.unit = "bytes"  # type: ignore[attr-defined]


def make_class(op: str, cases: Sequence[Case], grid_name: str, module: str, gpu: bool) -> type:
    """The asv benchmark class of one op over ``cases`` (those of other ops are ignored)."""
    names, params = grid.parameter_grid(op, cases)
    mine = [c for c in cases if c.op == op]
    ns: dict[str, Any] = {
        "__module__": module,
        "__doc__": f"{op} over the {grid_name!r} grid ({len(mine)} cases), generated by "
                   "bench_suite.frontends.asv_adapter.",
        "_op": op,
        "_grid": grid_name,
        "_valid": frozenset(c.id for c in mine),
        "params": params,
        "param_names": names,
        "version": op_version(op),
        "timer": staticmethod(harness.synchronized_perf_counter),
    }
    if OP_RATE[op] == "gflops":
        ns["track_gflops"] = _track_gflops
    else:
        ns["track_gbps"] = _track_gbps
    if gpu and any(is_cuda_backend(c.backend) for c in mine):
        ns["track_peak_gpu_mem"] = _track_peak_gpu_mem
    return type(class_name(op), (_CaseBenchmark,), ns)


def benchmark_classes(module: str, environ: Mapping[str, str] = os.environ) -> dict[str, type]:
    """Every op's class, by class name, for ``globals().update(...)`` in ``benchmarks/``."""
    grid_name, cases = selected_cases(environ)
    gpu = gpu_present(environ)
    by_op = grid.cases_by_op(cases)
    return {class_name(op): make_class(op, by_op[op], grid_name, module, gpu)
            for op in OPS if op in by_op}
