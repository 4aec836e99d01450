"""Every reading of the kernel's files about this machine, in one place: ``/proc`` and sysfs.

* the CPU: ``/proc/cpuinfo`` (model, clock, flags, cores), cpufreq (governor, driver, clocks),
  the cache sizes, the core topology (hyperthread siblings);
* memory: ``/proc/meminfo``;
* CPU time: ``/proc/stat`` (busy and steal ticks per core), ``/proc/*/task/*/schedstat``
  (our threads' run-queue wait, a process's CPU time), ``/proc/loadavg``;
* the PCIe link of a device (sysfs ``max_link_speed`` ...).

Every reader takes its path as a parameter (tests hand it a folder of their own) and says
"unknown" (None, empty) where the file is missing or unreadable: not Linux, a container, a VM
without cpufreq. Nothing here judges what it reads (``core.interference``, ``analysis``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_ROOT = "/sys/devices/system/cpu"
PROC_STAT = "/proc/stat"
PCI_DEVICES = "/sys/bus/pci/devices"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# --- the CPU --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says (the first CPU's lines)."""

    model: str  # "model name"; "" where there is none (ARM)
    mhz: float | None  # "cpu MHz": in a VM usually the nominal (TSC) clock
    flags: frozenset[str]  # "flags" (x86)
    features: frozenset[str]  # "Features" (ARM)
    physical_cores: int | None  # distinct (physical id, core id) pairs


