"""Optional ways of timing a case: cold caches, CUDA-graph replay, NVML sampling; and what
every CUDA case gets: a warm-up to full clocks and a launch-bound check.

Each option is harmless where it does not apply: without a GPU, without NVML, or with a
backend whose timer has no hooks, the case is timed as usual and ``extra`` says why.

* **Cold cache** (``cold_cache``): a buffer larger than the last-level cache is written before
  every call, outside the timed region (the timer's ``before_call`` hook), so each call starts
  with its operands out of cache (triton's ``do_bench`` flushes L2 the same way). Warm timing,
  the default, repeats the call on cached operands.
* **CUDA graphs** (``cuda_graphs``): ``k`` calls are captured once into a ``torch.cuda.CUDAGraph``
  on the case's own non-default stream (where its inputs and forward graph were made), one
  replay is checked against the float64 reference (its outputs poisoned with NaN first), and
  each replay is timed; one call's time is a replay's over ``k``. For kernels shorter than
  their launch, this times the GPU's work without the host's launch overhead. Refused with
  ``cold_cache``: one flush per replay of ``k`` calls would leave ``k - 1`` of them warm.
* **NVML** (``nvml``): SM and memory clocks, temperature, power and the clock-event
  ("throttle") reasons of the card, sampled every ``nvml_interval_s`` (15 ms) during the
  warm-up and the timing. The power cap (``power_capped``: the card held its power limit, as
  dense GEMMs routinely do) is kept apart from throttling (``throttled``: thermal or hardware
  slowdown); both are None where NVML could not report reasons.
* **Warm-up** (every CUDA case): the timed callable runs until NVML reads the SM clock within
  ``WARMUP_CLOCK_FRACTION`` of its maximum, or for ``warmup_gpu_s`` (0.2 s) of GPU work. An
  idle card runs at a fraction of its clock (an H200: 345 of 1980 MHz).
* **Launch-bound** (every CUDA case timed with events): when the host's time to enqueue a
  block covers the device's time for it, the device waited for the launches and the events
  timed the launch rate, not the kernels: ``extra["launch"]["launch_bound"]``. Time such
  cases with ``--cuda-graphs``.

Layering: used by ``runner.py``; imports harness, backends, cases, ops and timing. torch and
pynvml are imported lazily and can be replaced by fakes (``_torch``, ``_pynvml``) in tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_suite.backends.base import Backend, Prepared, memory_check
from bench_suite.core import ops, stats
from bench_suite.core.cases import Case, cuda_index, is_cuda_backend
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import Clock, EventTimer, Gate, HostTimer, Timing, TimingConfig, measure
from bench_suite.measure import harness
from bench_suite.measure.interference import SIBLING_PIDS, Monitor
from bench_suite.measure.phases import with_reset

#: Calls captured in one CUDA graph at most (the graph lasts about ``min_block_s`` otherwise).
MAX_GRAPH_CALLS = 1000
#: CPU flush buffer bounds: twice the largest cache, within these.
CPU_FLUSH_MIN_BYTES = 8 << 20
CPU_FLUSH_MAX_BYTES = 256 << 20
#: GPU flush buffer: twice L2, at least this (H100: 50 MB L2 -> 100 MB).
GPU_FLUSH_MIN_BYTES = 64 << 20
#: NVML sampling period during a case, and the samples kept in memory and in the file
#: (evenly thinned; the statistics use all of them).
NVML_INTERVAL_S = 0.015
MAX_NVML_SAMPLES = 20_000
NVML_SAMPLES_SAVED = 200
#: Warm-up of CUDA cases: until the SM clock reaches this fraction of its maximum (checked
#: after WARMUP_MIN_GPU_S of work), or WARMUP_GPU_S of GPU work, or WARMUP_MAX_WALL_S.
WARMUP_GPU_S = 0.2
WARMUP_MIN_GPU_S = 0.01
WARMUP_CLOCK_FRACTION = 0.9
WARMUP_MAX_WALL_S = 3.0
WARMUP_BLOCK_S = 0.01
#: A block is launch-bound when the host's enqueue time is at least this fraction of the
#: device time: the device then idled between launches.
LAUNCH_BOUND_RATIO = 0.9


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


def cuda_l2_bytes(index: int, torch: Any = None) -> int:
    torch = torch or _torch()
    return int(getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 0) or 0)


def cuda_flush_bytes(index: int, nbytes: int | None = None, torch: Any = None) -> int:
    """Bytes of the L2 flush buffer: ``nbytes``, else twice the card's L2, at least
    ``GPU_FLUSH_MIN_BYTES``."""
    return int(nbytes) if nbytes is not None else max(2 * cuda_l2_bytes(index, torch), GPU_FLUSH_MIN_BYTES)


def cuda_flusher(index: int, nbytes: int | None = None, torch: Any = None) -> tuple[Callable[[], None], int]:
    """A device flush: ``zero_()`` on a buffer twice the card's L2 (as triton's do_bench)."""
    torch = torch or _torch()
    nbytes = cuda_flush_bytes(index, nbytes, torch)
    buf = torch.empty(int(nbytes), dtype=torch.int8, device=f"cuda:{index}")

    def flush() -> None:
        buf.zero_()

    return flush, int(nbytes)


# --- CUDA graphs ----------------------------------------------------------------------------


class GraphCaptureError(RuntimeError):
    """A CUDA graph could not be captured; the case is recorded as failed with this reason."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _is_default_stream(cuda: Any, stream: Any, index: int) -> bool:
    default = getattr(cuda, "default_stream", None)
    if default is None:
        return False
    try:
        return bool(stream == default(index))
    except Exception:  # a stream object that cannot be compared: assume it is not
        return False


