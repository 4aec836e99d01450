"""The state that explains a slow device, read while it works (for ``bench-suite doctor``).

GPU, from NVML (nvidia-ml-py), once before the probe:

* SM and memory clock maxima, the enforced power limit and its default, ECC mode and error
  counts (volatile: since the driver loaded; aggregate: the card's life), remapped rows
  (pending: a reset is due; failure: the card is out of spare rows), the PCIe link's maximum
  generation and width, and the processes on the card (our own marked);

and sampled during the probe (a thread, every ``interval_s``): SM and memory clocks, power
draw, temperature, GPU utilization, clock-event ("throttle") reasons and the PCIe link's
current generation and width. Clocks and the PCIe link drop when a card idles (power saving),
so the summary reads them from the samples taken *under load* (utilization >= 50%), and the
link at its best during the probe.

CPU: the frequency governor and driver of the cores this process may use, their clocks against
the maximum, the CPU time other processes took on those cores while the probe ran (and the
time a hypervisor stole), and the BLAS libraries loaded (threadpoolctl: library, version, the
kernel it chose, e.g. OpenBLAS ``SkylakeX``).

Every NVML call that fails leaves its field None: a card or driver that lacks a counter is no
error. ``nvidia-ml-py`` is imported lazily (``_pynvml``), and tests replace it with a fake.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench_suite.env import system
from bench_suite.env.collect import blas_info, cpu_info
from bench_suite.env.nvml import (
    REASONS,
    THROTTLING,
    PeriodicSampler,
    gpu_processes,
    reason_names,
    sampler_session,
)
from bench_suite.env.system import read_machine_ticks

#: Samples at or above this GPU utilization (percent) count as "under load".
LOAD_UTILIZATION = 50
SAMPLE_INTERVAL_S = 0.05
MAX_SAMPLES = 2000


def _pynvml() -> Any:
    import pynvml

    return pynvml


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Reader:
    """NVML calls that never raise: a failing one gives None."""

    def __init__(self, nvml: Any, handle: Any):
        self.nvml, self.handle = nvml, handle

    def __call__(self, name: str, *args: Any) -> Any:
        fn = getattr(self.nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(self.handle, *args)
        except Exception:  # NVMLError_NotSupported, NoPermission, ...
            return None

    def const(self, name: str, default: int) -> int:
        value = getattr(self.nvml, name, default)
        return value if isinstance(value, int) else default


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _watts(milliwatts: Any) -> float | None:
    v = _num(milliwatts)
    return v / 1000 if v is not None else None


def read_gpu_static(nvml: Any, handle: Any, own_pid: int | None = None) -> dict[str, Any]:
    """What does not change while the card works: limits, maxima, error counts, processes."""
    get = _Reader(nvml, handle)
    sm, mem = get.const("NVML_CLOCK_SM", 1), get.const("NVML_CLOCK_MEM", 2)
    corrected, uncorrected = (get.const("NVML_MEMORY_ERROR_TYPE_CORRECTED", 0),
                              get.const("NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1))
    volatile, aggregate = get.const("NVML_VOLATILE_ECC", 0), get.const("NVML_AGGREGATE_ECC", 1)
    ecc_mode = get("nvmlDeviceGetEccMode")
    remap = get("nvmlDeviceGetRemappedRows")
    pci = get("nvmlDeviceGetPciInfo")
    procs = gpu_processes(nvml, handle, own_pid)
    return {
        "name": _s(get("nvmlDeviceGetName") or ""),
        "uuid": _s(get("nvmlDeviceGetUUID") or ""),
        "pci_bus_id": _s(getattr(pci, "busId", "") or ""),
        "max_sm_clock_mhz": _num(get("nvmlDeviceGetMaxClockInfo", sm)),
        "max_mem_clock_mhz": _num(get("nvmlDeviceGetMaxClockInfo", mem)),
        "power_limit_w": _watts(get("nvmlDeviceGetEnforcedPowerLimit")),
        "default_power_limit_w": _watts(get("nvmlDeviceGetPowerManagementDefaultLimit")),
        "ecc_enabled": bool(ecc_mode[0]) if isinstance(ecc_mode, (tuple, list)) and ecc_mode else None,
        "ecc_uncorrected_volatile": _num(get("nvmlDeviceGetTotalEccErrors", uncorrected, volatile)),
        "ecc_corrected_volatile": _num(get("nvmlDeviceGetTotalEccErrors", corrected, volatile)),
        "ecc_uncorrected_aggregate": _num(get("nvmlDeviceGetTotalEccErrors", uncorrected, aggregate)),
        "remapped_rows": ({"corrected": remap[0], "uncorrected": remap[1], "pending": bool(remap[2]),
                           "failure": bool(remap[3])}
                          if isinstance(remap, (tuple, list)) and len(remap) >= 4 else None),
        "pcie_max_gen": _num(get("nvmlDeviceGetMaxPcieLinkGeneration")),
        "pcie_gpu_max_gen": _num(get("nvmlDeviceGetGpuMaxPcieLinkGeneration")),
        "pcie_max_width": _num(get("nvmlDeviceGetMaxPcieLinkWidth")),
        "processes": procs,
    }


def sample_gpu(nvml: Any, handle: Any) -> dict[str, Any]:
    """One reading of what changes while the card works."""
    get = _Reader(nvml, handle)
    util = get("nvmlDeviceGetUtilizationRates")
    reasons = get("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None:
        reasons = get("nvmlDeviceGetCurrentClocksThrottleReasons")
    return {
        "t": time.monotonic(),
        "sm_clock_mhz": _num(get("nvmlDeviceGetClockInfo", get.const("NVML_CLOCK_SM", 1))),
        "mem_clock_mhz": _num(get("nvmlDeviceGetClockInfo", get.const("NVML_CLOCK_MEM", 2))),
        "power_w": _watts(get("nvmlDeviceGetPowerUsage")),
        "temp_c": _num(get("nvmlDeviceGetTemperature", get.const("NVML_TEMPERATURE_GPU", 0))),
        "util_pct": _num(getattr(util, "gpu", None)),
        "reasons": int(reasons) if isinstance(reasons, int) else None,
        "pcie_gen": _num(get("nvmlDeviceGetCurrPcieLinkGeneration")),
        "pcie_width": _num(get("nvmlDeviceGetCurrPcieLinkWidth")),
    }


def _median(values: list[float]) -> float | None:
    vals = sorted(values)
    return vals[len(vals) // 2] if vals else None


def summarize_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The samples under load (all of them if none was): median clocks, peak power and
    temperature, the best PCIe link seen, and the share of samples showing each reason."""
    loaded = [s for s in samples if (s.get("util_pct") or 0) >= LOAD_UTILIZATION]
    use = loaded or samples

    def vals(key: str) -> list[float]:
        return [s[key] for s in use if isinstance(s.get(key), (int, float))]

    counts: dict[str, int] = {}
    throttled = 0
    for s in use:
        names = reason_names(s["reasons"]) if s.get("reasons") is not None else []
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        throttled += bool(THROTTLING.intersection(names))
    n = len(use) or 1
    link_gen, link_width = vals("pcie_gen"), vals("pcie_width")
    return {
        "samples": len(samples),
        "under_load": len(loaded),
        "sm_clock_mhz": _median(vals("sm_clock_mhz")),
        "mem_clock_mhz": _median(vals("mem_clock_mhz")),
        "max_power_w": max(vals("power_w"), default=None),
        "max_temp_c": max(vals("temp_c"), default=None),
        "reasons": {k: v / n for k, v in sorted(counts.items(), key=lambda kv: list(REASONS.values()).index(kv[0]))},
        "throttled_fraction": throttled / n,
        "pcie_gen": max(link_gen, default=None),
        "pcie_width": max(link_width, default=None),
    }


