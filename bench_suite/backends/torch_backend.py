"""PyTorch on the CPU and on CUDA GPUs. ``torch`` is imported lazily, inside functions (here,
and in the few modules that read or drive torch itself: ``env.collect``, ``env.nvml``,
``measure.gpu``, ``measure.harness``, ``measure.peaks``, ``measure.worker``), so ``--help``,
reports and numpy-only sweeps never pay for it.

Backward ops time the backward pass alone: the graph is built once, outside the timed
region, and each call runs ``torch.autograd.grad(C, (A, B), dC, retain_graph=True)``, which
returns fresh gradients instead of accumulating into ``.grad``: nothing accumulates between
calls, and no reset is needed inside the timed region.

On CUDA every case runs on one non-default stream of its card (:meth:`TorchCudaBackend.stream`):
its inputs are made, its forward graph is built, and it is verified, timed, captured into a
CUDA graph and replayed there (``threads()`` makes the stream current for the case). The
legacy default stream cannot be captured, and autograd runs a backward op on the stream of
its forward op: a forward built on the default stream breaks the capture of its backward.

``tf32`` cases hold float32 tensors and run with ``torch.backends.cuda.matmul.fp32_precision
= "tf32"`` (the legacy ``allow_tf32`` on torch < 2.9) from ``prepare`` until ``release``; the
setting found before is restored.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from bench_suite.backends import torch_ops
from bench_suite.backends.base import (
    Availability,
    Backend,
    Prepared,
    blas_threads,
    memory_check,
    no_tf32,
)
from bench_suite.core import ops
from bench_suite.core.cases import Case, cpu_count, cuda_index, is_backward
from bench_suite.core.timing import BlockTimer, Clock, EventTimer
from bench_suite.env.system import cpu_model, host_available_bytes

if TYPE_CHECKING:
    import torch


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch() -> Any:
    import torch

    return torch


def _dtype(name: str) -> Any:
    return getattr(_torch(), "float32" if name == "tf32" else name)


def set_tf32_matmul(torch: Any, on: bool) -> Callable[[], None]:
    """Let float32 CUDA matmuls use TF32 tensor cores (or forbid it); returns a function that
    restores what was set before. The new API first (torch >= 2.9), whose every reading and
    restoring works whatever was set before; the legacy flag on older torch."""
    matmul = torch.backends.cuda.matmul
    try:
        before = matmul.fp32_precision
    except AttributeError:  # torch < 2.9: "Unknown attribute fp32_precision"
        legacy = bool(matmul.allow_tf32)
        matmul.allow_tf32 = on

        def restore_legacy() -> None:
            matmul.allow_tf32 = legacy

        return restore_legacy
    matmul.fp32_precision = "tf32" if on else "ieee"

    def restore() -> None:
        matmul.fp32_precision = before

    return restore


class _TorchBackend(Backend):
    def _device(self) -> torch.device:
        return _torch().device(self.device)

    def _case_context(self) -> contextlib.AbstractContextManager[Any]:
        """Where a case's tensors and graph are made (CUDA: on the case stream)."""
        return contextlib.nullcontext()

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        restore = set_tf32_matmul(_torch(), True) if case.dtype == "tf32" else None
        try:
            with self._case_context():
                prepared = self._prepare(case, inputs)
        except BaseException:
            if restore is not None:
                restore()
            raise
        if restore is not None:
            release = prepared.release

            def release_and_restore() -> None:
                try:
                    release()
                finally:
                    restore()

            prepared.release = release_and_restore
        return prepared

    def _prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
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
            # the graph, built once (on the case's stream: its backward runs there)
            c = torch.matmul(a, b) if case.op == "matmul_backward" else torch.mul(a, b)
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

        def read(r: Any) -> dict[str, np.ndarray]:
            self.synchronize()
            return {k: v.detach().to("cpu", torch.float64).numpy() for k, v in results(r).items()}

        def poison(r: Any) -> None:
            for v in results(r).values():
                v.detach().fill_(float("nan"))

        def run_once() -> dict[str, np.ndarray]:
            return read(call())

        def release() -> None:
            x.clear()

        return Prepared(call, run_once, host_inputs, release, read=read, poison=poison)


class TorchCpuBackend(_TorchBackend):
    name = "torch-cpu"
    device = "cpu"

    def availability(self, case: Case) -> Availability:
        if not torch_installed():
            return Availability.no("torch is not installed")
        if case.dtype == "tf32":
            return no_tf32(self.name)
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
def _on_stream(stream: contextlib.AbstractContextManager[Any]) -> Iterator[int | None]:
    with stream:
        yield None


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
    """A timing event recorded on *this card's* current stream: the case's stream while a
    case runs (``TorchCudaBackend.threads``).

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


def cuda_case_bytes(case: Case) -> int:
    """Device bytes a CUDA case holds while it is verified and timed: inputs and outputs,
    plus the forward output a backward op's graph retains (``C``) or, for a forward with
    grad, the output of the call before (freed only when the next one replaces it).
    Options add their own (``measure.gpu.options.option_device_bytes``: flush buffer, graph pool)."""
    out = ops.footprint_bytes(case)
    if is_backward(case.op) or case.grad_mode == "grad":
        out += case.m * case.n * ops.ITEMSIZE[case.dtype]
    return out


def cuda_host_bytes(case: Case) -> int:
    """Host bytes a CUDA case needs for its verification: float64 masters of the inputs, the
    float64 copies of what the card holds, the float64 outputs read back and the reference."""
    inputs = sum(math.prod(s) for s in ops.input_shapes(case).values())
    outputs = sum(math.prod(s) for s in ops.output_shapes(case).values())
    return 8 * (2 * inputs + 2 * outputs)


class TorchCudaBackend(_TorchBackend):
    def __init__(self, name: str = "torch-cuda"):
        self.name = name
        self.index = cuda_index(name)
        self.device = f"cuda:{self.index}"
        self._stream: Any = None

    def stream(self) -> Any:
        """The non-default stream this card's cases run on (made on first use)."""
        if self._stream is None:
            self._stream = _torch().cuda.Stream(device=self.index)
        return self._stream

    def _case_context(self) -> contextlib.AbstractContextManager[Any]:
        return _torch().cuda.stream(self.stream())

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
        if case.dtype == "tf32":
            major, minor = torch.cuda.get_device_capability(self.index)
            if major < 8:
                return Availability.no(f"{self.device_name()} (sm_{major}{minor}) has no TF32 "
                                       "tensor cores (Ampere, sm_80, and later have)")
        refused = torch_ops.availability(self.name, case)
        if refused is not None:
            return refused
        device = memory_check(cuda_case_bytes(case), self.free_memory_bytes(), self.device)
        if not device.ok:
            return device
        # copies hold a host buffer too, beside the float64 copies for verification
        host = cuda_host_bytes(case) + torch_ops.host_bytes(case)
        return memory_check(host, host_available_bytes(), "the host")

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        # Host threads do not drive the kernels; what a case needs in force is its stream.
        return _on_stream(self._case_context())

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
