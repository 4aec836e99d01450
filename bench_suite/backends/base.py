"""The Backend protocol: what the runner, asv and pytest-benchmark need of a backend.

A backend turns a :class:`~bench_suite.core.cases.Case` into a prepared zero-argument callable
with its inputs already on the device, says whether it can run a case at all, applies the
case's thread count, and provides the timer and memory figures that fit its device.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench_suite.core.cases import Case
from bench_suite.core.timing import BlockTimer, Clock
from bench_suite.env.system import host_available_bytes


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True)

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass
class Prepared:
    """A case made ready: inputs allocated on the device, outputs preallocated where the op
    allows it. Nothing in ``call`` allocates inputs or copies between host and device."""

    call: Callable[[], object]  # one call of the op: what is timed
    run_once: Callable[[], dict[str, np.ndarray]]  # one call; results as float64 host arrays
    inputs: dict[str, np.ndarray]  # float64 host copies of the inputs as the device holds them
    release: Callable[[], None] = field(default=lambda: None)
    #: The outputs of one call's return value as float64 host arrays (None: not offered).
    #: With ``poison`` (fill them with NaN), a CUDA graph's replay is checked like a call.
    read: Callable[[Any], dict[str, np.ndarray]] | None = None
    poison: Callable[[Any], None] | None = None
    #: For an op that changes its own inputs (a training step updates its weights): puts them
    #: back. Every timer runs it before every timed call, outside the timed region, so each
    #: call does the same work on the same data (asv: in ``setup``, which it re-runs before
    #: every call; pytest-benchmark: as ``pedantic``'s setup).
    reset: Callable[[], None] | None = None
    #: Parts of one call that can be timed on their own (a training step's forward, backward
    #: and update), each as ``Phase``; the runner times them after the call and records them.
    phases: Mapping[str, Phase] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """One part of a call: ``call`` is timed; ``setup`` runs before each timed call, outside
    the timed region (the reset and the parts before this one)."""

    call: Callable[[], object]
    setup: Callable[[], None] | None = None


class Backend(ABC):
    """One place where cases run: ``numpy``, ``torch-cpu``, ``torch-cuda[:N]``."""

    name: str
    device: str  # "cpu" or "cuda:N"

    @abstractmethod
    def availability(self, case: Case) -> Availability:
        """Whether this backend can run the case here, and why not."""

    @abstractmethod
    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        """Move float64 host ``inputs`` to the device in the case's dtype; build the callable."""

    @abstractmethod
    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        """Apply a thread count (None: all cores) for the duration; yields the count in force."""

    def synchronize(self) -> None:
        """Wait for all work queued on the device (a no-op on the CPU)."""

    def timer(self, clock: Clock) -> BlockTimer:
        from bench_suite.core.timing import HostTimer

        return HostTimer(clock, self.synchronize)

    def reset_peak_memory(self) -> None:
        """Start counting the device's peak memory afresh (CUDA only)."""

    def peak_memory_bytes(self) -> int | None:
        """Device memory at its peak since :meth:`reset_peak_memory`, where it can be known."""
        return None

    def device_name(self) -> str:
        return self.device

    def free_memory_bytes(self) -> int | None:
        return host_available_bytes()


def no_tf32(backend: str) -> Availability:
    """The reason every CPU backend gives for a ``tf32`` case."""
    return Availability.no(f"tf32 is float32 on CUDA tensor cores; {backend} has no TF32 math "
                           "(use float32)")


def memory_check(need: int, free: int | None, where: str) -> Availability:
    """Skip a case whose buffers would not fit (keeping a margin for the runtime itself)."""
    if free is not None and need > 0.8 * free:
        return Availability.no(
            f"needs {need / 2**30:.2f} GiB, {where} has {free / 2**30:.2f} GiB free"
        )
    return Availability.yes()


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[int | None]:
    """Limit the BLAS libraries that threadpoolctl can see (numpy's OpenBLAS) to ``count``.

    Yields the count in force afterwards, read back from the libraries, or None when there is
    no BLAS threadpool to control.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=count, user_api="blas"):
        applied = {m["num_threads"] for m in threadpool_info() if m.get("user_api") == "blas"}
        yield applied.pop() if len(applied) == 1 else (None if not applied else min(applied))
