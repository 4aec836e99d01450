"""A fake ``torch.cuda`` over the real CPU torch, so that ``TorchCudaBackend``, its
``_CudaDevice``/``_CudaEvent`` and the CUDA-graph path of ``measure.gpu`` run for real (real
tensors, real autograd, real results) without a GPU.

What it keeps of CUDA is what these paths can get wrong:

* **streams**: each card has a legacy default stream and a current stream; ``stream(s)``
  makes ``s`` current and restores the one before; every tensor made and every op run is
  logged with the stream current at the time (``FakeCuda.log``);
* **autograd's stream rule**: a backward op runs on the stream of its forward op, so a
  backward captured on another stream than its forward was made on fails the capture, as
  torch does ("operation not permitted when stream is capturing");
* **graph capture as torch's ``graph`` context does it**: capture on the given stream, which
  is current during the capture; ops called meanwhile are *recorded*, and a replay runs them
  again into the same output tensors. Ending a capture that failed raises and leaves the
  capture stream current (torch's ``graph.__exit__`` does not restore it then);
* **events** record on a stream and measure host time (the CPU does the work at once).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import torch as _real

CAPTURE_ERROR = "operation not permitted when stream is capturing"


class FakeStream:
    def __init__(self, device: int, name: str):
        self.device, self.name = device, name
        self.waited_on: list[FakeStream] = []

    def wait_stream(self, other: FakeStream) -> None:
        self.waited_on.append(other)

    def synchronize(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<stream {self.name}>"


class FakeEvent:
    def __init__(self, cuda: FakeCuda):
        self.cuda = cuda
        self.device = cuda.current_device
        self.stream: FakeStream | None = None
        self.t: int | None = None

    def record(self, stream: FakeStream | None = None) -> None:
        self.stream = stream or self.cuda.current_stream()
        self.t = time.perf_counter_ns()
        self.cuda.log.append(("event", self.stream))

    def synchronize(self) -> None:
        if self.t is None:
            raise RuntimeError("event synchronized before it was recorded")

    def elapsed_time(self, end: FakeEvent) -> float:
        if self.t is None or end.t is None:
            raise RuntimeError("elapsed_time on an unrecorded event")
        if self.device != end.device:
            raise RuntimeError("events of two devices")
        return (end.t - self.t) / 1e6


class FakeGraph:
    def __init__(self, cuda: FakeCuda):
        self.cuda = cuda
        self.ops: list[Callable[[], None]] = []
        self.replays = 0
        self.ended = False

    def replay(self) -> None:
        self.replays += 1
        self.cuda.log.append(("replay", self.cuda.current_stream()))
        if not self.cuda.empty_replays:
            for op in self.ops:
                op()

    def capture_end(self) -> None:
        self.ended = True
        self.cuda.capturing = None


class _GraphContext:
    """torch.cuda.graph: capture on ``stream`` (current meanwhile)."""

    def __init__(self, cuda: FakeCuda, graph: FakeGraph, stream: FakeStream | None):
        self.cuda, self.graph = cuda, graph
        self.stream = stream or cuda.Stream()
        self._ctx = cuda.stream(self.stream)

    def __enter__(self) -> None:
        self.cuda.synchronize()
        self._ctx.__enter__()
        if self.stream is self.cuda.defaults[self.stream.device]:
            raise RuntimeError("CUDA graphs must be captured on a non-default stream")
        self.cuda.capturing = self.graph
        self.cuda.capture_streams.append(self.stream)

    def __exit__(self, *exc: object) -> None:
        failed = exc[0] is not None
        self.cuda.capturing = None
        self.graph.ended = True
        if failed:  # as torch: capture_end raises, and the stream context is not exited
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")
        self._ctx.__exit__(*exc)


class FakeCuda:
    """``torch.cuda`` for ``devices`` cards of compute capability ``capability``."""

    def __init__(self, devices: int = 1, capability: tuple[int, int] = (9, 0), free: int = 64 << 30):
        self.defaults = [FakeStream(i, f"default:{i}") for i in range(devices)]
        self.currents = list(self.defaults)
        self.current_device = 0
        self.capability = capability
        self.free = free
        self.capturing: FakeGraph | None = None
        self.capture_streams: list[FakeStream] = []
        self.streams_made: list[FakeStream] = []
        self.log: list[tuple[str, FakeStream]] = []
        self.empty_replays = False  # a graph that records nothing: its replays do nothing
        self.syncs = 0

    # devices
    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return len(self.defaults)

    def get_device_name(self, index: int = 0) -> str:
        return "NVIDIA H200"

    def get_device_capability(self, index: int = 0) -> tuple[int, int]:
        return self.capability

    def is_bf16_supported(self) -> bool:
        return True

    def get_device_properties(self, index: int = 0) -> Any:
        return SimpleNamespace(L2_cache_size=60 << 20, name="NVIDIA H200")

    def mem_get_info(self, index: int = 0) -> tuple[int, int]:
        return self.free, 141 << 30

    def synchronize(self, index: int | None = None) -> None:
        self.syncs += 1

    def empty_cache(self) -> None:
        pass

    def reset_peak_memory_stats(self, index: int = 0) -> None:
        pass

    def max_memory_allocated(self, index: int = 0) -> int:
        return 1 << 20

    @contextlib.contextmanager
    def device(self, index: int) -> Iterator[None]:
        before, self.current_device = self.current_device, index
        try:
            yield
        finally:
            self.current_device = before

    # streams
    def Stream(self, device: int | None = None) -> FakeStream:
        index = self.current_device if device is None else device
        s = FakeStream(index, f"side:{index}.{len(self.streams_made)}")
        self.streams_made.append(s)
        return s

    def current_stream(self, device: int | None = None) -> FakeStream:
        return self.currents[self.current_device if device is None else device]

    def default_stream(self, device: int | None = None) -> FakeStream:
        return self.defaults[self.current_device if device is None else device]

    def set_stream(self, s: FakeStream) -> None:
        self.currents[s.device] = s

    @contextlib.contextmanager
    def stream(self, s: FakeStream) -> Iterator[None]:
        before = self.currents[s.device]
        self.currents[s.device] = s
        try:
            yield
        finally:
            self.currents[s.device] = before

    def is_current_stream_capturing(self) -> bool:
        return self.capturing is not None

    # events and graphs
    def Event(self, enable_timing: bool = False) -> FakeEvent:
        return FakeEvent(self)

    def CUDAGraph(self) -> FakeGraph:
        return FakeGraph(self)

    def graph(self, graph: FakeGraph, stream: FakeStream | None = None) -> _GraphContext:
        return _GraphContext(self, graph, stream)


class FakeTorch:
    """The real CPU torch with ``cuda`` replaced; "cuda:N" devices are the CPU. The ops the
    backend calls are logged with the current stream and, while a graph is captured, recorded
    for its replays."""

    def __init__(self, cuda: FakeCuda | None = None):
        self.cuda = cuda or FakeCuda()
        self.autograd = SimpleNamespace(grad=self._grad)
        self.made_on: dict[int, FakeStream] = {}  # id(tensor) -> stream it was made on

    def __getattr__(self, name: str) -> Any:
        return getattr(_real, name)

    def device(self, spec: Any) -> Any:
        return _real.device("cpu")

    def _note(self, what: str) -> FakeStream:
        s = self.cuda.current_stream()
        self.cuda.log.append((what, s))
        return s

    def from_numpy(self, array: Any) -> Any:
        self._note("from_numpy")
        return _real.from_numpy(array)

    def full(self, *args: Any, device: Any = None, **kw: Any) -> Any:
        self._note("full")
        return _real.full(*args, **kw)

    def empty(self, *args: Any, device: Any = None, **kw: Any) -> Any:
        self._note("empty")
        return _real.empty(*args, **kw)

    def _record(self, op: Callable[[], Any], into: Callable[[Any], None]) -> None:
        if self.cuda.capturing is not None:
            self.cuda.capturing.ops.append(lambda: into(op()))

    def matmul(self, a: Any, b: Any, out: Any = None) -> Any:
        return self._binary(_real.matmul, a, b, out)

    def mul(self, a: Any, b: Any, out: Any = None) -> Any:
        return self._binary(_real.mul, a, b, out)

    def _binary(self, fn: Callable[..., Any], a: Any, b: Any, out: Any) -> Any:
        s = self._note(fn.__name__)
        if out is not None:
            r = fn(a, b, out=out)
            self._record(lambda: fn(a, b, out=out), lambda _r: None)
        else:
            r = fn(a, b)
            self._record(lambda: fn(a, b), lambda new: r.detach().copy_(new.detach()))
        self.made_on[id(r)] = s
        return r

    def forward_stream(self, tensor: Any, stream: FakeStream) -> None:
        """Say which stream ``tensor``'s forward op ran on (its graph's backward runs there)."""
        self.made_on[id(tensor)] = stream

    def _grad(self, outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool = False) -> Any:
        s = self._note("autograd.grad")
        forward = self.made_on.get(id(outputs))
        if self.cuda.capturing is not None and forward is not None and forward is not s:
            # autograd runs the backward on the forward's stream and makes the capturing
            # stream wait on it: a stream outside the capture
            raise RuntimeError(CAPTURE_ERROR)
        grads = _real.autograd.grad(outputs, inputs, grad_outputs, retain_graph=retain_graph)

        def into(new: Any) -> None:
            for old, fresh in zip(grads, new, strict=True):
                old.copy_(fresh)

        self._record(lambda: _real.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True), into)
        return grads
