"""Backend plugins for scripts/trust.py (through ``BENCH_SUITE_BACKEND_PLUGINS``).

* ``slow_numpy``: every timed call of the numpy backend does ``$TRUST_SLOWDOWN`` (default 0.10)
  of its own duration again as busy work on the same core: a candidate 10% slower by real work.
* ``busy_neighbour``: while a case of the numpy or torch-cpu backend is prepared, verified and
  timed, a busy loop runs in another process (started in ``prepare``, killed in ``release``):
  a neighbour that holds a core exactly while the candidate measures.

The worker processes import this module, so it must be on their path: trust.py puts the
scripts folder on ``PYTHONPATH`` of the candidate's wrapper.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench_suite.backends import Backend, Prepared


def _wrap_prepare(factory: Callable[[str], Backend], wrap: Callable[[Prepared], Prepared]) -> Callable[[str], Backend]:
    def make(name: str) -> Backend:
        backend = factory(name)
        original = backend.prepare

        def prepare(case: Any, inputs: Any) -> Prepared:
            return wrap(original(case, inputs))

        backend.prepare = prepare  # type: ignore[method-assign]
        return backend

    return make


def slow_numpy(factories: dict[str, Callable[[str], Backend]]) -> None:
    share = float(os.environ.get("TRUST_SLOWDOWN", "0.10"))
    clock = time.perf_counter_ns

    def wrap(p: Prepared) -> Prepared:
        call = p.call

        def slowed() -> object:
            t0 = clock()
            out = call()
            t1 = clock()
            end = t1 + share * (t1 - t0)
            while clock() < end:
                pass
            return out

        return Prepared(slowed, p.run_once, p.inputs, p.release)

    factories["numpy"] = _wrap_prepare(factories["numpy"], wrap)


def busy_neighbour(factories: dict[str, Callable[[str], Backend]]) -> None:
    def wrap(p: Prepared) -> Prepared:
        loop = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        time.sleep(0.05)  # let it take a core

        def release() -> None:
            loop.kill()
            loop.wait()
            p.release()

        return Prepared(p.call, p.run_once, p.inputs, release)

    for name in ("numpy", "torch-cpu"):
        factories[name] = _wrap_prepare(factories[name], wrap)
