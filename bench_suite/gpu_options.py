"""Optional ways of timing a case: cold caches, CUDA-graph replay, NVML sampling.

Each is optional and harmless where it does not apply: without a GPU, without NVML, or with a
backend whose timer has no hooks, the case is timed as usual and ``extra`` says why.

* **Cold cache** (``cold_cache``): a buffer larger than the last-level cache is written before
  every call, outside the timed region (the timer's ``before_call`` hook), so each call starts
  with its operands out of cache (triton's ``do_bench`` flushes L2 the same way). Warm timing,
  the default, repeats the call on cached operands.
* **CUDA graphs** (``cuda_graphs``): ``k`` calls are captured once into a ``torch.cuda.CUDAGraph``
  and each replay is timed; one call's time is a replay's over ``k``. For kernels shorter than
  their launch, this times the GPU's work without the host's launch overhead.
* **NVML** (``nvml``): SM and memory clocks, temperature, power and the clock-event
  ("throttle") reasons of the card, sampled before, during (a background thread) and after
  the timing; a case whose samples show power or thermal capping is marked ``throttled``.

Layering: used by ``runner.py``; imports backends, cases, ops and timing. torch and pynvml are
imported lazily and can be replaced by fakes (``_torch``, ``_pynvml``) in tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_suite import ops
from bench_suite.backends.base import Backend, Prepared
from bench_suite.cases import Case, cuda_index, is_cuda_backend
from bench_suite.phases import with_reset
from bench_suite.timing import Clock, EventTimer, HostTimer, Timing, TimingConfig, measure

#: Calls captured in one CUDA graph at most (the graph lasts about ``min_block_s`` otherwise).
MAX_GRAPH_CALLS = 1000
#: CPU flush buffer bounds: twice the largest cache, within these.
CPU_FLUSH_MIN_BYTES = 8 << 20
CPU_FLUSH_MAX_BYTES = 256 << 20
#: GPU flush buffer: twice L2, at least this (H100: 50 MB L2 -> 100 MB).
GPU_FLUSH_MIN_BYTES = 64 << 20
NVML_INTERVAL_S = 0.1
MAX_NVML_SAMPLES = 1000


def _torch() -> Any:
    import torch

    return torch


def _pynvml() -> Any:
    import pynvml

    return pynvml


# --- cold caches ----------------------------------------------------------------------------


def cpu_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """Size of the largest cache the kernel lists for CPU 0 (its last-level cache)."""
    sizes = []
    for index in sorted(Path(root).glob("index*")):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else None


def cpu_flusher(nbytes: int | None = None) -> tuple[Callable[[], None], int]:
    """A host flush: writing a buffer twice the last-level cache (bounded) evicts the operands."""
    import numpy as np

    if nbytes is None:
        llc = cpu_cache_bytes() or CPU_FLUSH_MIN_BYTES
        nbytes = min(max(2 * llc, CPU_FLUSH_MIN_BYTES), CPU_FLUSH_MAX_BYTES)
    buf = np.empty(max(nbytes // 8, 1), dtype=np.float64)
    counter = [0.0]

    def flush() -> None:
        counter[0] += 1.0  # a new value each time: no page is left clean and skippable
        buf.fill(counter[0])

    return flush, buf.nbytes


def cuda_flusher(index: int, nbytes: int | None = None, torch: Any = None) -> tuple[Callable[[], None], int]:
    """A device flush: ``zero_()`` on a buffer twice the card's L2 (as triton's do_bench)."""
    torch = torch or _torch()
    if nbytes is None:
        l2 = int(getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 0) or 0)
        nbytes = max(2 * l2, GPU_FLUSH_MIN_BYTES)
    buf = torch.empty(int(nbytes), dtype=torch.int8, device=f"cuda:{index}")

    def flush() -> None:
        buf.zero_()

    return flush, int(nbytes)


# --- CUDA graphs ----------------------------------------------------------------------------


def capture_graph(fn: Callable[[], object], calls: int, index: int = 0, torch: Any = None,
                  warmup: int = 3) -> Any:
    """``calls`` calls of ``fn`` captured into one CUDA graph (returned; ``.replay()`` runs it).

    As torch's documentation asks: warm-up on a side stream first (lazy initialisation and
    cuBLAS workspaces must not happen during capture), then capture.
    """
    torch = torch or _torch()
    cuda = torch.cuda
    with cuda.device(index):
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):
            for _ in range(warmup):
                fn()
        cuda.current_stream().wait_stream(side)
        graph = cuda.CUDAGraph()
        with cuda.graph(graph):
            for _ in range(calls):
                fn()
        cuda.synchronize()
    return graph


def graph_calls(per_call_s: float, config: TimingConfig, out_bytes: int,
                free_bytes: int | None) -> int:
    """Calls per graph: enough for a replay to last ``min_block_s``, at most
    ``MAX_GRAPH_CALLS``, and few enough that outputs allocated per call (grad mode) fit in a
    quarter of the free memory."""
    want = math.ceil(config.min_block_s / max(per_call_s, 1e-9))
    calls = max(1, min(MAX_GRAPH_CALLS, want))
    if free_bytes is not None and out_bytes > 0:
        calls = max(1, min(calls, free_bytes // 4 // out_bytes))
    return calls


def per_call_graph_timing(timing: Timing, calls: int) -> Timing:
    """A replay's timing as per-call timing: samples / calls, calls counted."""
    return dataclasses.replace(
        timing, samples_s=tuple(s / calls for s in timing.samples_s),
        number=timing.number * calls, warmup_calls=timing.warmup_calls * calls)