def capture_graph(fn: Callable[[], object], calls: int, index: int = 0, torch: Any = None,
                  warmup: int = 3) -> tuple[Any, object]:
    """``calls`` calls of ``fn`` captured into one CUDA graph; returns the graph (``.replay()``
    runs it) and what the last captured call returned (the graph's outputs, which each replay
    overwrites).

    Warm-up and capture run on the current stream of card ``index``, which while a case runs
    is the case's own non-default stream, where its inputs and its forward graph were made
    (autograd runs a backward op on its forward op's stream: a forward on another stream
    would make the capture wait on a stream it cannot capture). On the legacy default stream,
    which cannot be captured, a side stream is used instead. Warm-up first (lazy
    initialisation and cuBLAS workspaces must not happen during capture), then capture.

    A capture that fails restores the current stream, ends the capture if it is still open
    and raises :class:`GraphCaptureError` with the reason.
    """
    torch = torch or _torch()
    cuda = torch.cuda
    with cuda.device(index):
        before = cuda.current_stream(index)
        stream = cuda.Stream(device=index) if _is_default_stream(cuda, before, index) else before
        if stream is not before:
            stream.wait_stream(before)
        graph = cuda.CUDAGraph()
        result: object = None
        try:
            with cuda.stream(stream):
                for _ in range(warmup):
                    fn()
            cuda.synchronize(index)
            with cuda.graph(graph, stream=stream):
                for _ in range(calls):
                    result = fn()
        except Exception as exc:
            _restore_after_failed_capture(cuda, graph, before, index)
            cause = exc.__context__ if exc.__context__ is not None else exc
            reason = _first_line(cause)
            if cause is not exc:
                reason += f"; then {_first_line(exc)}"
            raise GraphCaptureError(f"CUDA graph capture failed: {reason}"[:500]) from exc
        if stream is not before:
            before.wait_stream(stream)
        cuda.synchronize(index)
    return graph, result


def _restore_after_failed_capture(cuda: Any, graph: Any, stream: Any, index: int) -> None:
    """torch's ``graph`` context leaves its capture stream current when ending the capture
    raises: make ``stream`` current again and close a capture still open."""
    with contextlib.suppress(Exception):
        capturing = getattr(cuda, "is_current_stream_capturing", lambda: False)
        set_stream = getattr(cuda, "set_stream", None)
        if capturing() and graph is not None:
            with contextlib.suppress(Exception):
                graph.capture_end()
        if set_stream is not None:
            set_stream(stream)
    with contextlib.suppress(Exception):
        cuda.synchronize(index)


def check_replay(case: Case, prepared: Prepared, graph: Any, result: object,
                 device_name: str = "") -> dict[str, Any]:
    """Poison the graph's outputs with NaN, replay it once and hold what it wrote to the same
    float64 reference and tolerance as the first call. Raises ``harness.WrongResult`` (the case
    fails) when a replay computes something else, or writes nothing at all."""
    if prepared.read is None or prepared.poison is None or result is None:
        return {"replay_checked": False,
                "replay_reason": "the backend does not expose a call's outputs"}
    prepared.poison(result)
    graph.replay()
    outputs = prepared.read(result)
    tol = ops.TOLERANCE[case.dtype]
    err, check = ops.relative_error(case, prepared.inputs, outputs)
    if not err <= tol:  # NaN (an output the replay never wrote) fails too
        raise harness.WrongResult(
            f"CUDA graph replay gave a wrong result: relative error {err:.3g} > tolerance "
            f"{tol:g} (the first call was right)", err, tol, check, None, device_name)
    return {"replay_checked": True, "replay_rel_error": err}


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


