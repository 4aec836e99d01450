"""Every op on every backend and dtype against the float64 reference; work counts; the
runner's verify-before-time rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench_suite.backends import get_backend
from bench_suite.backends.base import Availability, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.core import ops
from bench_suite.core.cases import DTYPES, LINK_OPS, OPS, Case, fixed_grad_mode, op_family
from bench_suite.core.timing import SamplingPlan
from bench_suite.measure.runner import RunOptions, run_case

FAST = RunOptions(seed=3, timing=SamplingPlan(time_budget_s=0.02, min_samples=3, warmup_s=0,
                                              min_block_s=1e-4))
#: By op family; every dimension different, so a transposed or mixed-up index cannot pass.
SHAPES = {"matmul": (24, 40, 16), "elementwise": (24, 16), "linear": (24, 40, 16),
          "mlp": (24, 16), "bmm": (3, 8, 6, 5), "transfer": (24, 16), "create": (64, 64)}


def _case(op: str, backend: str, dtype: str, grad: str = "no_grad", variant: str = "") -> Case:
    return Case(op, backend, dtype, SHAPES[op_family(op)], threads=1, grad_mode=grad,
                variant=variant)


# Copies across the host-device link have no CPU case (tests/test_new_ops.py: skipped with
# the reason, and run on a fake CUDA device).
CPU_GRID = [
    (op, backend, dtype, grad)
    for op, backend, dtype in itertools.product([o for o in OPS if o not in LINK_OPS],
                                                ("numpy", "torch-cpu"), DTYPES)
    for grad in (("no_grad", "grad") if backend != "numpy" and fixed_grad_mode(op) is None
                 else (fixed_grad_mode(op) or "no_grad",))
]


@pytest.mark.parametrize("op, backend, dtype, grad", CPU_GRID)
def test_every_cpu_case_matches_the_reference(op: str, backend: str, dtype: str, grad: str) -> None:
    case = _case(op, backend, dtype, grad)
    b = get_backend(backend)
    avail = b.availability(case)
    if backend == "numpy" and dtype == "bfloat16":
        assert avail == Availability(False, "numpy has no bfloat16")
        return
    if dtype == "tf32":  # TF32 is a CUDA tensor-core mode
        assert not avail.ok and avail.reason.startswith("tf32 is float32 on CUDA tensor cores")
        return
    assert avail.ok, avail.reason
    prepared = b.prepare(case, ops.make_inputs(case, seed=1))
    with b.threads(case.threads):
        out = prepared.run_once()
    assert set(out) == set(ops.output_shapes(case))
    for name, arr in out.items():
        assert arr.shape == ops.output_shapes(case)[name]
        assert arr.dtype == np.float64
    err, method = ops.relative_error(case, prepared.inputs, out)
    assert method == ("ks" if op == "create" else "full")
    assert err <= ops.tolerance(case)
    # the inputs the backend holds are the seeded ones, rounded to the dtype
    masters = ops.make_inputs(case, seed=1)
    for name, master in masters.items():
        held = prepared.inputs[name]
        assert np.allclose(held, master, rtol=1e-2 if dtype in ("float16", "bfloat16") else 1e-6)


CUDA_GRID = [(op, dtype, variant) for op, dtype in itertools.product(OPS, DTYPES)
             for variant in {"h2d": ("pageable", "pinned"), "d2h": ("pageable", "pinned"),
                             "create": ("device", "host")}.get(op, ("",))]


@pytest.mark.gpu
@pytest.mark.parametrize("op, dtype, variant", CUDA_GRID)
def test_every_cuda_case_matches_the_reference(op: str, dtype: str, variant: str) -> None:
    case = _case(op, "torch-cuda", dtype, variant=variant)
    m = run_case(case, get_backend("torch-cuda"), FAST)
    assert m.status == "ok", m.reason
    assert m.rel_error is not None and m.rel_error <= ops.tolerance(case)
    # at least what the op must hold (for the building blocks that is all of their footprint)
    assert m.peak_mem_bytes and m.peak_mem_bytes >= ops.bytes_moved(case)


def test_cuda_backend_skips_with_a_reason_without_a_gpu() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    m = run_case(_case("matmul", "torch-cuda", "float32"), get_backend("torch-cuda"), FAST)
    assert m.status == "skipped"
    assert "no CUDA" in m.reason


def test_work_counts_follow_the_design_table() -> None:
    mm = Case("matmul", "numpy", "float32", (2, 3, 5))
    assert ops.flops(mm) == 2 * 2 * 3 * 5
    assert ops.bytes_moved(mm) == (2 * 3 + 3 * 5 + 2 * 5) * 4
    mb = Case("matmul_backward", "numpy", "float64", (2, 3, 5))
    assert ops.flops(mb) == 4 * 2 * 3 * 5
    assert ops.bytes_moved(mb) == (2 * 2 * 3 + 2 * 3 * 5 + 2 * 5) * 8
    h = Case("hadamard", "numpy", "float16", (7, 11))
    assert ops.flops(h) == 77
    assert ops.bytes_moved(h) == 3 * 77 * 2
    hb = Case("hadamard_backward", "torch-cpu", "bfloat16", (7, 11))
    assert ops.flops(hb) == 2 * 77
    assert ops.bytes_moved(hb) == 5 * 77 * 2
    assert ops.arithmetic_intensity(Case("matmul", "numpy", "float32", (512, 512, 512))) == pytest.approx(512 / 6)


def test_inputs_are_seeded_and_never_constant() -> None:
    c = _case("matmul_backward", "numpy", "float32")
    a, b = ops.make_inputs(c, 7), ops.make_inputs(c, 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["A"], ops.make_inputs(c, 8)["A"])
    for arr in a.values():
        assert np.unique(arr).size == arr.size  # no zeros-or-ones shortcuts
    # the same matrices on every backend
    t = ops.make_inputs(_case("matmul_backward", "torch-cpu", "float32"), 7)
    assert all(np.array_equal(a[k], t[k]) for k in a)


def test_projection_check_agrees_with_the_full_one_on_large_products(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case("matmul_backward", "numpy", "float64", (64, 48, 32))
    x = ops.make_inputs(case, 0)
    good = ops.reference(case, x)
    full, m1 = ops.relative_error(case, x, good)
    monkeypatch.setattr(ops, "FULL_REFERENCE_MAX_MKN", 10)
    proj, m2 = ops.relative_error(case, x, good)
    assert (m1, m2) == ("full", "projection")
    assert full < 1e-14 and proj < 1e-14
    bad = dict(good, dB=good["dB"].copy())
    bad["dB"][3, 5] += 1.0  # one wrong element
    assert ops.relative_error(case, x, bad)[0] > 1e-3


def test_nan_output_fails_verification() -> None:
    case = _case("hadamard", "numpy", "float32")
    x = ops.make_inputs(case, 0)
    out = ops.reference(case, x)
    out["C"][0, 0] = np.nan
    assert ops.relative_error(case, x, out)[0] == float("inf")


class _WrongNumpy(NumpyBackend):
    """Computes A·B + 1e-3: close, but wrong beyond float32's tolerance."""

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        p = super().prepare(case, inputs)

        def run_once() -> dict[str, np.ndarray]:
            return {k: v + 1e-3 for k, v in p.run_once().items()}

        return Prepared(p.call, run_once, p.inputs)


