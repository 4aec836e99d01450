"""Pre-checks: a case whose buffers cannot fit in free host or device memory is skipped with
the reason, before anything is allocated. Free memory is faked, so this runs anywhere."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench_suite.backends import base, torch_backend
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.backends.torch_backend import TorchCpuBackend, TorchCudaBackend
from bench_suite.core import ops
from bench_suite.core.cases import Case
from bench_suite.core.timing import SamplingPlan
from bench_suite.env import system
from bench_suite.measure.runner import RunOptions, run_case

MiB = 2**20
FAST = RunOptions(timing=SamplingPlan(time_budget_s=0.05, min_samples=5))
BIG = Case("matmul", "numpy", "float32", (4096, 4096, 4096), threads=1)  # 192 MiB of buffers


class _Tight(NumpyBackend):
    """numpy with a fake free-memory figure; records whether anything was prepared."""

    def __init__(self, free: int | None):
        self.free = free
        self.prepared = 0

    def free_memory_bytes(self) -> int | None:
        return self.free

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Any:
        self.prepared += 1
        return super().prepare(case, inputs)


def _no_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object) -> None:
        raise AssertionError("inputs were allocated for a case that cannot fit")

    monkeypatch.setattr(ops, "make_inputs", refuse)


def test_host_case_that_cannot_fit_is_skipped_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _Tight(free=512 * MiB)
    _no_allocation(monkeypatch)
    m = run_case(BIG, backend, FAST)
    assert m.status == "skipped" and backend.prepared == 0
    # buffers in float32 plus the float64 masters and reference kept for verification
    need = ops.footprint_bytes(BIG) * (1 + 2 * 8 // 4)
    assert m.reason == f"needs {need / 2**30:.2f} GiB, the host has 0.50 GiB free"


def test_a_case_that_fits_is_measured() -> None:
    backend = _Tight(free=512 * MiB)
    m = run_case(Case("matmul", "numpy", "float32", (16, 16, 16), threads=1), backend, FAST)
    assert m.status == "ok" and backend.prepared == 1


def test_unknown_free_memory_does_not_skip() -> None:
    assert _Tight(free=None).availability(BIG).ok


@pytest.mark.parametrize("need, ok", [(80, True), (81, False), (0, True)])
def test_memory_check_keeps_a_fifth_for_the_runtime(need: int, ok: bool) -> None:
    assert base.memory_check(need, 100, "the host").ok is ok


def test_torch_cpu_checks_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TorchCpuBackend, "free_memory_bytes", lambda self: 64 * MiB)
    avail = TorchCpuBackend().availability(Case("matmul", "torch-cpu", "float32", (4096,) * 3, threads=1))
    assert not avail.ok and avail.reason.endswith("the host has 0.06 GiB free")


def test_host_free_memory_is_read_from_the_system() -> None:
    free = system.host_available_bytes()
    assert free is None or free > 0


class _FakeCuda:
    """Just enough of ``torch.cuda`` for availability: one visible card with ``free`` bytes."""

    def __init__(self, free: int):
        self.free = free

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return self.free, 80 * 2**30

    def is_bf16_supported(self) -> bool:
        return True

    def get_device_name(self, index: int) -> str:
        return "Fake H100"


def test_cuda_case_that_cannot_fit_in_device_memory_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(cuda=_FakeCuda(free=1 * 2**30), version=SimpleNamespace(cuda="13.0"))
    monkeypatch.setattr(torch_backend, "_torch", lambda: fake)
    monkeypatch.setattr(torch_backend, "torch_installed", lambda: True)
    _no_allocation(monkeypatch)
    big = Case("matmul", "torch-cuda", "float32", (16384,) * 3)  # 3 GiB of buffers
    small = Case("matmul", "torch-cuda", "float32", (1024,) * 3)
    backend = TorchCudaBackend()
    m = run_case(big, backend, FAST)
    assert m.status == "skipped"
    assert re.fullmatch(r"needs 3\.00 GiB, cuda:0 has 1\.00 GiB free", m.reason)
    assert backend.availability(small).ok