# --- NVML -----------------------------------------------------------------------------------

#: Clock-event ("throttle") reason bits, as in nvml.h.
REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
    0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
#: Reasons that mean the card ran below the clock it would otherwise have run at.
THROTTLING = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
                        "hw_thermal_slowdown", "hw_power_brake_slowdown"})


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASONS.items() if mask & bit]


def nvml_handle(nvml: Any, index: int, torch: Any = None) -> Any:
    """The NVML handle of torch's CUDA device ``index``: by PCI bus id, which stays right under
    ``CUDA_VISIBLE_DEVICES`` (NVML numbers every card, CUDA only the visible ones)."""
    try:
        torch = torch or _torch()
        props = torch.cuda.get_device_properties(index)
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return nvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
    except Exception:  # no PCI ids in this torch, or NVML does not know the bus: by index
        return nvml.nvmlDeviceGetHandleByIndex(index)


class NvmlSampler:
    """Samples one card's clocks, temperature, power and clock-event reasons.

    Use as a context manager around the timed region; :meth:`summary` afterwards. Every NVML
    call that fails leaves its field None: a card or driver that lacks a counter is no error.
    """

    def __init__(self, nvml: Any, handle: Any, interval_s: float = NVML_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.nvml = nvml
        self.handle = handle
        self.interval_s = interval_s
        self.clock = clock
        self.samples: list[dict[str, Any]] = []
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _get(self, fn_names: tuple[str, ...], *args: Any) -> Any:
        for name in fn_names:
            fn = getattr(self.nvml, name, None)
            if fn is None:
                continue
            try:
                return fn(self.handle, *args)
            except Exception:  # NVMLError_NotSupported and friends
                return None
        return None

    def sample(self) -> dict[str, Any]:
        n = self.nvml
        power_mw = self._get(("nvmlDeviceGetPowerUsage",))
        reasons = self._get(("nvmlDeviceGetCurrentClocksEventReasons",
                             "nvmlDeviceGetCurrentClocksThrottleReasons"))
        s = {
            "t_s": round(self.clock() - self._t0, 4),
            "sm_clock_mhz": self._get(("nvmlDeviceGetClockInfo",), getattr(n, "NVML_CLOCK_SM", 1)),
            "mem_clock_mhz": self._get(("nvmlDeviceGetClockInfo",), getattr(n, "NVML_CLOCK_MEM", 2)),
            "temp_c": self._get(("nvmlDeviceGetTemperature",), getattr(n, "NVML_TEMPERATURE_GPU", 0)),
            "power_w": power_mw / 1000 if isinstance(power_mw, (int, float)) else None,
            "reasons": int(reasons) if isinstance(reasons, int) else None,
        }
        if len(self.samples) < MAX_NVML_SAMPLES:
            self.samples.append(s)
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> NvmlSampler:
        self._t0 = self.clock()
        self.sample()
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def summary(self) -> dict[str, Any]:
        """The samples and what they add up to; ``throttled`` when any sample shows a
        throttling reason (power or thermal capping, hardware slowdown)."""
        def stats(key: str) -> dict[str, float] | None:
            vals = sorted(s[key] for s in self.samples if isinstance(s.get(key), (int, float)))
            if not vals:
                return None
            return {"min": vals[0], "median": vals[len(vals) // 2], "max": vals[-1]}

        seen: dict[str, None] = {}
        throttled_samples = 0
        for s in self.samples:
            names = reason_names(s["reasons"]) if s.get("reasons") is not None else []
            s["reason_names"] = names
            seen.update(dict.fromkeys(names))
            throttled_samples += bool(THROTTLING.intersection(names))
        max_sm = None
        with contextlib.suppress(Exception):
            max_sm = self.nvml.nvmlDeviceGetMaxClockInfo(
                self.handle, getattr(self.nvml, "NVML_CLOCK_SM", 1))
        return {
            "available": True,
            "samples": self.samples,
            "sm_clock_mhz": stats("sm_clock_mhz"),
            "mem_clock_mhz": stats("mem_clock_mhz"),
            "temp_c": stats("temp_c"),
            "power_w": stats("power_w"),
            "max_sm_clock_mhz": max_sm,
            "reasons_seen": list(seen),
            "throttled": throttled_samples > 0,
            "throttled_fraction": throttled_samples / len(self.samples) if self.samples else 0.0,
        }


@contextlib.contextmanager
def nvml_session(index: int, nvml: Any = None, torch: Any = None,
                 interval_s: float = NVML_INTERVAL_S) -> Iterator[NvmlSampler | str]:
    """An :class:`NvmlSampler` for CUDA device ``index``, or a string saying why there is none."""
    try:
        nvml = nvml or _pynvml()
    except ImportError:
        yield "nvidia-ml-py (pynvml) is not installed"
        return
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver, no library: not an error, just no NVML here
        yield f"NVML unavailable: {type(exc).__name__}: {exc}"[:200]
        return
    try:
        try:
            handle = nvml_handle(nvml, index, torch)
        except Exception as exc:
            yield f"no NVML handle for cuda:{index}: {exc}"[:200]
            return
        with NvmlSampler(nvml, handle, interval_s) as sampler:
            yield sampler
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


# --- one case, timed with the options -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    cold_cache: bool = False
    cuda_graphs: bool = False
    nvml: bool | None = None  # None: on for CUDA cases where NVML works, silently off elsewhere
    flush_bytes: int | None = None  # None: from the cache sizes

    @classmethod
    def from_config(cls, data: Any) -> TimingOptions:
        """Options saved with ``dataclasses.asdict`` (a run's ``config["gpu_options"]``, a
        worker request); anything missing or malformed keeps its default."""
        if not isinstance(data, dict):
            return cls()
        kw: dict[str, Any] = {}
        for key in ("cold_cache", "cuda_graphs"):
            if isinstance(data.get(key), bool):
                kw[key] = data[key]
        if data.get("nvml") is None or isinstance(data.get("nvml"), bool):
            kw["nvml"] = data.get("nvml")
        fb = data.get("flush_bytes")
        if isinstance(fb, int) and not isinstance(fb, bool) and fb > 0:
            kw["flush_bytes"] = fb
        return cls(**kw)


def time_case(case: Case, backend: Backend, prepared: Prepared, config: TimingConfig,
              clock: Clock, options: TimingOptions = TimingOptions()) -> tuple[Timing, dict[str, Any]]:
    """Time ``prepared.call`` with the options; returns the timing and what goes into
    ``Measurement.extra`` (empty with no options). Raises on a failed CUDA-graph capture
    (the runner records the case as failed, with the reason)."""
    extra: dict[str, Any] = {}
    cuda = is_cuda_backend(case.backend)
    timer = backend.timer(clock)
    if options.cold_cache:
        if isinstance(timer, (HostTimer, EventTimer)):
            if cuda:
                flush, nbytes = cuda_flusher(cuda_index(case.backend), options.flush_bytes)
            else:
                flush, nbytes = cpu_flusher(options.flush_bytes)
            timer.before_call = flush
            extra["cold_cache"] = {"flush_bytes": nbytes, "timed": "each call on its own"}
        else:
            extra["cold_cache"] = {"skipped": f"{type(timer).__name__} has no before_call hook"}

    if prepared.reset is not None:  # a training step: its weights restored before every call
        if not with_reset(timer, prepared.reset):
            raise RuntimeError(f"{type(timer).__name__} cannot restore the case's state between calls")
        extra["reset"] = "state restored before every call, outside the timed region"

    fn = prepared.call
    calls = 1
    if options.cuda_graphs and prepared.reset is not None:
        extra["cuda_graph"] = {"skipped": "the case restores its state between calls"}
    elif options.cuda_graphs:
        if cuda:
            calls = _graph_calls_for(case, backend, fn, timer, config)
            graph = capture_graph(fn, calls, cuda_index(case.backend))
            fn = graph.replay
            extra["cuda_graph"] = {"calls_per_graph": calls}
        else:
            extra["cuda_graph"] = {"skipped": "not a CUDA case"}

    want_nvml = options.nvml is not False and cuda
    if want_nvml:
        with nvml_session(cuda_index(case.backend)) as sampler:
            timing = measure(fn, timer, config, clock)
        if isinstance(sampler, NvmlSampler):
            extra["nvml"] = sampler.summary()
        elif options.nvml:  # asked for explicitly: say why there is nothing
            extra["nvml"] = {"available": False, "reason": sampler}
    else:
        timing = measure(fn, timer, config, clock)
        if options.nvml and not cuda:
            extra["nvml"] = {"available": False, "reason": "not a CUDA case"}
    if calls > 1:
        timing = per_call_graph_timing(timing, calls)
    return timing, extra


def _graph_calls_for(case: Case, backend: Backend, fn: Callable[[], object], timer: Any,
                     config: TimingConfig) -> int:
    # A short estimate of one call, outside any graph, sizes the graph.
    timer.time_block(fn, 3)
    per_call = timer.time_block(fn, 10) / 10
    out_bytes = sum(math.prod(s) for s in ops.output_shapes(case).values()) * ops.ITEMSIZE[case.dtype]
    return graph_calls(per_call, config, out_bytes, backend.free_memory_bytes())

