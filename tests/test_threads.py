"""Thread counts are applied for the duration of a case, read back, recorded and restored."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from bench_suite.backends import get_backend
from bench_suite.core.cases import Case, cpu_count
from bench_suite.core.timing import SamplingPlan
from bench_suite.measure.runner import RunOptions, run_case


def _blas_threads() -> set[int]:
    return {m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"}


def test_numpy_threads_are_applied_and_restored() -> None:
    before = _blas_threads()
    with get_backend("numpy").threads(1) as applied:
        assert applied == 1
        assert _blas_threads() == {1}
    assert _blas_threads() == before


def test_numpy_all_means_every_usable_core() -> None:
    with get_backend("numpy").threads(None) as applied:
        assert applied == cpu_count()


def test_torch_threads_are_applied_and_restored() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with get_backend("torch-cpu").threads(1) as applied:
        assert applied == 1 == torch.get_num_threads()
        assert _blas_threads() == {1}  # numpy's BLAS kept out of torch's way
    assert torch.get_num_threads() == before


def test_threads_are_restored_even_when_the_case_fails() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), get_backend("torch-cpu").threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_the_measurement_records_the_thread_count_in_force() -> None:
    opts = RunOptions(timing=SamplingPlan(time_budget_s=0.02, min_samples=3, warmup_s=0))
    m = run_case(Case("matmul", "torch-cpu", "float32", (16, 16, 16), threads=1), get_backend("torch-cpu"), opts)
    assert m.status == "ok" and m.threads == 1


def test_more_threads_than_cores_is_skipped_with_the_reason() -> None:
    opts = RunOptions(timing=SamplingPlan(time_budget_s=0.02))
    m = run_case(Case("matmul", "numpy", "float32", (16, 16, 16), threads=cpu_count() + 1),
                 get_backend("numpy"), opts)
    assert m.status == "skipped" and "cores" in m.reason
