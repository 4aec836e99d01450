"""Test doubles for the asv and pytest-benchmark front ends: backends that give a wrong
result, that are never available, or that pretend to be a CUDA card (numpy arithmetic with a
counted device barrier and a peak-memory figure), so the front ends' CUDA paths run without a
GPU. Subprocesses install them with :func:`install`: asv's benchmark processes from a
benchmark module, a nested pytest by loading this module as a plugin
(``-p tests.frontend_doubles``) with ``$BENCH_SUITE_TEST_DOUBLES`` naming the modes."""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from pathlib import Path

import numpy as np

from bench_suite.backends.base import Availability, Backend, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.core import ops
from bench_suite.core.cases import Case

#: Comma-separated modes of install() applied when this module is loaded as a pytest plugin.
DOUBLES_ENV = "BENCH_SUITE_TEST_DOUBLES"
#: Where FakeCuda appends one line per synchronize (for a parent process to count).
SYNC_LOG_ENV = "BENCH_SUITE_TEST_SYNC_LOG"


class WrongNumpy(NumpyBackend):
    """numpy, but every result is off by one: verification must catch it."""

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        p = super().prepare(case, inputs)
        run_once = p.run_once
        p.run_once = lambda: {k: v + 1.0 for k, v in run_once().items()}
        return p


class UnavailableNumpy(NumpyBackend):
    def availability(self, case: Case) -> Availability:
        return Availability.no("fake: this device is switched off")


class FakeCuda(NumpyBackend):
    """A 'CUDA' backend doing numpy arithmetic: counts barriers, reports a peak memory."""

    def __init__(self, name: str = "torch-cuda"):
        self.name = name
        self.device = "cuda:0"
        self.syncs = 0
        self.peak_resets = 0
        self._case: Case | None = None

    def availability(self, case: Case) -> Availability:
        self._case = case
        return Availability.yes()

    def threads(self, count: int | None):  # type: ignore[no-untyped-def]
        import contextlib

        return contextlib.nullcontext(None)

    def synchronize(self) -> None:
        self.syncs += 1
        log = os.environ.get(SYNC_LOG_ENV)
        if log:
            with open(log, "a", encoding="ascii") as fh:
                fh.write("sync\n")

    def reset_peak_memory(self) -> None:
        self.peak_resets += 1

    def peak_memory_bytes(self) -> int | None:
        return ops.footprint_bytes(self._case) if self._case is not None else None

    def device_name(self) -> str:
        return "Fake GPU"


def install(factories: MutableMapping[str, Callable[[str], Backend]], mode: str) -> None:
    """Replace backends in ``factories``: ``wrong`` (numpy gives wrong results), ``unavailable``
    (numpy is never available), ``cuda`` (torch-cuda is a FakeCuda)."""
    if mode == "wrong":
        factories["numpy"] = lambda _name: WrongNumpy()
    elif mode == "unavailable":
        factories["numpy"] = lambda _name: UnavailableNumpy()
    elif mode == "cuda":
        factories["torch-cuda"] = lambda name: FakeCuda(name)
    else:
        raise ValueError(mode)


def sync_count(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def pytest_configure(config: object) -> None:
    """As a plugin of a nested pytest: install the doubles named by $BENCH_SUITE_TEST_DOUBLES."""
    from bench_suite import backends

    for mode in filter(None, os.environ.get(DOUBLES_ENV, "").split(",")):
        install(backends.FACTORIES, mode)
