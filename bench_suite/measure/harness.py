"""A case made ready to time by someone else's harness (asv, pytest-benchmark).

The runner measures a case in one call (:func:`bench_suite.measure.runner.run_case`). A foreign
harness instead splits the work into its own setup, timed body and teardown, so this module
offers the same sequence in steps: availability -> seeded inputs -> ``backend.prepare`` ->
verification against the float64 reference -> thread count applied until :meth:`close`.
It uses the same backend objects, the same ``ops`` inputs and reference, the same tolerance
and the same seed (0) as the CLI, so every front end times the same, verified work.

Problems are exceptions here, for the harness to translate: :class:`Unavailable` (asv: n/a,
pytest: skip) and :class:`WrongResult` (a failure everywhere: a wrong answer is never timed).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench_suite.backends import Backend, Prepared, get_backend
from bench_suite.core import ops
from bench_suite.core.cases import Case, is_cuda_backend
from bench_suite.core.timing import Clock, SamplingPlan, Timing, measure
from bench_suite.env.system import settle
from bench_suite.measure.phases import with_reset

# --- a host clock that waits for the device ----------------------------------------------

def _no_sync() -> None:
    return None


_synchronize: Callable[[], None] = _no_sync


def set_synchronize(fn: Callable[[], None] | None) -> None:
    """The barrier :func:`synchronized_perf_counter` waits on (the case in flight's device).

    Foreign harnesses take a timer before they know the case (asv reads a class attribute,
    pytest-benchmark a marker), so the timer is one function and the case sets its barrier.
    """
    global _synchronize
    _synchronize = fn or _no_sync


def synchronized_perf_counter() -> float:
    """``time.perf_counter()`` read after the device has finished all queued work.

    A host clock around unsynchronized GPU work times the launch, not the kernel; on the CPU
    the barrier is a no-op call.
    """
    _synchronize()
    return time.perf_counter()


class Unavailable(Exception):
    """The backend cannot run this case here (no CUDA, a dtype it lacks, too little memory)."""


class WrongResult(Exception):
    """The case's result differs from the float64 reference beyond its dtype's tolerance.

    Carries what the check found, so the runner can record it in the measurement."""

    def __init__(self, message: str, rel_error: float, tolerance: float, check: str,
                 threads: int | None, device_name: str):
        super().__init__(message)
        self.rel_error = rel_error
        self.tolerance = tolerance
        self.check = check
        self.threads = threads
        self.device_name = device_name


@dataclass
class ReadyCase:
    """A prepared, verified case with its thread count in force until :meth:`close`."""

    case: Case
    backend: Backend
    prepared: Prepared
    rel_error: float
    tolerance: float
    check: str
    threads: int | None  # the count in force, read back from the libraries
    device_name: str
    _stack: contextlib.ExitStack = field(repr=False, default_factory=contextlib.ExitStack)

    @property
    def call(self) -> Callable[[], object]:
        """One call of the op: what the harness times."""
        return self.prepared.call

    @property
    def reset(self) -> Callable[[], None] | None:
        """For an op that changes its own inputs (``mlp_step``): restores them. A harness runs
        it before every timed call, outside the timed region; None for every other op."""
        return self.prepared.reset

    def synchronize(self) -> None:
        self.backend.synchronize()

    def timer(self, clock: Clock = time.perf_counter_ns) -> Any:
        """The suite's own block timer for this backend (CUDA events on a GPU); for an op with
        a ``reset``, one that runs it before every call, outside the timed region."""
        timer = self.backend.timer(clock)
        if self.prepared.reset is not None:
            with_reset(timer, self.prepared.reset)
        return timer

    def measure(self, config: SamplingPlan, clock: Clock = time.perf_counter_ns) -> Timing:
        """Time the call with the suite's own loop (warm-up, calibration, stopping rule)."""
        return measure(self.prepared.call, self.timer(clock), config, clock)

    def warm_up(self, seconds: float, min_calls: int = 3, clock: Clock = time.perf_counter_ns) -> int:
        """Call the op for at least ``seconds`` and ``min_calls`` calls; returns the count.

        Harnesses that size their loops from the first call they time (pytest-benchmark) are
        handed a warm op: caches, clocks and allocator pools settled, lazy kernels loaded.
        """
        calls, start, limit = 0, clock(), seconds * 1e9
        reset = self.prepared.reset
        while calls < min_calls or clock() - start < limit:
            if reset is not None:
                reset()
            self.prepared.call()
            calls += 1
        self.synchronize()
        return calls

    def peak_memory_bytes(self) -> int | None:
        """Device memory at its peak since just before the inputs were made (CUDA only)."""
        return self.backend.peak_memory_bytes()

    def close(self) -> None:
        """Restore the thread count and free the device buffers."""
        try:
            self._stack.close()
        finally:
            self.prepared.release()
            if is_cuda_backend(self.case.backend):
                _release_cuda()

    def __enter__(self) -> ReadyCase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ready(case: Case, seed: int = 0, backend: Backend | None = None) -> ReadyCase:
    """Prepare and verify ``case``; its thread count stays in force until ``close()``.

    Raises :class:`Unavailable` or :class:`WrongResult`; anything else (a CUDA error, out of
    memory) propagates for the harness to record as a failure.
    """
    backend = backend or get_backend(case.backend)
    avail = backend.availability(case)
    if not avail.ok:
        raise Unavailable(avail.reason)
    tol = ops.tolerance(case)
    inputs = ops.make_inputs(case, seed)
    backend.reset_peak_memory()
    prepared = backend.prepare(case, inputs)
    del inputs  # the float64 masters; prepared.inputs holds what the device holds
    try:
        device_name = backend.device_name()
        with backend.threads(case.threads) as applied:
            outputs = prepared.run_once()
        # The reference runs outside the case's thread count: all cores for a large float64
        # product, one for a small one, whose BLAS pool would otherwise spin for a tenth of a
        # second afterwards, on the cores the case is about to be timed on.
        with _reference_threads(case):
            err, check = ops.relative_error(case, prepared.inputs, outputs, seed)
        del outputs
        if not err <= tol:  # "not <=" so that NaN fails too
            raise WrongResult(f"wrong result: relative error {err:.3g} > tolerance {tol:g}",
                              err, tol, check, applied, device_name)
        stack = contextlib.ExitStack()
        applied = stack.enter_context(backend.threads(case.threads))
        # the reference's BLAS pool (all cores) may still be spinning: let it sleep before
        # anyone times this case, or its first samples share their cores with it
        settle()
    except BaseException:
        prepared.release()
        raise
    return ReadyCase(case, backend, prepared, err, tol, check, applied, device_name, stack)


#: References of at most this many FLOPs (a 1024³ float32 matmul's) run on one BLAS thread.
SMALL_REFERENCE_FLOPS = 2.2e9


def _reference_threads(case: Case) -> contextlib.AbstractContextManager[object]:
    if ops.flops(case) > SMALL_REFERENCE_FLOPS:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _release_cuda() -> None:
    gc.collect()
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # nothing to release where CUDA itself is broken
        pass
