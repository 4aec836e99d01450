"""Interference: did other work hold the CPU while a case was being timed?

On a shared machine the clock cannot tell a slow kernel from a kernel that waited for a core.
Two readings tell them apart, and this module takes both around the timing loop:

* **Per sample, our threads' run-queue wait** (``/proc/self/task/*/schedstat``, field 2, in
  nanoseconds): time our threads were ready to run but had no core. It is precise and cheap
  (one ``pread`` per thread), so every sample is judged by it: a sample during which our
  threads waited more than :data:`DISTURBED_WAIT_FRAC` of its wall time was *disturbed* and
  is retaken (within a bound; see ``timing.measure``).
* **Per case, other processes' CPU time** on the cores this process may run on (``/proc/stat``,
  per CPU, minus this process's own CPU time) and the hypervisor's **steal** time there, per
  wall second of sampling: the ``contention`` figure, in cores. 0 is an idle machine; a busy
  loop elsewhere reads about 1. Only this process's cores count: ranks pinned to other cores
  of the same node (torchrun on a CPU node) are not contention. ``/proc/stat`` counts in 10 ms
  ticks, too coarse for one sample but fine over a case's sampling window (tenths of a second
  and more).

A case is *contended* (:func:`is_contended`) when, after its retakes, other processes and
steal still took cores that the case's threads needed, or its threads still waited for a core.
Contended figures are flagged everywhere and never called slower or faster by ``compare``.

The readers are parameters of the monitor, so tests drive it with fakes; where ``/proc`` is
missing (not Linux) every figure is ``None`` and nothing is ever called contended.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

#: A sample is disturbed when our threads waited for a core this fraction of its wall time.
#: Waking a sleeping BLAS or OpenMP thread costs tens of microseconds of wait on an idle
#: machine; a core taken by another process costs whole time slices (milliseconds).
DISTURBED_WAIT_FRAC = 0.05
#: A case is contended when its threads plus other processes and steal need more cores than
#: there are, less this margin (so a 1-thread case on 2 cores tolerates a neighbour's
#: occasional burst, but not a busy loop on the other core) ...
CONTENDED_CORE_MARGIN = 0.5
#: ... or when, after the retakes, its kept samples still spent this much time waiting.
CONTENDED_WAIT_FRAC = 0.02
#: Ticks per second of /proc/stat (USER_HZ).
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


#: Processes that share this one's cores by design (the other side of an ``ab``, taking
#: turns with it sample by sample): their CPU time is not "other processes" (set by the worker).
SIBLING_PIDS: set[int] = set()


@dataclass(frozen=True)
class MachineTicks:
    """Cumulative CPU seconds of a set of cores, from their lines of ``/proc/stat``."""

    busy_s: float  # user, nice, system, irq, softirq (guest time is inside user)
    steal_s: float
    cpus: int = 1  # how many cores were summed (each line is truncated to a tick)


def usable_cpus() -> frozenset[int]:
    """The cores this process may run on."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return frozenset(range(os.cpu_count() or 1))


def read_machine_ticks(path: str = "/proc/stat", cpus: frozenset[int] | None = None) -> MachineTicks | None:
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


@dataclass(frozen=True)
class Interference:
    """What other work did while one case (one round of it) was sampled. ``None``: unknown."""

    other_cores: float | None  # other processes' CPU seconds per wall second
    steal_cores: float | None  # hypervisor steal, CPU seconds per wall second
    wait_frac: float | None  # our threads' run-queue wait per wall second, kept samples
    disturbed: int  # samples seen disturbed (retaken or kept)
    retaken: int  # disturbed samples thrown away and taken again
    kept_disturbed: int  # disturbed samples kept (the retake bound was reached)
    wall_s: float  # the sampling window
    cpus: int = 1  # the cores the other-process figure was read over

    @property
    def known(self) -> bool:
        return self.other_cores is not None or self.wait_frac is not None


NO_INTERFERENCE_DATA = Interference(None, None, None, 0, 0, 0, 0.0)


#: Uncertainty of a CPU-seconds difference read from /proc/stat, per core read and one more:
#: each core's counters are truncated to whole ticks, and our own time is charged there by
#: the scheduler tick, not exactly.
TICK_UNCERTAINTY_S = 0.015
#: Least other-process load that counts at all (a daemon's wake-ups are not contention).
MIN_OTHER_CORES = 0.25
#: A window's other-process load is judged once its tick uncertainty is at most this
#: fraction of it (see ``Monitor.undecided``).
JUDGED_REL_UNCERTAINTY = 0.25