def test_a_wrong_result_is_recorded_failed_and_not_timed() -> None:
    m = run_case(_case("matmul", "numpy", "float32"), _WrongNumpy(), FAST)
    assert m.status == "failed"
    assert "wrong result" in m.reason
    assert m.samples_s == ()
    assert m.rel_error is not None and m.rel_error > ops.TOLERANCE["float32"]


class _Exploding(NumpyBackend):
    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        raise MemoryError("cannot allocate 64 GiB")


def test_an_exception_in_a_case_is_recorded_not_raised() -> None:
    m = run_case(_case("matmul", "numpy", "float32"), _Exploding(), FAST)
    assert m.status == "failed"
    assert m.reason.startswith("out of memory: MemoryError")


def test_run_case_records_samples_threads_and_memory() -> None:
    case = _case("matmul", "numpy", "float32")
    m = run_case(case, get_backend("numpy"), FAST)
    assert m.status == "ok", m.reason
    assert len(m.samples_s) >= 3 and all(s > 0 for s in m.samples_s)
    assert m.threads == 1
    assert m.peak_mem_bytes == ops.footprint_bytes(case)
    assert m.check == "full" and m.tolerance == ops.TOLERANCE["float32"]
    assert m.summary.median > 0


def test_memory_precheck_skips_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    b = NumpyBackend()
    monkeypatch.setattr(b, "free_memory_bytes", lambda: 1000)
    m = run_case(_case("matmul", "numpy", "float32"), b, FAST)
    assert m.status == "skipped"
    assert "GiB free" in m.reason


def test_an_output_element_left_unwritten_fails_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    # Outputs are poisoned with NaN before the checked call, so a kernel that skips part of
    # its output cannot pass on whatever the allocator left there.
    real_multiply = np.multiply

    def skips_last_row(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        real_multiply(a[:-1], b[:-1], out=out[:-1])
        return out

    monkeypatch.setattr(np, "multiply", skips_last_row)
    m = run_case(_case("hadamard", "numpy", "float32"), NumpyBackend(), FAST)
    assert m.status == "failed" and "relative error inf" in m.reason