def output_bytes(case: Case) -> int:
    """Bytes of one call's outputs: what a graph's pool gains per captured call (at most)."""
    return sum(math.prod(s) for s in ops.output_shapes(case).values()) * ops.ITEMSIZE[case.dtype]


# --- NVML -----------------------------------------------------------------------------------

#: Clock-event ("throttle") reason bits, as in nvml.h.
REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap",
    0x8: "hw_slowdown", 0x10: "sync_boost", 0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
#: The card held its power limit: what dense GEMMs do routinely, by design. Not throttling.
POWER_CAP = frozenset({"sw_power_cap"})
#: Reasons that mean the card was slowed below what its power limit allows: heat, or a
#: hardware slowdown (including an external power brake).
THROTTLING = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                        "hw_power_brake_slowdown"})


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


def thin(samples: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """At most ``keep`` samples, evenly spaced, the first and last always among them."""
    if len(samples) <= keep:
        return list(samples)
    if keep < 2:
        return list(samples[-keep:]) if keep == 1 else []
    step = (len(samples) - 1) / (keep - 1)
    return [samples[round(i * step)] for i in range(keep)]


def gpu_processes(nvml: Any, handle: Any, own_pid: int | None = None) -> list[dict[str, Any]]:
    """The processes NVML lists on a card (compute and graphics), each once:
    ``{"pid", "used_memory_bytes", "own"}``. Empty where NVML cannot say."""
    own = os.getpid() if own_pid is None else own_pid
    procs: list[dict[str, Any]] = []
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(nvml, name, None)
        try:
            listed = fn(handle) if fn is not None else ()
        except Exception:  # NotSupported, NoPermission: nothing to say
            listed = ()
        for p in listed or ():
            pid = getattr(p, "pid", None)
            if not isinstance(pid, int) or any(q["pid"] == pid for q in procs):
                continue
            used = getattr(p, "usedGpuMemory", None)
            procs.append({"pid": pid, "used_memory_bytes": used if isinstance(used, int) else None,
                          "own": pid == own})
    return procs


def _flag(hits: int, known: int) -> bool | None:
    return None if known == 0 else hits > 0


class NvmlSampler:
    """Samples one card's clocks, temperature, power and clock-event reasons.

    Use as a context manager around the warm-up and the timed region; :meth:`phase` names
    what follows ("warmup", "timed"), and :meth:`summary` describes the timed samples (all of
    them where no phase was named). Every NVML call that fails leaves its field None: a card
    or driver that lacks a counter is no error, and reasons it cannot report stay unknown.
    """

    def __init__(self, nvml: Any, handle: Any, interval_s: float = NVML_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.nvml = nvml
        self.handle = handle
        self.interval_s = interval_s
        self.clock = clock
        self.samples: list[dict[str, Any]] = []
        self.dropped = 0
        self._phase = ""
        self._max_sm: int | bool | None = False  # False: not read yet
        self._t0 = 0.0
        self._lock = threading.Lock()
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

    def sm_clock(self) -> int | None:
        value = self._get(("nvmlDeviceGetClockInfo",), getattr(self.nvml, "NVML_CLOCK_SM", 1))
        return int(value) if isinstance(value, (int, float)) else None

    def max_sm_clock(self) -> int | None:
        if self._max_sm is False:
            value = self._get(("nvmlDeviceGetMaxClockInfo",), getattr(self.nvml, "NVML_CLOCK_SM", 1))
            self._max_sm = int(value) if isinstance(value, (int, float)) and value > 0 else None
        return self._max_sm if isinstance(self._max_sm, int) else None

    def phase(self, name: str) -> None:
        """Samples from now on belong to ``name`` (one is taken at once)."""
        self._phase = name
        self.sample()

    def sample(self) -> dict[str, Any]:
        n = self.nvml
        power_mw = self._get(("nvmlDeviceGetPowerUsage",))
        reasons = self._get(("nvmlDeviceGetCurrentClocksEventReasons",
                             "nvmlDeviceGetCurrentClocksThrottleReasons"))
        s = {
            "t_s": round(self.clock() - self._t0, 4),
            "phase": self._phase,
            "sm_clock_mhz": self.sm_clock(),
            "mem_clock_mhz": self._get(("nvmlDeviceGetClockInfo",), getattr(n, "NVML_CLOCK_MEM", 2)),
            "temp_c": self._get(("nvmlDeviceGetTemperature",), getattr(n, "NVML_TEMPERATURE_GPU", 0)),
            "power_w": power_mw / 1000 if isinstance(power_mw, (int, float)) else None,
            "reasons": int(reasons) if isinstance(reasons, int) else None,
        }
        with self._lock:
            if len(self.samples) < MAX_NVML_SAMPLES:
                self.samples.append(s)
            else:
                self.dropped += 1
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def other_processes(self) -> None:
        """Note the other processes on the card now (as the CPU monitor notes other CPU use):
        read when sampling starts and ends, since a listing costs more than a sample."""
        for p in gpu_processes(self.nvml, self.handle):
            if not p["own"] and p["pid"] not in SIBLING_PIDS:
                self._others[p["pid"]] = None

    def __enter__(self) -> NvmlSampler:
        self._t0 = self.clock()
        self._others: dict[int, None] = {}
        self.other_processes()
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
        self.other_processes()

    def summary(self) -> dict[str, Any]:
        """What the timed samples add up to (all samples where no phase was named).

        ``power_capped``: some sample shows the power cap; ``throttled``: some sample shows
        thermal or hardware slowdown. Both are None (unknown) when no sample had reasons, and
        their fractions count the samples that had. ``samples`` keeps at most
        ``NVML_SAMPLES_SAVED`` of them, evenly spaced, warm-up included."""
        with self._lock:
            everything = list(self.samples)
        timed = [s for s in everything if s.get("phase") == "timed"] or everything

        def stats_of(key: str) -> dict[str, float] | None:
            vals = sorted(s[key] for s in timed if isinstance(s.get(key), (int, float)))
            if not vals:
                return None
            return {"min": vals[0], "median": vals[len(vals) // 2], "max": vals[-1]}

        seen: dict[str, None] = {}
        known = capped = throttled = 0
        for s in everything:
            names = reason_names(s["reasons"]) if s.get("reasons") is not None else []
            s["reason_names"] = names
        for s in timed:
            if s.get("reasons") is None:
                continue
            known += 1
            seen.update(dict.fromkeys(s["reason_names"]))
            capped += bool(POWER_CAP.intersection(s["reason_names"]))
            throttled += bool(THROTTLING.intersection(s["reason_names"]))
        return {
            "available": True,
            "interval_s": self.interval_s,
            "n_samples": len(timed),
            "samples": thin(everything, NVML_SAMPLES_SAVED),
            "sm_clock_mhz": stats_of("sm_clock_mhz"),
            "mem_clock_mhz": stats_of("mem_clock_mhz"),
            "temp_c": stats_of("temp_c"),
            "power_w": stats_of("power_w"),
            "max_sm_clock_mhz": self.max_sm_clock(),
            "reasons_known": known == len(timed) if timed else False,
            "reasons_unknown_samples": len(timed) - known,
            "reasons_seen": list(seen),
            "power_capped": _flag(capped, known),
            "power_capped_fraction": capped / known if known else None,
            "throttled": _flag(throttled, known),
            "throttled_fraction": throttled / known if known else None,
            # other processes on the card while the case ran: it shared the GPU (contended)
            "other_processes": sorted(getattr(self, "_others", {})),
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


# --- warm-up and the launch-bound check -----------------------------------------------------


def warm_up(fn: Callable[[], object], timer: Any, clock: Clock, gpu_s: float = WARMUP_GPU_S,
            sampler: NvmlSampler | None = None) -> dict[str, Any]:
    """Run ``fn`` in blocks of about ``WARMUP_BLOCK_S`` (timed by ``timer``, on the device)
    until the SM clock is within ``WARMUP_CLOCK_FRACTION`` of its maximum (NVML; checked
    once ``WARMUP_MIN_GPU_S`` of work has run), or ``gpu_s`` of GPU work has run, or
    ``WARMUP_MAX_WALL_S`` have passed. Returns what happened, for ``extra["warmup"]``."""
    if gpu_s <= 0:
        return {"skipped": "warm-up turned off (warmup_gpu_s = 0)"}
    max_sm = sampler.max_sm_clock() if sampler is not None else None
    t0 = clock()
    gpu, calls, number, blocks = 0.0, 0, 1, 0
    stopped, sm = "gpu_time", None
    while gpu < gpu_s:
        block = timer.time_block(fn, number)
        gpu += block
        calls += number
        blocks += 1
        if block < WARMUP_BLOCK_S:
            per_call = max(block / number, 1e-9)
            number = max(number + 1, min(number * 10, math.ceil(WARMUP_BLOCK_S / per_call)))
        if sampler is not None and max_sm and gpu >= WARMUP_MIN_GPU_S:
            sm = sampler.sm_clock()
            if sm is not None and sm >= WARMUP_CLOCK_FRACTION * max_sm:
                stopped = "clock"
                break
        if (clock() - t0) * 1e-9 >= WARMUP_MAX_WALL_S:
            stopped = "wall_limit"
            break
    return {"gpu_s": gpu, "wall_s": (clock() - t0) * 1e-9, "calls": calls, "blocks": blocks,
            "stopped": stopped, "target_gpu_s": gpu_s, "sm_clock_mhz": sm,
            "max_sm_clock_mhz": max_sm}


def _median(values: list[float]) -> float:
    return stats.quantile(sorted(values), 0.5)


def launch_check(timer: EventTimer, timing: Timing, calls_per_block_call: int = 1,
                 cold_cache: bool = False) -> dict[str, Any]:
    """Host enqueue time against device time, per call, over the timer's latest blocks (as
    many as the timing has samples; each host time paired with its own block's device time);
    ``launch_bound`` when the first covers ``LAUNCH_BOUND_RATIO`` of the second.
    ``calls_per_block_call``: calls in one timed callable (a graph's ``k``)."""
    n = len(timing.samples_s)
    pairs = list(zip(timer.host_samples_s, timer.device_samples_s, strict=False))[-n:] if n else []
    if not pairs or len(pairs) != n or timing.number <= 0:
        return {"launch_bound": None, "reason": "no host enqueue times recorded"}
    host_call = _median([h / timing.number for h, _d in pairs])
    device_call = _median([d / timing.number for _h, d in pairs])
    ratio = host_call / device_call if device_call > 0 else math.inf
    out: dict[str, Any] = {
        "host_enqueue_s": host_call / calls_per_block_call,
        "device_s": device_call / calls_per_block_call,
        "ratio": ratio if math.isfinite(ratio) else None,
        "launch_bound": ratio >= LAUNCH_BOUND_RATIO,
    }
    if cold_cache:
        # each call waits behind its own flush kernel, which hides its launch: not judged
        out["launch_bound"] = None
        out["reason"] = "not judged with --cold-cache (the flush before each call hides its launch)"
    return out


# --- one case, timed with the options -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    cold_cache: bool = False
    cuda_graphs: bool = False
    nvml: bool | None = None  # None: on for CUDA cases where NVML works, silently off elsewhere
    flush_bytes: int | None = None  # None: from the cache sizes
    warmup_gpu_s: float = WARMUP_GPU_S  # CUDA warm-up: at most this much GPU work (0: none)
    nvml_interval_s: float = NVML_INTERVAL_S

    def __post_init__(self) -> None:
        if self.cold_cache and self.cuda_graphs:
            raise UsageError(
                "--cold-cache and --cuda-graphs cannot be combined: a graph replays its k calls "
                "after one flush, so all but the first would run on a warm cache; time cold "
                "calls without --cuda-graphs")
        if not (0 <= self.warmup_gpu_s <= 60 and math.isfinite(self.warmup_gpu_s)):
            raise UsageError(f"GPU warm-up of {self.warmup_gpu_s!r} s is out of range (0..60)")
        if not (0.001 <= self.nvml_interval_s <= 10):
            raise UsageError(f"NVML interval of {self.nvml_interval_s!r} s is out of range")

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
        for key, low, high in (("warmup_gpu_s", 0, 60), ("nvml_interval_s", 0.001, 10)):
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high:
                kw[key] = float(value)
        return cls(**kw)


def option_device_bytes(case: Case, options: TimingOptions, l2_bytes: int) -> dict[str, int]:
    """Device bytes the options add to a CUDA case, by what holds them: the L2 flush buffer,
    and the graph pool's first call (``graph_calls`` keeps the rest within a quarter of the
    free memory)."""
    out: dict[str, int] = {}
    if options.cold_cache:
        out["the L2 flush buffer"] = (options.flush_bytes if options.flush_bytes is not None
                                      else max(2 * l2_bytes, GPU_FLUSH_MIN_BYTES))
    if options.cuda_graphs:
        out["the CUDA graph pool"] = output_bytes(case)
    return out


def _check_option_memory(case: Case, backend: Backend, options: TimingOptions) -> None:
    """Skip (``harness.Unavailable``) a CUDA case whose options' buffers would not fit in
    what its inputs and outputs left free."""
    if not (options.cold_cache or options.cuda_graphs):
        return
    l2 = cuda_l2_bytes(cuda_index(case.backend)) if options.cold_cache and options.flush_bytes is None else 0
    need = option_device_bytes(case, options, l2)
    avail = memory_check(sum(need.values()), backend.free_memory_bytes(), backend.device)
    if not avail.ok:
        raise harness.Unavailable(f"{avail.reason} (beyond its buffers, for {' and '.join(need)})")


def time_case(case: Case, backend: Backend, prepared: Prepared, config: TimingConfig,
              clock: Clock, options: TimingOptions = TimingOptions(),
              monitor: Monitor | None = None, gate: Gate | None = None) -> tuple[Timing, dict[str, Any]]:
    """Time ``prepared.call`` with the options; returns the timing and what goes into
    ``Measurement.extra``. CUDA cases are warmed up first and checked for being launch-bound.

    Raises ``GraphCaptureError`` on a failed CUDA-graph capture and ``harness.WrongResult``
    on a wrong replay (the runner records the case as failed, with the reason), and
    ``harness.Unavailable`` when an option's buffers would not fit (skipped)."""
    extra: dict[str, Any] = {}
    cuda = is_cuda_backend(case.backend)
    if cuda:
        _check_option_memory(case, backend, options)
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
    elif options.cuda_graphs and cuda and (prepared.read is None or prepared.poison is None):
        # copies and random fills: a replay's outputs cannot be checked, and an unchecked
        # graph is not timed (an empty graph would read as a fast one)
        extra["cuda_graph"] = {"skipped": "a replay of this case cannot be checked against the reference"}
    elif options.cuda_graphs:
        if cuda:
            calls = _graph_calls_for(case, backend, fn, timer, config)
            graph, result = capture_graph(fn, calls, cuda_index(case.backend))
            extra["cuda_graph"] = {"calls_per_graph": calls}
            extra["cuda_graph"].update(check_replay(case, prepared, graph, result,
                                                    backend.device_name()))
            fn = graph.replay
        else:
            extra["cuda_graph"] = {"skipped": "not a CUDA case"}

    want_nvml = options.nvml is not False and cuda
    if want_nvml:
        with nvml_session(cuda_index(case.backend), interval_s=options.nvml_interval_s) as sampler:
            nv = sampler if isinstance(sampler, NvmlSampler) else None
            if nv is not None:
                nv.phase("warmup")
            extra["warmup"] = warm_up(fn, timer, clock, options.warmup_gpu_s, nv)
            if nv is not None:
                nv.phase("timed")
            timing = measure(fn, timer, config, clock, monitor, gate)
        if isinstance(sampler, NvmlSampler):
            extra["nvml"] = sampler.summary()
        elif options.nvml:  # asked for explicitly: say why there is nothing
            extra["nvml"] = {"available": False, "reason": sampler}
    else:
        if cuda:
            extra["warmup"] = warm_up(fn, timer, clock, options.warmup_gpu_s)
        timing = measure(fn, timer, config, clock, monitor, gate)
        if options.nvml and not cuda:
            extra["nvml"] = {"available": False, "reason": "not a CUDA case"}
    if cuda and isinstance(timer, EventTimer):
        extra["launch"] = launch_check(timer, timing, calls, options.cold_cache)
    if calls > 1:
        timing = per_call_graph_timing(timing, calls)
    return timing, extra


def _graph_calls_for(case: Case, backend: Backend, fn: Callable[[], object], timer: Any,
                     config: TimingConfig) -> int:
    # A short estimate of one call, outside any graph, sizes the graph.
    timer.time_block(fn, 3)
    per_call = timer.time_block(fn, 10) / 10
    return graph_calls(per_call, config, output_bytes(case), backend.free_memory_bytes())