def is_contended(i: Interference, threads: int, cores: int) -> bool:
    """Whether other work took cores this case needed (see the module's doc).

    ``threads``: the case's threads in force; ``cores``: the cores this process may use.
    The other-process figure is lowered by its tick uncertainty over the window first, so a
    short window on an idle machine is never called contended by rounding alone.
    """
    if i.wait_frac is not None and i.wait_frac > CONTENDED_WAIT_FRAC:
        return True
    if i.other_cores is None or i.wall_s <= 0:
        return False
    rounding = TICK_UNCERTAINTY_S * (i.cpus + 1) / i.wall_s
    others = max(0.0, i.other_cores + (i.steal_cores or 0.0) - rounding)
    return others > MIN_OTHER_CORES and threads + others > cores - CONTENDED_CORE_MARGIN


class Monitor:
    """Watches one sampling window: each sample's wait, and the window's other-process CPU.

    ``timing.measure`` calls :meth:`start` after warm-up, :meth:`sample_begin` and
    :meth:`sample_end` around every sample (outside the timed region), and :meth:`finish`.
    """

    def __init__(
        self,
        threads: ThreadWait | None = None,
        machine: Callable[[], MachineTicks | None] = read_machine_ticks,
        own_cpu_ns: Callable[[], int] = time.process_time_ns,
        wall_ns: Callable[[], int] = time.perf_counter_ns,
        disturbed_frac: float = DISTURBED_WAIT_FRAC,
    ):
        self.threads = threads if threads is not None else ThreadWait()
        self.machine = machine
        self.own_cpu_ns = own_cpu_ns
        self.wall_ns = wall_ns
        self.disturbed_frac = disturbed_frac
        self.siblings = SIBLING_PIDS
        self._reset()

    def _siblings_ns(self) -> int:
        return sum(process_cpu_ns(p) or 0 for p in self.siblings)

    def _reset(self) -> None:
        self._m0: MachineTicks | None = None
        self._cpu0 = self._wall0 = self._sib0 = 0
        self._kept_wait = self._kept_wall = 0
        self.disturbed = self.retaken = self.kept_disturbed = 0

    def start(self) -> None:
        self._reset()
        self.threads.refresh()
        self._m0 = self.machine()
        self._cpu0 = self.own_cpu_ns()
        self._sib0 = self._siblings_ns()
        self._wall0 = self.wall_ns()

    def sample_begin(self) -> tuple[int | None, int]:
        return self.threads.total_ns(), self.wall_ns()

    def sample_end(self, token: tuple[int | None, int]) -> tuple[bool, int, int]:
        """Whether the sample was disturbed, its wait and its wall time (ns)."""
        wait0, wall0 = token
        wait1, wall = self.threads.total_ns(), self.wall_ns() - wall0
        if wait0 is None or wait1 is None or wall <= 0:
            return False, 0, max(wall, 0)
        wait = max(wait1 - wait0, 0)
        disturbed = wait > self.disturbed_frac * wall
        self.disturbed += disturbed
        return disturbed, wait, wall

    def keep(self, disturbed: bool, wait: int, wall: int) -> None:
        """A sample is kept (not retaken): it counts towards the window's wait figure."""
        self._kept_wait += wait
        self._kept_wall += wall
        self.kept_disturbed += disturbed

    def retake(self) -> None:
        self.retaken += 1

    def undecided(self) -> bool:
        """Whether other processes' load over the window so far is too uncertain to judge:
        above :data:`MIN_OTHER_CORES` as read, but its tick uncertainty is more than
        :data:`JUDGED_REL_UNCERTAINTY` of it (a busy loop elsewhere, seen over a few
        hundredths of a second). ``timing.measure`` then samples on, within its budget."""
        m1 = self.machine()
        wall = (self.wall_ns() - self._wall0) * 1e-9
        if self._m0 is None or m1 is None or wall <= 0:
            return False
        own = (self.own_cpu_ns() - self._cpu0) * 1e-9
        siblings = (self._siblings_ns() - self._sib0) * 1e-9
        load = (m1.busy_s - self._m0.busy_s + m1.steal_s - self._m0.steal_s - own - siblings) / wall
        rounding = TICK_UNCERTAINTY_S * (m1.cpus + 1) / wall
        return load > MIN_OTHER_CORES and rounding > JUDGED_REL_UNCERTAINTY * load

    def finish(self) -> Interference:
        wall = (self.wall_ns() - self._wall0) * 1e-9
        m1 = self.machine()
        other = steal = None
        if self._m0 is not None and m1 is not None and wall > 0:
            own = (self.own_cpu_ns() - self._cpu0) * 1e-9
            siblings = (self._siblings_ns() - self._sib0) * 1e-9
            other = max(0.0, (m1.busy_s - self._m0.busy_s - own - siblings) / wall)
            steal = max(0.0, (m1.steal_s - self._m0.steal_s) / wall)
        wait = (self._kept_wait / self._kept_wall
                if self.threads.available and self._kept_wall > 0 else None)
        return Interference(other, steal, wait, self.disturbed, self.retaken, self.kept_disturbed,
                            wall, m1.cpus if m1 is not None else 1)


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
