"""A numpy backend that kills its own process (SIGKILL, as the OOM killer or a crashed node
would) on one rank at one size, for the tests that start real torchrun launches.

Reached through ``BENCH_SUITE_BACKEND_PLUGINS=tests.rank_faults:register``; the rank and the
size come from ``BENCH_SUITE_TEST_KILL_RANK`` and ``BENCH_SUITE_TEST_KILL_SIZE``. So that the
test does not depend on which rank runs faster, the rank dies only once a file matching
``BENCH_SUITE_TEST_KILL_AFTER`` (a glob: the other rank's journal) holds a measurement.
"""

from __future__ import annotations

import glob
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench_suite.backends import Backend, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.core.cases import Case

PLUGIN = "tests.rank_faults:register"
RANK_ENV = "BENCH_SUITE_TEST_KILL_RANK"
SIZE_ENV = "BENCH_SUITE_TEST_KILL_SIZE"
AFTER_ENV = "BENCH_SUITE_TEST_KILL_AFTER"


def _wait_for_a_measurement(pattern: str, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for path in glob.glob(pattern):
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError:
                continue
            if path.endswith(".json") or '{"measurement":' in text:
                return
        time.sleep(0.05)


class KilledOnOneRank(NumpyBackend):
    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        if os.environ.get("RANK") == os.environ.get(RANK_ENV) and str(case.m) == os.environ.get(SIZE_ENV):
            if os.environ.get(AFTER_ENV):
                _wait_for_a_measurement(os.environ[AFTER_ENV])
            os.kill(os.getpid(), signal.SIGKILL)
        return super().prepare(case, inputs)


def register(factories: dict[str, Callable[[str], Backend]]) -> None:
    factories["numpy"] = lambda _name: KilledOnOneRank()
