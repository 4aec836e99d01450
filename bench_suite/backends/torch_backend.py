"""PyTorch on the CPU and on CUDA GPUs. ``torch`` is imported here, lazily, and nowhere else
below the CLI, so ``--help``, reports and numpy-only sweeps never pay for it.

Backward ops time the backward pass alone: the graph is built once, outside the timed
region, and each call runs ``torch.autograd.grad(C, (A, B), dC, retain_graph=True)``, which
returns fresh gradients instead of accumulating into ``.grad``: nothing accumulates between
calls, and no reset is needed inside the timed region.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from bench_suite import ops
from bench_suite.backends import torch_ops
from bench_suite.backends.base import (
    Availability,
    Backend,
    Prepared,
    blas_threads,
    cpu_model,
    host_available_bytes,
    memory_check,
)
from bench_suite.cases import Case, cpu_count, cuda_index, is_backward
from bench_suite.timing import BlockTimer, Clock, EventTimer

if TYPE_CHECKING:
    import torch


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch() -> Any:
    import torch

    return torch


def _dtype(name: str) -> Any:
    return getattr(_torch(), name)


class _TorchBackend(Backend):
    def _device(self) -> torch.device:
        return _torch().device(self.device)

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        if case.op in torch_ops.OPS:  # the layer, training step, bmm, copies and random fill
            return torch_ops.prepare(_torch(), self._device(), case, inputs, self.synchronize)
        torch = _torch()
        dev, dt = self._device(), _dtype(case.dtype)
        grad = case.grad_mode == "grad"
        # float64 host -> case dtype on the device, outside anything timed
        x = {k: torch.from_numpy(v).to(device=dev, dtype=dt).contiguous() for k, v in inputs.items()}
        host_inputs = {k: t.to("cpu", torch.float64).numpy() for k, t in x.items()}
        a, b = x["A"], x["B"]
        call: Callable[[], object]
        if is_backward(case.op):
            a.requires_grad_(True)
            b.requires_grad_(True)
            dc = x["dC"]
            c = a @ b if case.op == "matmul_backward" else a * b  # the graph, built once
            autograd_grad = torch.autograd.grad

            def call() -> object:
                return autograd_grad(c, (a, b), dc, retain_graph=True)

            def results(r: Any) -> dict[str, Any]:
                return {"dA": r[0], "dB": r[1]}
        elif grad:
            # Forward while recording the graph: the output is allocated each call (autograd
            # cannot write into a preallocated out=), as it is in training.
            a.requires_grad_(True)
            b.requires_grad_(True)
            fn = torch.matmul if case.op == "matmul" else torch.mul

            def call() -> object:
                return fn(a, b)

            def results(r: Any) -> dict[str, Any]:
                return {"C": r}
        else:
            # poisoned with NaN: an element the op fails to write fails verification
            out = torch.full((case.m, case.n), float("nan"), device=dev, dtype=dt)
            fn = torch.matmul if case.op == "matmul" else torch.mul

            def call() -> object:
                return fn(a, b, out=out)

            def results(r: Any) -> dict[str, Any]:
                return {"C": r}

        def run_once() -> dict[str, np.ndarray]:
            r = results(call())
            self.synchronize()
            return {k: v.detach().to("cpu", torch.float64).numpy() for k, v in r.items()}

        def release() -> None:
            x.clear()

        return Prepared(call, run_once, host_inputs, release)


class TorchCpuBackend(_TorchBackend):
    name = "torch-cpu"
    device = "cpu"

    def availability(self, case: Case) -> Availability:
        if not torch_installed():
            return Availability.no("torch is not installed")
        refused = torch_ops.availability(self.name, case)
        if refused is not None:
            return refused
        if case.threads is not None and case.threads > cpu_count():
            return Availability.no(f"{case.threads} threads > {cpu_count()} cores available")
        need = ops.footprint_bytes(case) * (1 + 2 * 8 // ops.ITEMSIZE[case.dtype])
        return memory_check(need, self.free_memory_bytes(), "the host")

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return _torch_threads(count or cpu_count())

    def device_name(self) -> str:
        return cpu_model()


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[int | None]:
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        # numpy's OpenBLAS threads spin for a while after each call; keep them to one so
        # they cannot take cores from torch's pool while torch is being timed.
        with blas_threads(1):
            yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class _CudaDevice:
    """The timing.Device of one CUDA card."""

    def __init__(self, index: int):
        self.index = index

    def synchronize(self) -> None:
        _torch().cuda.synchronize(self.index)

    def event(self) -> _CudaEvent:
        return _CudaEvent(self.index)


class _CudaEvent:
    """A timing event recorded on *this card's* current stream.

    ``torch.cuda.Event.record()`` without a stream uses the current device's stream; for
    ``torch-cuda:1`` while device 0 is current that would time the wrong card (or fail)."""

    def __init__(self, index: int):
        torch = _torch()
        self.index = index
        with torch.cuda.device(index):
            self._event = torch.cuda.Event(enable_timing=True)

    def record(self) -> None:
        self._event.record(_torch().cuda.current_stream(self.index))

    def synchronize(self) -> None:
        self._event.synchronize()

    def elapsed_time(self, end: _CudaEvent) -> float:
        return float(self._event.elapsed_time(end._event))


class TorchCudaBackend(_TorchBackend):
    def __init__(self, name: str = "torch-cuda"):
        self.name = name
        self.index = cuda_index(name)
        self.device = f"cuda:{self.index}"

    def availability(self, case: Case) -> Availability:
        if not torch_installed():
            return Availability.no("torch is not installed")
        torch = _torch()
        if not torch.cuda.is_available():
            built = torch.version.cuda
            why = "this torch is a CPU-only build" if built is None else "no CUDA device is visible"
            return Availability.no(f"no CUDA: {why}")
        if self.index >= torch.cuda.device_count():
            return Availability.no(
                f"no CUDA device {self.index}: {torch.cuda.device_count()} visible"
            )
        if case.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return Availability.no(f"{self.device_name()} does not support bfloat16")
        host = torch_ops.host_bytes(case)  # copies: their host buffer must fit too
        if host and not (fits := memory_check(host, host_available_bytes(), "the host")).ok:
            return fits
        return memory_check(ops.footprint_bytes(case), self.free_memory_bytes(), self.device)

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return contextlib.nullcontext(None)  # host threads do not drive the kernels

    def synchronize(self) -> None:
        _torch().cuda.synchronize(self.index)

    def timer(self, clock: Clock) -> BlockTimer:
        return EventTimer(_CudaDevice(self.index))

    def reset_peak_memory(self) -> None:
        torch = _torch()
        torch.cuda.synchronize(self.index)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.index)

    def peak_memory_bytes(self) -> int | None:
        return int(_torch().cuda.max_memory_allocated(self.index))

    def free_memory_bytes(self) -> int | None:
        free, _total = _torch().cuda.mem_get_info(self.index)
        return int(free)

    def device_name(self) -> str:
        return str(_torch().cuda.get_device_name(self.index))
