"""A numpy backend whose timed calls do a fixed share of extra real work, for A/B tests.

Reaches worker processes through ``BENCH_SUITE_BACKEND_PLUGINS=tests.slowed:register``
(``$BENCH_SUITE_SLOWDOWN``: the extra share, default 0.10; ``$BENCH_SUITE_SLOWED_OPS``: the ops
it applies to, default all). ``$BENCH_SUITE_SLEEP_S`` adds a sleep to every timed call of every
op: a call then lasts about that long whatever else the machine runs, which keeps tests of the
A/B machinery steady on a loaded test machine. Verification runs the real op untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from bench_suite.backends import Backend, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.core.cases import Case

PLUGIN = "tests.slowed:register"


class SlowedNumpy(NumpyBackend):
    def __init__(self, share: float, ops: frozenset[str], sleep_s: float = 0.0):
        self.share, self.ops, self.sleep_s = share, ops, sleep_s

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        p = super().prepare(case, inputs)
        call, clock, sleep_s = p.call, time.perf_counter_ns, self.sleep_s
        share = 0.0 if self.ops and case.op not in self.ops else self.share

        def slowed() -> object:
            t0 = clock()
            out = call()
            if sleep_s:
                time.sleep(sleep_s)
            t1 = clock()
            end = t1 + share * (t1 - t0)
            while clock() < end:  # busy: real work on the core, as slower code would do
                pass
            return out

        return Prepared(slowed, p.run_once, p.inputs, p.release)


def register(factories: dict[str, Callable[[str], Backend]]) -> None:
    share = float(os.environ.get("BENCH_SUITE_SLOWDOWN", "0.10"))
    ops = frozenset(filter(None, os.environ.get("BENCH_SUITE_SLOWED_OPS", "").split(",")))
    sleep_s = float(os.environ.get("BENCH_SUITE_SLEEP_S", "0"))
    factories["numpy"] = lambda _name: SlowedNumpy(share, ops, sleep_s)
