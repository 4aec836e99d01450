"""A numpy backend whose timed calls do a fixed share of extra real work, for A/B tests.

Reaches worker processes through ``BENCH_SUITE_BACKEND_PLUGINS=tests.slowed:register``
(``$BENCH_SUITE_SLOWDOWN``: the extra share, default 0.10; ``$BENCH_SUITE_SLOWED_OPS``: the ops
it applies to, default all). Verification runs the real op untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from bench_suite.backends import Backend, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.cases import Case

PLUGIN = "tests.slowed:register"


class SlowedNumpy(NumpyBackend):
    def __init__(self, share: float, ops: frozenset[str]):
        self.share, self.ops = share, ops

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        p = super().prepare(case, inputs)
        if self.ops and case.op not in self.ops:
            return p
        call, share, clock = p.call, self.share, time.perf_counter_ns

        def slowed() -> object:
            t0 = clock()
            out = call()
            t1 = clock()
            end = t1 + share * (t1 - t0)
            while clock() < end:  # busy: real work on the core, as slower code would do
                pass
            return out

        return Prepared(slowed, p.run_once, p.inputs, p.release)


def register(factories: dict[str, Callable[[str], Backend]]) -> None:
    share = float(os.environ.get("BENCH_SUITE_SLOWDOWN", "0.10"))
    ops = frozenset(filter(None, os.environ.get("BENCH_SUITE_SLOWED_OPS", "").split(",")))
    factories["numpy"] = lambda _name: SlowedNumpy(share, ops)
