"""A numpy backend that kills its own process (SIGKILL, as the OOM killer or a crashed node
would) on one rank at one size, for the tests that start real torchrun launches.

Reached through ``BENCH_SUITE_BACKEND_PLUGINS=tests.rank_faults:register``; the rank and the
size come from ``BENCH_SUITE_TEST_KILL_RANK`` and ``BENCH_SUITE_TEST_KILL_SIZE``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import numpy as np

from bench_suite.backends import Backend, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.cases import Case

PLUGIN = "tests.rank_faults:register"
RANK_ENV = "BENCH_SUITE_TEST_KILL_RANK"
SIZE_ENV = "BENCH_SUITE_TEST_KILL_SIZE"


class KilledOnOneRank(NumpyBackend):
    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        if os.environ.get("RANK") == os.environ.get(RANK_ENV) and str(case.m) == os.environ.get(SIZE_ENV):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().prepare(case, inputs)


def register(factories: dict[str, Callable[[str], Backend]]) -> None:
    factories["numpy"] = lambda _name: KilledOnOneRank()
