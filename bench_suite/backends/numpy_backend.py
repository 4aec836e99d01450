"""NumPy on the CPU. Its backward ops are the gradients derived by hand from the chain rule,
which the reports set beside torch's autograd (what autograd costs over hand-derived code)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from bench_suite.backends import numpy_ops
from bench_suite.backends.base import (
    Availability,
    Backend,
    Prepared,
    blas_threads,
    memory_check,
    no_tf32,
)
from bench_suite.core import ops
from bench_suite.core.cases import Case, cpu_count
from bench_suite.env.system import cpu_model

_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"

    def availability(self, case: Case) -> Availability:
        if case.dtype == "tf32":
            return no_tf32(self.name)
        if case.dtype not in _DTYPES:
            return Availability.no(f"numpy has no {case.dtype}")
        refused = numpy_ops.availability(case)
        if refused is not None:
            return refused
        if case.threads is not None and case.threads > cpu_count():
            return Availability.no(f"{case.threads} threads > {cpu_count()} cores available")
        # device buffers, plus the float64 masters and reference kept for verification
        need = ops.footprint_bytes(case) + 2 * ops.footprint_bytes(case) * 8 // ops.ITEMSIZE[case.dtype]
        return memory_check(need, self.free_memory_bytes(), "the host")

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return _numpy_threads(count)

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        if case.op in numpy_ops.OPS:  # the layer, training step, bmm and random fill
            return numpy_ops.prepare(case, inputs)
        dt = _DTYPES[case.dtype]
        x = {k: np.ascontiguousarray(v, dtype=dt) for k, v in inputs.items()}
        # Outputs start as NaN ("poisoned"): an element the op fails to write fails verification.
        out = {k: np.full(s, np.nan, dtype=dt) for k, s in ops.output_shapes(case).items()}
        a, b = x["A"], x["B"]
        if case.op == "matmul":
            c = out["C"]

            def call() -> object:
                return np.matmul(a, b, out=c)
        elif case.op == "hadamard":
            c = out["C"]

            def call() -> object:
                return np.multiply(a, b, out=c)
        elif case.op == "matmul_backward":
            dc, da, db = x["dC"], out["dA"], out["dB"]
            bt, at = b.T, a.T  # views: no copy, BLAS reads them transposed

            def call() -> object:
                np.matmul(dc, bt, out=da)  # dA = dC·Bᵀ
                return np.matmul(at, dc, out=db)  # dB = Aᵀ·dC
        elif case.op == "hadamard_backward":
            dc, da, db = x["dC"], out["dA"], out["dB"]

            def call() -> object:
                np.multiply(dc, b, out=da)  # dA = dC∘B
                return np.multiply(dc, a, out=db)  # dB = dC∘A
        else:  # pragma: no cover - Case validates op names
            raise AssertionError(case.op)

        def run_once() -> dict[str, np.ndarray]:
            call()
            return {k: v.astype(np.float64) for k, v in out.items()}

        return Prepared(call, run_once, {k: v.astype(np.float64) for k, v in x.items()})

    def device_name(self) -> str:
        return cpu_model()


@contextlib.contextmanager
def _numpy_threads(count: int | None) -> Iterator[int | None]:
    with blas_threads(count or cpu_count()) as applied:
        yield applied