def cpuinfo(path: str = "/proc/cpuinfo") -> CpuInfo:
    model, mhz = "", None
    flags: set[str] = set()
    features: set[str] = set()
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    for line in _read(path).splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "Features" and not features:
            features = set(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    return CpuInfo(model, mhz, frozenset(flags), frozenset(features), len(cores) or None)


def cpu_model() -> str:
    """The CPU's model name, else what ``platform`` says, else "cpu"."""
    return cpuinfo().model or platform.processor() or platform.machine() or "cpu"


def usable_cpus() -> frozenset[int]:
    """The cores this process may run on."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return frozenset(range(os.cpu_count() or 1))


def _khz(text: str) -> float | None:
    return int(text) / 1e3 if text.isdigit() else None


def _median(values: list[float]) -> float | None:
    vals = sorted(values)
    return vals[len(vals) // 2] if vals else None


def scaling_governor(cpu: int = 0, root: str = CPU_ROOT) -> str | None:
    """cpufreq's governor of one core; None where the kernel (or a VM) has no cpufreq."""
    return _read(f"{root}/cpu{cpu}/cpufreq/scaling_governor").strip() or None


def cpu_frequency_state(cpus: Iterable[int], root: str = CPU_ROOT) -> dict[str, Any]:
    """Governor, driver and clocks (MHz) of ``cpus`` from cpufreq; None where the kernel (or a
    VM) exposes no cpufreq."""
    governors: dict[str, int] = {}
    cur, top = [], []
    driver = ""
    for c in cpus:
        base = f"{root}/cpu{c}/cpufreq"
        gov = _read(f"{base}/scaling_governor").strip()
        if gov:
            governors[gov] = governors.get(gov, 0) + 1
        driver = driver or _read(f"{base}/scaling_driver").strip()
        if (f := _khz(_read(f"{base}/scaling_cur_freq").strip())) is not None:
            cur.append(f)
        if (m := _khz(_read(f"{base}/cpuinfo_max_freq").strip())) is not None:
            top.append(m)
    return {
        "governor": max(governors, key=governors.__getitem__) if governors else None,
        "governors": governors,
        "driver": driver or None,
        "cur_mhz": _median(cur),
        "max_mhz": max(top, default=None),
    }


#: cpufreq's maximum clock of CPU 0 (kHz).
CPU0_MAX_FREQ = f"{CPU_ROOT}/cpu0/cpufreq/cpuinfo_max_freq"


def cpu_max_khz(path: str = CPU0_MAX_FREQ) -> int | None:
    """The highest clock the kernel will run a core at (cpufreq ``cpuinfo_max_freq``, turbo
    included), in kHz; None where it is not exposed."""
    text = _read(path).strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def cpu_cache_bytes(root: str = f"{CPU_ROOT}/cpu0/cache") -> int | None:
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


def cpu_list(text: str) -> set[int]:
    """The CPUs of a kernel CPU list (``"0-3,8"``)."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (hi.isdigit() or not hi):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def core_siblings(cpu: int, root: str = CPU_ROOT) -> set[int]:
    """The CPUs that share ``cpu``'s physical core (hyperthread siblings, itself included
    where the kernel lists it); empty where the topology is not exposed."""
    text = (_read(f"{root}/cpu{cpu}/topology/core_cpus_list").strip()
            or _read(f"{root}/cpu{cpu}/topology/thread_siblings_list").strip())
    return cpu_list(text)


# --- memory ---------------------------------------------------------------------------------


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """The fields of ``/proc/meminfo`` given in kB, in bytes; {} where it cannot be read."""
    out: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            try:
                out[key] = int(parts[0]) * 1024
            except ValueError:
                continue
    return out


def host_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    return meminfo().get("MemAvailable")


# --- CPU time: other processes, our threads -------------------------------------------------

#: Ticks per second of /proc/stat (USER_HZ).
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class MachineTicks:
    """Cumulative CPU seconds of a set of cores, from their lines of ``/proc/stat``."""

    busy_s: float  # user, nice, system, irq, softirq (guest time is inside user)
    steal_s: float
    cpus: int = 1  # how many cores were summed (each line is truncated to a tick)


def read_machine_ticks(path: str = PROC_STAT, cpus: frozenset[int] | None = None) -> MachineTicks | None:
    """Busy and steal seconds summed over ``cpus`` (default: this process's cores); None
    where ``/proc/stat`` cannot be read or lists none of them."""
    cpus = usable_cpus() if cpus is None else cpus
    try:
        with open(path, encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    busy = steal = 0
    found = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        try:
            user, nice, system, _idle, _iowait, irq, softirq, st = (int(x) for x in rest.split()[:8])
        except ValueError:
            continue
        busy += user + nice + system + irq + softirq
        steal += st
        found += 1
    return MachineTicks(busy / _HZ, steal / _HZ, found) if found else None


def load_average(path: str = "/proc/loadavg") -> float | None:
    """The 1-minute load average."""
    text = _read(path).split()
    try:
        return float(text[0])
    except (IndexError, ValueError):
        return None


class ThreadWait:
    """Total run-queue wait of this process's threads, in nanoseconds (``schedstat``).

    The files are opened once and re-read with ``pread``: a few microseconds per thread.
    :meth:`refresh` picks up threads started since (thread pools start on first use).
    """

    def __init__(self, task_dir: str = "/proc/self/task"):
        self.task_dir = task_dir
        self._fds: dict[str, int] = {}
        self._base = 0  # wait of threads that have exited since, so totals never go back
        self._last: dict[str, int] = {}
        self.available = os.path.isdir(task_dir)

    def refresh(self) -> None:
        if not self.available:
            return
        try:
            tids = set(os.listdir(self.task_dir))
        except OSError:
            self.available = False
            return
        for tid in list(self._fds):
            if tid not in tids:
                self._base += self._last.pop(tid, 0)
                with contextlib.suppress(OSError):
                    os.close(self._fds.pop(tid))
        for tid in tids - set(self._fds):
            with contextlib.suppress(OSError):
                self._fds[tid] = os.open(f"{self.task_dir}/{tid}/schedstat", os.O_RDONLY)

    def total_ns(self) -> int | None:
        if not self.available:
            return None
        total = self._base
        for tid, fd in list(self._fds.items()):
            try:
                wait = int(os.pread(fd, 128, 0).split()[1])
            except (OSError, ValueError, IndexError):  # the thread exited: keep its last figure
                wait = self._last.get(tid, 0)
            self._last[tid] = wait
            total += wait
        return total

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def thread_ids(task_dir: str = "/proc/self/task") -> list[int] | None:
    """The ids of this process's threads; None where they cannot be listed."""
    try:
        return [int(t) for t in os.listdir(task_dir)]
    except OSError:
        return None


def process_cpu_ns(pid: int) -> int | None:
    """Total CPU time of a process's threads in nanoseconds (Linux ``schedstat``)."""
    return _run_ns(f"/proc/{pid}/task")


def _run_ns(task_dir: str, skip: int | None = None) -> int | None:
    """CPU nanoseconds of the threads under ``task_dir`` (but thread ``skip``); None if unreadable."""
    total = 0
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return None
    for tid in tids:
        if tid == str(skip):
            continue
        try:
            with open(f"{task_dir}/{tid}/schedstat", "rb") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def settle(limit_s: float = 0.5, quiet_s: float = 0.005, busy_frac: float = 0.1,
           task_dir: str = "/proc/self/task") -> float:
    """Wait until this process's other threads have gone quiet; the seconds waited.

    A BLAS or OpenMP pool spins for work for up to a tenth of a second after its last call:
    after the float64 reference (all cores) or a previous case, that spin takes a core from
    the case about to be timed, whose first samples then wait for it (seen: three runnable
    threads on two cores, half of every sample spent waiting). Quiet means the other threads
    used less than ``busy_frac`` of a core over ``quiet_s``; never longer than ``limit_s``.
    """
    import threading

    me = threading.get_native_id()
    t0 = time.perf_counter()
    last = _run_ns(task_dir, me)
    if last is None:
        return 0.0
    while time.perf_counter() - t0 < limit_s:
        time.sleep(quiet_s)
        now = _run_ns(task_dir, me)
        if now is None or now - last < busy_frac * quiet_s * 1e9:
            break
        last = now
    return time.perf_counter() - t0


# --- devices --------------------------------------------------------------------------------

#: PCIe transfer rate (GT/s) -> generation, as sysfs writes the speed ("16.0 GT/s PCIe").
_PCIE_GT_S = {"2.5": 1, "5": 2, "5.0": 2, "8": 3, "8.0": 3, "16": 4, "16.0": 4, "32": 5,
              "32.0": 5, "64": 6, "64.0": 6}


def pcie_link(device: Path) -> dict[str, Any]:
    """A PCI device's link from sysfs (``device``: its folder under ``PCI_DEVICES``):
    ``{"kind": "pcie", "generation", "width", "current_generation", "current_width",
    "source": "sysfs"}``; ``{}`` where sysfs does not say."""
    def read(name: str) -> str:
        return _read(str(device / name)).strip()

    def gen(speed: str) -> int | None:
        return _PCIE_GT_S.get(speed.split()[0]) if speed else None

    def width(text: str) -> int | None:
        return int(text) if text.isdigit() and int(text) > 0 else None

    max_gen, max_width = gen(read("max_link_speed")), width(read("max_link_width"))
    if max_gen is None or max_width is None:
        return {}
    return {"kind": "pcie", "generation": max_gen, "width": max_width,
            "current_generation": gen(read("current_link_speed")),
            "current_width": width(read("current_link_width")), "source": "sysfs"}
