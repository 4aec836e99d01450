"""Just enough of ``torch`` for the CUDA paths of the copies (``h2d``, ``d2h``) and ``create``
to run without a GPU: tensors are numpy arrays tagged with a device; the CUDA device is a
:class:`tests.fakes.FakeCudaDevice` on a fake clock; a copy across the link takes its bytes
over a bandwidth (page-locked memory faster than pageable, and a pageable copy holding the
host until it is done, as the CUDA driver does); CUDA events are the fake device's.

Installed by monkeypatching ``bench_suite.backends.torch_backend._torch`` (and
``torch_installed``): the real :class:`~bench_suite.backends.torch_backend.TorchCudaBackend`,
``torch_ops`` and the timing loop then run unchanged on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from tests.fakes import FakeClock, FakeCudaDevice


@dataclass(frozen=True)
class FakeDtype:
    name: str
    itemsize: int
    numpy: Any  # how values are held (bfloat16 as float32)


_DTYPES = {
    "float64": FakeDtype("float64", 8, np.float64),
    "float32": FakeDtype("float32", 4, np.float32),
    "float16": FakeDtype("float16", 2, np.float16),
    "bfloat16": FakeDtype("bfloat16", 2, np.float32),
}
_BY_NUMPY = {np.dtype(np.float64): "float64", np.dtype(np.float32): "float32",
             np.dtype(np.float16): "float16"}


class FakeTensor:
    def __init__(self, torch: FakeTorch, data: np.ndarray, device: str, dtype: FakeDtype,
                 pinned: bool = False):
        self.torch = torch
        self.data = np.ascontiguousarray(data, dtype=dtype.numpy)
        self.device = device
        self.dtype = dtype
        self.pinned = pinned

    @property
    def nbytes(self) -> int:
        return int(self.data.size) * self.dtype.itemsize

    def to(self, device: Any = None, dtype: FakeDtype | None = None,
           non_blocking: bool = False) -> FakeTensor:
        if isinstance(device, FakeDtype):  # .to(dtype)
            device, dtype = None, device
        device = str(device) if device is not None else self.device
        dtype = dtype or self.dtype
        out = FakeTensor(self.torch, self.data.astype(dtype.numpy), device, dtype)
        self.torch.transfer(self, out, non_blocking)
        return out

    def copy_(self, src: FakeTensor, non_blocking: bool = False) -> FakeTensor:
        if src.data.shape != self.data.shape:
            raise RuntimeError(f"copy_ of {src.data.shape} into {self.data.shape}")
        np.copyto(self.data, src.data.astype(self.dtype.numpy))
        self.torch.transfer(src, self, non_blocking)
        return self

    def fill_(self, value: float) -> FakeTensor:
        self.data.fill(value)
        return self

    def contiguous(self) -> FakeTensor:
        return self

    def detach(self) -> FakeTensor:
        return self

    def numpy(self) -> np.ndarray:
        if self.device != "cpu":
            raise TypeError("can't convert cuda:0 device type tensor to numpy")
        return self.data

    def is_pinned(self) -> bool:
        return self.pinned


class FakeGenerator:
    def __init__(self, device: Any = "cpu"):
        self.device = str(device)
        self.rng = np.random.default_rng(0)

    def manual_seed(self, seed: int) -> FakeGenerator:
        self.rng = np.random.default_rng(seed)
        return self


class _Event:
    """torch.cuda.Event over the fake device (``record`` takes a stream, ignored)."""

    def __init__(self, device: FakeCudaDevice):
        self._e = device.event()

    def record(self, stream: Any = None) -> None:
        self._e.record()

    def synchronize(self) -> None:
        self._e.synchronize()

    def elapsed_time(self, end: _Event) -> float:
        return self._e.elapsed_time(end._e)


class FakeStream:
    """A stream in name only: the fake device runs everything in order."""

    def __init__(self, device: Any = 0):
        self.device = device

    def wait_stream(self, other: FakeStream) -> None:
        pass

    def synchronize(self) -> None:
        pass


class FakeCuda:
    def __init__(self, torch: FakeTorch):
        self.torch = torch
        self._default = FakeStream()
        self._current = self._default

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 1

    def is_bf16_supported(self) -> bool:
        return True

    def mem_get_info(self, index: int = 0) -> tuple[int, int]:
        return 64 << 30, 80 << 30

    def get_device_name(self, index: int = 0) -> str:
        return "Fake H100"

    def synchronize(self, index: int | None = None) -> None:
        self.torch.device_.synchronize()

    def Event(self, enable_timing: bool = False) -> _Event:
        return _Event(self.torch.device_)

    @contextlib.contextmanager
    def device(self, index: int) -> Iterator[None]:
        yield

    def current_stream(self, index: int | None = None) -> FakeStream:
        return self._current

    def Stream(self, device: Any = 0) -> FakeStream:
        return FakeStream(device)

    @contextlib.contextmanager
    def stream(self, s: FakeStream) -> Iterator[None]:
        before, self._current = self._current, s
        try:
            yield
        finally:
            self._current = before

    def get_device_capability(self, index: int = 0) -> tuple[int, int]:
        return (9, 0)

    def get_device_properties(self, index: int = 0) -> Any:
        return SimpleNamespace(name="Fake H100", major=9, minor=0, total_memory=80 << 30,
                               multi_processor_count=132, L2_cache_size=50 << 20)

    def empty_cache(self) -> None:
        pass

    def reset_peak_memory_stats(self, index: int | None = None) -> None:
        self.torch.peak = 0

    def max_memory_allocated(self, index: int | None = None) -> int:
        return self.torch.peak


class FakeTorch:
    """The fake module. ``pageable_gbps``/``pinned_gbps``: the link, each direction;
    ``fill_gbps``: how fast the device writes random numbers; ``host_fill_gbps``: the host."""

    def __init__(self, clock: FakeClock | None = None, launch_ns: float = 1_000,
                 pageable_gbps: float = 10.0, pinned_gbps: float = 25.0,
                 fill_gbps: float = 1000.0, host_fill_gbps: float = 2.0):
        self.clock = clock or FakeClock()
        self.device_ = FakeCudaDevice(self.clock, launch_ns)
        self.pageable_gbps, self.pinned_gbps = pageable_gbps, pinned_gbps
        self.fill_gbps, self.host_fill_gbps = fill_gbps, host_fill_gbps
        self.cuda = FakeCuda(self)
        self.version = SimpleNamespace(cuda="13.0")
        self.peak = 0
        self.copies: list[tuple[str, str, bool, int]] = []  # (from, to, pinned, bytes)
        for name, dt in _DTYPES.items():
            setattr(self, name, dt)

    # --- what the copies cost ------------------------------------------------------------
    def transfer(self, src: FakeTensor, dst: FakeTensor, non_blocking: bool) -> None:
        if src.device == dst.device:
            return
        host = src if src.device == "cpu" else dst
        self.copies.append((src.device, dst.device, host.pinned, dst.nbytes))
        gbps = self.pinned_gbps if host.pinned else self.pageable_gbps
        self.device_.launch(dst.nbytes / gbps)  # ns = bytes / (GB/s)
        if not (host.pinned and non_blocking):
            self.device_.synchronize()  # pageable (or blocking): the host waits for it

    def _track(self, t: FakeTensor) -> FakeTensor:
        if t.device != "cpu":
            self.peak = max(self.peak, t.nbytes)
        return t

    # --- the module's functions ----------------------------------------------------------
    def device(self, name: str) -> str:
        return str(name)

    def from_numpy(self, a: np.ndarray) -> FakeTensor:
        return FakeTensor(self, a, "cpu", _DTYPES[_BY_NUMPY[np.asarray(a).dtype]])

    def empty(self, shape: tuple[int, ...], dtype: FakeDtype, device: Any = "cpu",
              pin_memory: bool = False) -> FakeTensor:
        if pin_memory and str(device) != "cpu":
            raise RuntimeError("only CPU memory can be pinned")
        return self._track(FakeTensor(self, np.zeros(shape), str(device), dtype, pin_memory))

    def full(self, shape: tuple[int, ...], value: float, device: Any = "cpu",
             dtype: FakeDtype | None = None) -> FakeTensor:
        return self._track(FakeTensor(self, np.full(shape, value), str(device),
                                      dtype or self.float32))

    def Generator(self, device: Any = "cpu") -> FakeGenerator:
        return FakeGenerator(device)

    def randn(self, shape: tuple[int, ...], dtype: FakeDtype | None = None, device: Any = "cpu",
              generator: FakeGenerator | None = None) -> FakeTensor:
        dtype = dtype or self.float32
        rng = generator.rng if generator is not None else np.random.default_rng()
        t = FakeTensor(self, rng.standard_normal(shape), str(device), dtype)
        if t.device == "cpu":
            self.clock.advance(t.nbytes / self.host_fill_gbps)
        else:
            self.device_.launch(t.nbytes / self.fill_gbps)
        return self._track(t)
