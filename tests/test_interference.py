"""Interference: the monitor's judgement of samples and cases, with fakes and with a real busy
process; the timing loop's retakes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench_suite.backends import Prepared, get_backend
from bench_suite.core import interference as itf
from bench_suite.core.cases import Case, cpu_count
from bench_suite.core.interference import Interference, is_contended
from bench_suite.core.timing import MIN_RETAKES, HostTimer, SamplingPlan, measure
from bench_suite.env import system
from bench_suite.env.system import MachineTicks, ThreadWait
from bench_suite.measure.interference import Monitor
from bench_suite.measure.runner import RunOptions, run_case
from tests.fakes import FakeClock, FakeWork


class FakeThreads(ThreadWait):
    """Run-queue wait that grows by ``wait_ns`` whenever ``total_ns`` is read while ``busy``."""

    def __init__(self) -> None:
        self.available = True
        self.total = 0
        self.busy = False
        self.wait_ns = 0

    def refresh(self) -> None:
        pass

    def total_ns(self) -> int:
        if self.busy:
            self.total += self.wait_ns
        return self.total


def _monitor(threads: ThreadWait, ticks: list[MachineTicks | None], cpu: list[int],
             wall: FakeClock) -> Monitor:
    return Monitor(threads=threads, machine=lambda: ticks.pop(0), own_cpu_ns=lambda: cpu.pop(0),
                   wall_ns=wall)


def test_a_sample_is_disturbed_when_our_threads_waited_for_a_core() -> None:
    wall = FakeClock()
    threads = FakeThreads()
    m = _monitor(threads, [MachineTicks(0, 0), MachineTicks(0, 0)], [0, 0], wall)
    m.start()
    token = m.sample_begin()
    wall.advance(1_000_000)
    assert m.sample_end(token) == (False, 0, 1_000_000)
    threads.busy, threads.wait_ns = True, 200_000  # waited 0.2 ms of a 1 ms sample
    token = m.sample_begin()
    wall.advance(1_000_000)
    disturbed, wait, _ = m.sample_end(token)
    assert disturbed and wait == 200_000


def test_the_window_counts_other_processes_cpu_and_steal_in_cores() -> None:
    wall = FakeClock()
    # over 2 s: the machine was busy 3.1 CPU-seconds, 1.0 of them ours; 0.2 s stolen
    m = _monitor(FakeThreads(), [MachineTicks(10.0, 1.0), MachineTicks(13.1, 1.2)],
                 [0, 1_000_000_000], wall)
    m.start()
    wall.advance(2_000_000_000)
    seen = m.finish()
    assert seen.other_cores == pytest.approx(1.05)
    assert seen.steal_cores == pytest.approx(0.1)
    assert seen.wall_s == pytest.approx(2.0)


@pytest.mark.parametrize("other, threads, cores, wait, expected", [
    (0.0, 1, 2, 0.0, False),  # idle
    (0.1, 2, 2, 0.0, False),  # a daemon's wake-ups
    (1.0, 1, 2, 0.0, True),  # a busy loop on the other core of two
    (1.0, 1, 64, 0.0, False),  # ... of sixty-four: plenty of free cores
    (0.4, 2, 2, 0.0, True),  # every core is needed and someone else ran
    (0.0, 1, 2, 0.1, True),  # our threads waited for a core
])
def test_contended_means_others_took_cores_the_case_needed(other: float, threads: int, cores: int,
                                                           wait: float, expected: bool) -> None:
    seen = Interference(other, 0.0, wait, 0, 0, 0, wall_s=1.0)
    assert is_contended(seen, threads, cores) is expected


def test_a_short_window_is_not_called_contended_by_tick_rounding_alone() -> None:
    # 0.03 s of unexplained CPU in a 0.05 s window is within one or two 10 ms ticks
    assert not is_contended(Interference(0.6, 0.0, 0.0, 0, 0, 0, wall_s=0.05), 1, 2)
    assert is_contended(Interference(0.6, 0.0, 0.0, 0, 0, 0, wall_s=1.0), 1, 2)


def test_a_load_is_undecided_until_the_window_outgrows_its_tick_uncertainty() -> None:
    # a busy loop elsewhere (one core of two) over 30 ms reads 1 core to within 1.5: undecided;
    # over 0.5 s, to within 0.09: judged. An idle machine is judged at once.
    def window(busy_s: float, wall_ns: int) -> bool:
        wall = FakeClock()
        m = _monitor(FakeThreads(), [MachineTicks(0.0, 0.0), MachineTicks(busy_s, 0.0)], [0, 0], wall)
        m.start()
        wall.advance(wall_ns)
        return m.undecided()

    assert window(0.03, 30_000_000)
    assert not window(0.5, 500_000_000)
    assert not window(0.0, 30_000_000)


def test_a_converged_case_samples_on_while_the_load_is_undecided() -> None:
    clock = FakeClock()
    cfg = SamplingPlan(min_samples=10, warmup_s=0, time_budget_s=1.0)
    quick = measure(FakeWork(clock, 1e6), HostTimer(clock), cfg, clock, UndecidedFor(0))  # type: ignore[arg-type]
    mon = UndecidedFor(3)
    longer = measure(FakeWork(clock, 1e6), HostTimer(clock), cfg, clock, mon)  # type: ignore[arg-type]
    assert quick.stop == longer.stop == "converged" and mon.asked == 4
    assert len(longer.samples_s) > len(quick.samples_s)
    # never beyond the budget: a load that stays undecided ends the case when the budget does
    slow = measure(FakeWork(clock, 1e6), HostTimer(clock), cfg, clock, UndecidedFor(10**9))  # type: ignore[arg-type]
    assert slow.wall_s <= 1.0 + 0.01


def test_unknown_figures_are_never_contended() -> None:
    assert not is_contended(itf.NO_INTERFERENCE_DATA, 2, 2)
    assert system.read_machine_ticks("/nonexistent") is None
    assert ThreadWait("/nonexistent").total_ns() is None


class DisturbEvery:
    """A fake monitor that calls every ``k``-th sample disturbed (all of them with k=1)."""

    def __init__(self, k: int):
        self.k, self.n, self.retaken, self.kept = k, 0, 0, 0

    def start(self) -> None:
        pass

    def sample_begin(self) -> int:
        return 0

    def sample_end(self, token: int) -> tuple[bool, int, int]:
        self.n += 1
        return self.n % self.k == 0, 0, 1

    def keep(self, disturbed: bool, wait: int, wall: int) -> None:
        self.kept += 1

    def retake(self) -> None:
        self.retaken += 1

    def undecided(self) -> bool:
        return False

    def finish(self) -> Interference:
        return Interference(0.0, 0.0, 0.0, self.n // self.k, self.retaken, 0, 1.0)


class UndecidedFor(DisturbEvery):
    """Never disturbed; the load stays too uncertain to judge for its first ``asks`` questions."""

    def __init__(self, asks: int):
        super().__init__(k=10**9)
        self.asks = asks
        self.asked = 0

    def undecided(self) -> bool:
        self.asked += 1
        return self.asked <= self.asks


def test_disturbed_samples_are_retaken_and_not_kept() -> None:
    clock = FakeClock()
    mon = DisturbEvery(3)
    t = measure(FakeWork(clock, 1e6), HostTimer(clock), SamplingPlan(min_samples=20, warmup_s=0), clock,
                mon)  # type: ignore[arg-type]
    assert t.stop == "converged" and len(t.samples_s) == 20
    assert mon.retaken == 9 and t.interference.retaken == 9  # every third of the 29 blocks taken


def test_retakes_are_bounded_when_the_machine_stays_busy() -> None:
    clock = FakeClock()
    mon = DisturbEvery(1)  # every sample disturbed
    cfg = SamplingPlan(min_samples=10, time_budget_s=0.2, warmup_s=0)
    t = measure(FakeWork(clock, 1e6), HostTimer(clock), cfg, clock, mon)  # type: ignore[arg-type]
    # at most max(MIN_RETAKES, kept) retakes: the case ends with its samples, flagged later
    assert mon.retaken <= max(MIN_RETAKES, len(t.samples_s))
    assert len(t.samples_s) >= 10 and t.wall_s <= 0.2 + 0.01


def test_thread_wait_reads_this_process(tmp_path: Path) -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc")
    tw = ThreadWait()
    tw.refresh()
    first = tw.total_ns()
    assert first is not None and first >= 0
    assert tw.total_ns() >= first  # never goes back
    tw.close()


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_a_real_busy_neighbour_is_seen_and_the_case_flagged() -> None:
    # as many busy loops as cores: whatever else runs, a 1-thread case shares its core
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_count())]
    try:
        time.sleep(0.3)  # let them take the cores
        case = Case("matmul", "numpy", "float32", (64, 64, 64), threads=1)
        m = run_case(case, get_backend("numpy"), RunOptions(timing=SamplingPlan(time_budget_s=0.4)))
    finally:
        for p in loops:
            p.kill()
            p.wait()
    [r] = m.rounds
    assert m.status == "ok" and r.contended and m.contended
    assert r.contention is not None and r.contention >= 0.5
    assert r.retaken >= 1  # disturbed samples were thrown away first


def test_run_case_with_a_fake_clock_watches_nothing() -> None:
    from bench_suite.backends.numpy_backend import NumpyBackend

    clock = FakeClock()

    class Backend(NumpyBackend):
        def prepare(self, case: Case, inputs: dict) -> Prepared:  # type: ignore[type-arg]
            p = super().prepare(case, inputs)

            def call() -> object:
                clock.advance(100_000)  # each call takes 0.1 ms of fake time
                return p.call()

            return Prepared(call, p.run_once, p.inputs, p.release)

        def timer(self, c: object) -> HostTimer:
            return HostTimer(clock)

    case = Case("hadamard", "numpy", "float32", (16, 16), threads=1)
    m = run_case(case, Backend(), RunOptions(timing=SamplingPlan(time_budget_s=0.05, warmup_s=0)), clock)
    [r] = m.rounds
    assert m.status == "ok" and r.contention is None and not r.contended
