"""NVML (nvidia-ml-py): what the GPU driver says about a card.

* :class:`NvmlSampler` (:func:`nvml_session`): SM and memory clocks, temperature, power and
  the clock-event ("throttle") reasons of one card, sampled every ``interval_s`` (15 ms) on a
  thread while a case is warmed up and timed. The power cap (``power_capped``: the card held
  its power limit, as dense GEMMs routinely do) is kept apart from throttling (``throttled``:
  thermal or hardware slowdown); both are None where NVML could not report reasons. Other
  processes on the card are noted when sampling starts and ends.
* :func:`nvml_info`: driver version, clock maxima, power limit and bus id (the environment
  record); :func:`nvml_link`: the card's link to the host (PCIe generation and width, or
  NVLink-C2C).
* :data:`REASONS`, :data:`POWER_CAP`, :data:`THROTTLING`: the reason bits and what they mean.

Every NVML call that fails leaves its field None: a card or driver that lacks a counter is no
error. pynvml and torch are imported lazily and can be replaced by fakes (``_pynvml``,
``_torch``) in tests.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

#: Sampling period during a case, and the samples kept in memory and in the file (evenly
#: thinned; the statistics use all of them).
NVML_INTERVAL_S = 0.015
MAX_NVML_SAMPLES = 20_000
NVML_SAMPLES_SAVED = 200


def _torch() -> Any:
    import torch

    return torch


def _pynvml() -> Any:
    import pynvml

    return pynvml


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


_S = TypeVar("_S", bound="PeriodicSampler")


class PeriodicSampler:
    """A context manager that calls :meth:`sample` on entering, every ``interval_s`` in a
    daemon thread of its own (never with 0), and on leaving; :meth:`begin` runs first and
    :meth:`end` last (what a sampler reads once, such as the processes on the card)."""

    thread_name = "sampler"

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> Any:
        raise NotImplementedError

    def begin(self) -> None:
        pass

    def end(self) -> None:
        pass

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self: _S) -> _S:
        self.begin()
        self.sample()
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        self.end()


class NvmlSampler(PeriodicSampler):
    """Samples one card's clocks, temperature, power and clock-event reasons.

    Use as a context manager around the warm-up and the timed region; :meth:`phase` names
    what follows ("warmup", "timed"), and :meth:`summary` describes the timed samples (all of
    them where no phase was named). Every NVML call that fails leaves its field None: a card
    or driver that lacks a counter is no error, and reasons it cannot report stay unknown.
    """

    thread_name = "nvml-sampler"

    def __init__(self, nvml: Any, handle: Any, interval_s: float = NVML_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, ignore_pids: Collection[int] = ()):
        super().__init__(interval_s)
        self.nvml = nvml
        # processes that share the card by design (the other side of an ``ab``): not "other
        # processes" (the caller's live set, read at each listing)
        self.ignore_pids = ignore_pids
        self.handle = handle
        self.clock = clock
        self.samples: list[dict[str, Any]] = []
        self.dropped = 0
        self._phase = ""
        self._max_sm: int | bool | None = False  # False: not read yet
        self._t0 = 0.0
        self._lock = threading.Lock()
        self._others: dict[int, None] = {}

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

    def other_processes(self) -> None:
        """Note the other processes on the card now (as the CPU monitor notes other CPU use):
        read when sampling starts and ends, since a listing costs more than a sample."""
        for p in gpu_processes(self.nvml, self.handle):
            if not p["own"] and p["pid"] not in self.ignore_pids:
                self._others[p["pid"]] = None

    def begin(self) -> None:
        self._t0 = self.clock()
        self._others = {}
        self.other_processes()

    def end(self) -> None:
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
            "other_processes": sorted(self._others),
        }


@contextlib.contextmanager
def nvml_open(nvml: Any = None) -> Iterator[Any | str]:
    """NVML initialised for the block (the module, or ``nvml`` when given), or a string saying
    why there is none: nvidia-ml-py not installed, no driver or library. Shut down after."""
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
        yield nvml
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _query(fn: Callable[[], Any]) -> Any:
    """One NVML query; None where this driver or card does not support it."""
    try:
        return fn()
    except Exception:
        return None


_P = TypeVar("_P", bound=PeriodicSampler)


@contextlib.contextmanager
def sampler_session(index: int, make: Callable[[Any, Any], _P], nvml: Any = None,
                    torch: Any = None) -> Iterator[_P | str]:
    """``make(nvml, handle)`` running for CUDA device ``index`` while the block runs, or a
    string saying why there is none (no nvidia-ml-py, no NVML, no handle)."""
    with nvml_open(nvml) as opened:
        if isinstance(opened, str):
            yield opened
            return
        try:
            handle = nvml_handle(opened, index, torch)
        except Exception as exc:
            yield f"no NVML handle for cuda:{index}: {exc}"[:200]
            return
        with make(opened, handle) as sampler:
            yield sampler


def nvml_session(index: int, nvml: Any = None, torch: Any = None,
                 interval_s: float = NVML_INTERVAL_S,
                 ignore_pids: Collection[int] = ()) -> contextlib.AbstractContextManager[NvmlSampler | str]:
    """An :class:`NvmlSampler` for CUDA device ``index``, or a string saying why there is none.
    ``ignore_pids``: processes on the card that are not "other processes" (see the sampler)."""
    return sampler_session(index, lambda nv, handle: NvmlSampler(nv, handle, interval_s, ignore_pids=ignore_pids),
                           nvml, torch)


def nvml_link(index: int, bus_id: str | None, nvml: Any = None) -> dict[str, Any]:
    """A card's link to the host as NVML reports it (see ``collect.link_info``); ``{}`` where
    NVML cannot say."""
    with nvml_open(nvml) as nv:
        if isinstance(nv, str):
            return {}
        handle = _query(lambda: nv.nvmlDeviceGetHandleByPciBusId(bus_id.encode())) if bus_id else None
        if handle is None:
            handle = _query(lambda: nv.nvmlDeviceGetHandleByIndex(index))
        if handle is None:
            return {}

        def get(fn: str) -> Any:
            return _query(lambda: getattr(nv, fn)(handle))

        c2c = get("nvmlDeviceGetC2cModeInfoV")
        if c2c is not None and getattr(c2c, "isC2cEnabled", 0):
            return {"kind": "nvlink-c2c", "source": "nvml"}
        gen, width = get("nvmlDeviceGetMaxPcieLinkGeneration"), get("nvmlDeviceGetMaxPcieLinkWidth")
        if not (isinstance(gen, int) and isinstance(width, int) and gen > 0 and width > 0):
            return {}
        return {"kind": "pcie", "generation": gen, "width": width,
                "current_generation": get("nvmlDeviceGetCurrPcieLinkGeneration"),
                "current_width": get("nvmlDeviceGetCurrPcieLinkWidth"), "source": "nvml"}


def nvml_info(index: int, nvml: Any = None) -> dict[str, Any]:
    """Driver version and clocks from NVML, where nvidia-ml-py and a driver are present."""
    with nvml_open(nvml) as nv:
        if isinstance(nv, str):
            return {}
        handle = _query(lambda: nv.nvmlDeviceGetHandleByIndex(index))
        driver = _query(nv.nvmlSystemGetDriverVersion)
        if handle is None or driver is None:
            return {}
        return {
            "driver": _s(driver),
            "max_sm_clock_mhz": _query(lambda: nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_SM)),
            "max_mem_clock_mhz": _query(lambda: nv.nvmlDeviceGetMaxClockInfo(handle, nv.NVML_CLOCK_MEM)),
            "power_limit_w": _query(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000),
            "pci_bus_id": _query(lambda: _s(nv.nvmlDeviceGetPciInfo(handle).busId)),
        }


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