class GpuStateSampler(PeriodicSampler):
    """Around a probe: the static state at the start, samples during, a summary after."""

    thread_name = "doctor-nvml"

    def __init__(self, nvml: Any, handle: Any, interval_s: float = SAMPLE_INTERVAL_S,
                 own_pid: int | None = None):
        super().__init__(interval_s)
        self.nvml, self.handle, self.own_pid = nvml, handle, own_pid
        self.static: dict[str, Any] = {}
        self.samples: list[dict[str, Any]] = []

    def sample(self) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample_gpu(self.nvml, self.handle))

    def begin(self) -> None:
        self.static = read_gpu_static(self.nvml, self.handle, self.own_pid)

    def state(self) -> dict[str, Any]:
        return {"available": True, **self.static, "load": summarize_samples(self.samples)}


@contextlib.contextmanager
def gpu_state_session(index: int, nvml: Any = None, torch: Any = None,
                      interval_s: float = SAMPLE_INTERVAL_S) -> Iterator[GpuStateSampler | str]:
    """A :class:`GpuStateSampler` for CUDA device ``index``, or a string saying why none."""
    if nvml is None:
        try:
            nvml = _pynvml()
        except ImportError:
            yield "nvidia-ml-py (pynvml) is not installed: pip install nvidia-ml-py"
            return
    with sampler_session(index, lambda nv, handle: GpuStateSampler(nv, handle, interval_s), nvml, torch) as s:
        yield s


# --- CPU ------------------------------------------------------------------------------------


class CpuLoadMeter:
    """CPU time other processes took on this process's cores while the block ran, in cores,
    and the time a hypervisor stole from them (``steal``): what else was competing."""

    def __init__(self, cpus: list[int] | None = None, stat: str = system.PROC_STAT,
                 clock: Callable[[], float] = time.monotonic):
        self.cpus = set(cpus if cpus is not None else system.usable_cpus())
        self.stat, self.clock = stat, clock
        self.result: dict[str, Any] = {}

    def __enter__(self) -> CpuLoadMeter:
        self._t0, self._own0 = self.clock(), _own_cpu_s()
        self._s0 = read_machine_ticks(self.stat, frozenset(self.cpus))
        return self

    def __exit__(self, *exc: object) -> None:
        wall = self.clock() - self._t0
        own = _own_cpu_s() - self._own0
        s1 = read_machine_ticks(self.stat, frozenset(self.cpus))
        if self._s0 is None or s1 is None or wall <= 0:
            self.result = {"other_cores": None, "steal_cores": None, "wall_s": wall,
                           "cores": len(self.cpus)}
            return
        busy = s1.busy_s - self._s0.busy_s
        steal = s1.steal_s - self._s0.steal_s
        self.result = {"other_cores": max(0.0, (busy - own) / wall),
                       "steal_cores": max(0.0, steal / wall), "wall_s": wall,
                       "cores": len(self.cpus)}


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def cpu_state(cpus: list[int] | None = None) -> dict[str, Any]:
    """Governor and clocks of the usable cores, the load average, the BLAS libraries."""
    cpus = sorted(system.usable_cpus()) if cpus is None else cpus
    return {"cpus": len(cpus), **system.cpu_frequency_state(cpus), "load_average_1m": system.load_average(),
            "blas": blas_info(), "cpu": cpu_info()}
