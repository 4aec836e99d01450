"""The monitor that watches every sample of a case for interference (see ``core.interference``).

Two readings, both from ``env.system``:

* **Per sample, our threads' run-queue wait** (``/proc/self/task/*/schedstat``, field 2, in
  nanoseconds): time our threads were ready to run but had no core. It is precise and cheap
  (one ``pread`` per thread), so every sample is judged by it: a sample during which our
  threads waited more than :data:`DISTURBED_WAIT_FRAC` of its wall time was *disturbed* and
  is retaken (within a bound; see ``timing.measure``).
* **Per case, other processes' CPU time** on the cores this process may run on (``/proc/stat``,
  per CPU, minus this process's own CPU time and that of its :data:`SIBLING_PIDS`) and the
  hypervisor's **steal** time there, per wall second of sampling: the ``contention`` figure,
  in cores. Only this process's cores count: ranks pinned to other cores of the same node
  (torchrun on a CPU node) are not contention. ``/proc/stat`` counts in 10 ms ticks, too
  coarse for one sample but fine over a case's sampling window (tenths of a second and more).

The readers are parameters of the monitor, so tests drive it with fakes; where ``/proc`` is
missing (not Linux) every figure is ``None`` and nothing is ever called contended.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench_suite.core.interference import Interference, load_undecided
from bench_suite.env.system import MachineTicks, ThreadWait, process_cpu_ns, read_machine_ticks

#: A sample is disturbed when our threads waited for a core this fraction of its wall time.
#: Waking a sleeping BLAS or OpenMP thread costs tens of microseconds of wait on an idle
#: machine; a core taken by another process costs whole time slices (milliseconds).
DISTURBED_WAIT_FRAC = 0.05


#: Processes that share this one's cores by design (the other side of an ``ab``, taking
#: turns with it sample by sample): their CPU time is not "other processes" (set by the worker).
SIBLING_PIDS: set[int] = set()


class Monitor:
    """Watches one sampling window: each sample's wait, and the window's other-process CPU
    (a ``core.interference.SampleMonitor``).

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
        """Whether other processes' load over the window so far is too uncertain to judge
        (``core.interference.load_undecided``)."""
        m1 = self.machine()
        wall = (self.wall_ns() - self._wall0) * 1e-9
        if self._m0 is None or m1 is None or wall <= 0:
            return False
        own = (self.own_cpu_ns() - self._cpu0) * 1e-9
        siblings = (self._siblings_ns() - self._sib0) * 1e-9
        load = (m1.busy_s - self._m0.busy_s + m1.steal_s - self._m0.steal_s - own - siblings) / wall
        return load_undecided(load, wall, m1.cpus)

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
