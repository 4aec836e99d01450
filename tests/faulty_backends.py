"""A numpy backend that fails on purpose at chosen sizes, for the fault-isolation tests.

It reaches worker processes through the testing hook
``BENCH_SUITE_BACKEND_PLUGINS=tests.faulty_backends:register`` (see ``bench_suite.backends``).
Every other size is measured by the real numpy backend.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench_suite.backends import Backend, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.core.cases import Case

PLUGIN = "tests.faulty_backends:register"
#: A hanging case writes its process id here (if set), so a test can check it was killed.
PID_FILE_ENV = "BENCH_SUITE_TEST_PID_FILE"

#: square size m -> how a case of that size fails (inside ``prepare``, before any timing)
FAULTS: dict[int, str] = {
    17: "abort",  # os.abort(): SIGABRT, as a C++ std::terminate or a failed CUDA assert
    19: "memory_error",  # a Python MemoryError, as an allocation that does not fit
    23: "hang",  # never returns, as a deadlocked kernel or collective
    29: "segfault",  # SIGSEGV, as a bad pointer in an extension
    31: "exit",  # a library that calls exit(3)
}


class FaultyNumpy(NumpyBackend):
    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        fault = FAULTS.get(case.m)
        if fault == "abort":
            os.abort()
        elif fault == "memory_error":
            raise MemoryError("cannot allocate 1.00 TiB (injected)")
        elif fault == "hang":
            if os.environ.get(PID_FILE_ENV):
                Path(os.environ[PID_FILE_ENV]).write_text(str(os.getpid()))
            while True:
                time.sleep(1)
        elif fault == "segfault":
            ctypes.string_at(0)
        elif fault == "exit":
            os._exit(3)
        return super().prepare(case, inputs)


def register(factories: dict[str, Callable[[str], Backend]]) -> None:
    factories["numpy"] = lambda _name: FaultyNumpy()
