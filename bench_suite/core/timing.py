"""The clock loop: warm-up, calibration, samples and the stopping rule.

The clock and the device are parameters, never globals, so tests drive this loop with a
seeded fake clock and a fake CUDA device and the GPU logic runs in CI without a GPU.

One *sample* is a block of ``number`` back-to-back calls; its time / ``number`` is one
per-call observation. Blocks are timed

* on the host with ``perf_counter_ns``, the device synchronized before the clock is started
  and before it is read (:class:`HostTimer`), or
* on a CUDA device with events recorded around the block, the end event synchronized before
  reading (:class:`EventTimer`): this is the device's time from the first call's work to the
  last's. It is the kernels' time only while the host queues calls faster than the device
  runs them; for short kernels the device waits for each launch and the events time the
  host's launch rate. :class:`EventTimer` also records the host's enqueue time of each block
  (``host_samples_s``) so that such *launch-bound* cases can be told (``measure.gpu.options``); CUDA
  graphs remove the launches (``--cuda-graphs``).

Sampling stops when the median's confidence half-width is under ``target_rel_ci`` with at
least ``min_samples`` samples, or when the time budget is spent (with at least
``MIN_SAMPLES_HARD`` samples), or at ``max_samples``.
"""

from __future__ import annotations

import gc
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bench_suite.core import stats
from bench_suite.core.interference import NO_INTERFERENCE_DATA, Interference, SampleMonitor

Clock = Callable[[], int]  # nanoseconds, monotonic

#: Samples taken even when the budget is spent, so a median and a spread exist.
MIN_SAMPLES_HARD = 3
#: Disturbed samples (another process held a core the case needed) are thrown away and
#: taken again, at most this many times or once per kept sample, whichever is more, and
#: never beyond the time budget: a machine that stays busy gets its case flagged instead.
MIN_RETAKES = 5


class Event(Protocol):
    def record(self) -> None: ...
    def synchronize(self) -> None: ...
    def elapsed_time(self, end: Event) -> float: ...  # milliseconds, as torch.cuda.Event


class Device(Protocol):
    """What timing needs of a device: a barrier and (for GPUs) timing events."""

    def synchronize(self) -> None: ...
    def event(self) -> Event: ...


class BlockTimer(Protocol):
    def time_block(self, fn: Callable[[], object], number: int) -> float:
        """Seconds taken by ``number`` back-to-back calls of ``fn``."""
        ...


class HookedTimer(BlockTimer, Protocol):
    """A block timer with hooks that run outside the timed region: ``before_block`` before
    each block; ``before_call`` before every call, which then times each call on its own (a
    cache flush, a training step's reset)."""

    before_block: Callable[[], None] | None
    before_call: Callable[[], None] | None


def hooked(timer: BlockTimer) -> HookedTimer | None:
    """``timer`` where it has the hooks (the suite's own timers), else None (a test double)."""
    return timer if isinstance(timer, (HostTimer, EventTimer)) else None


def _noop() -> None:
    return None


class HostTimer:
    """Host clock around a block, the device synchronized at both ends.

    Optional hooks, run outside the timed region: ``before_block`` before each block;
    ``before_call`` before every call, which then times each call on its own (synchronized)
    and adds the times up: cold-cache timing, with a cache flush as the hook.
    """

    def __init__(self, clock: Clock = time.perf_counter_ns, synchronize: Callable[[], None] = _noop,
                 before_block: Callable[[], None] | None = None,
                 before_call: Callable[[], None] | None = None):
        self.clock = clock
        self.synchronize = synchronize
        self.before_block = before_block
        self.before_call = before_call

    def time_block(self, fn: Callable[[], object], number: int) -> float:
        sync, clock = self.synchronize, self.clock
        if self.before_block is not None:
            self.before_block()
        if self.before_call is not None:
            hook, total = self.before_call, 0
            for _ in itertools.repeat(None, number):
                hook()
                sync()
                t0 = clock()
                fn()
                sync()
                total += clock() - t0
            return total * 1e-9
        repeat = itertools.repeat(None, number)  # as timeit: the cheapest Python loop
        sync()
        t0 = clock()
        for _ in repeat:
            fn()
        sync()
        return (clock() - t0) * 1e-9


class EventTimer:
    """Device events around a block: the device's time from the block's first work to its
    last, without the host's time before the first launch.

    Hooks as :class:`HostTimer`'s. With ``before_call`` every call gets its own pair of
    events, recorded after the hook's work is queued, so (stream order) the hook's kernels
    (an L2 flush) run before the start event and stay out of the time; the pairs are summed.

    ``host_samples_s`` gets, for every block, the host's time to queue its calls (``host_clock``
    from the start event's record to the end event's, before waiting), and ``device_samples_s``
    the block's device time, pair by pair (a retaken block is in both): when the first covers
    the second, the device waited for the launches and the block timed the launch rate.
    """

    #: Blocks whose host enqueue time is kept (the latest ones).
    MAX_HOST_SAMPLES = 100_000

    def __init__(self, device: Device, before_block: Callable[[], None] | None = None,
                 before_call: Callable[[], None] | None = None,
                 host_clock: Clock = time.perf_counter_ns):
        self.device = device
        self._start = device.event()
        self._end = device.event()
        self.before_block = before_block
        self.before_call = before_call
        self.host_clock = host_clock
        self.host_samples_s: list[float] = []
        self.device_samples_s: list[float] = []
        self._pairs: list[tuple[Event, Event]] = []

    def _keep(self, host_s: float, device_s: float) -> float:
        if len(self.host_samples_s) >= self.MAX_HOST_SAMPLES:
            del self.host_samples_s[: self.MAX_HOST_SAMPLES // 2]
            del self.device_samples_s[: self.MAX_HOST_SAMPLES // 2]
        self.host_samples_s.append(host_s)
        self.device_samples_s.append(device_s)
        return device_s

    def time_block(self, fn: Callable[[], object], number: int) -> float:
        if self.before_block is not None:
            self.before_block()
        if self.before_call is not None:
            return self._time_calls(fn, number, self.before_call)
        repeat = itertools.repeat(None, number)
        clock = self.host_clock
        self.device.synchronize()  # nothing earlier may leak into this block
        t0 = clock()
        self._start.record()
        for _ in repeat:
            fn()
        self._end.record()
        host = (clock() - t0) * 1e-9
        self._end.synchronize()
        return self._keep(host, self._start.elapsed_time(self._end) * 1e-3)

    def _time_calls(self, fn: Callable[[], object], number: int, hook: Callable[[], None]) -> float:
        while len(self._pairs) < number:  # events are reused across blocks
            self._pairs.append((self.device.event(), self.device.event()))
        pairs = self._pairs[:number]
        clock, host = self.host_clock, 0
        self.device.synchronize()
        for start, end in pairs:
            hook()
            t0 = clock()
            start.record()
            fn()
            end.record()
            host += clock() - t0
        pairs[-1][1].synchronize()
        return self._keep(host * 1e-9, math.fsum(s.elapsed_time(e) for s, e in pairs) * 1e-3)


@dataclass(frozen=True)
class SamplingPlan:
    """How long a case is sampled and when sampling stops (the stopping rule)."""

    target_rel_ci: float = 0.01  # stop when the median is known to +-1% ...
    confidence: float = 0.95  # ... at this confidence
    min_samples: int = 10
    max_samples: int = 10_000
    time_budget_s: float = 1.0  # per case, warm-up included
    warmup_s: float = 0.02  # at least this long, and at least one call, before sampling
    min_block_s: float = 1e-3  # calls per sample chosen so one block lasts at least this

    def __post_init__(self) -> None:
        from bench_suite.core.errors import UsageError

        checks = {
            "target_rel_ci": 0 < self.target_rel_ci < 1,
            "confidence": 0 < self.confidence < 1,
            "min_samples": 1 <= self.min_samples <= self.max_samples,
            "time_budget_s": 0 < self.time_budget_s <= 86_400 and math.isfinite(self.time_budget_s),
            "warmup_s": 0 <= self.warmup_s < 3_600,
            "min_block_s": 0 < self.min_block_s < 60,
        }
        for name, ok in checks.items():
            if not ok:
                raise UsageError(f"timing setting {name}={getattr(self, name)!r} is out of range")


@dataclass(frozen=True)
class Timing:
    samples_s: tuple[float, ...]  # per-call seconds, one per sample
    number: int  # calls per sample
    warmup_calls: int
    stop: str  # "converged" | "budget" | "max_samples" | "paired" (stopped by its gate)
    wall_s: float  # host time spent in this function
    warmup_s: float = 0.0  # of which warming up and calibrating
    interference: Interference = NO_INTERFERENCE_DATA

    @property
    def converged(self) -> bool:
        return self.stop == "converged"


def _check_every(n: int) -> int:
    # Checking the rule sorts the samples; doing it every ~10% keeps the loop O(n log n).
    return max(1, n // 10)


#: Asked before every sample when another process takes turns with this one (``ab``): True
#: takes the sample, False stops sampling (after at least MIN_SAMPLES_HARD), None lets the
#: loop go on by itself with its own stopping rule.
Gate = Callable[[], "bool | None"]


def measure(
    fn: Callable[[], object],
    timer: BlockTimer,
    config: SamplingPlan = SamplingPlan(),
    clock: Clock = time.perf_counter_ns,
    monitor: SampleMonitor | None = None,
    gate: Gate | None = None,
) -> Timing:
    """Warm up, calibrate, then sample ``fn`` until the stopping rule holds.

    ``monitor`` (a ``SampleMonitor``, such as ``measure.interference.Monitor``) judges every
    sample: one during which other work held a core this case needed is retaken (see
    :data:`MIN_RETAKES`), and the timing carries what the monitor saw over the sampling
    window. None: nothing is watched.
    ``gate``: sample only when it says so, and stop when it says so (see :data:`Gate`).
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a block is noise, as in timeit
    try:
        return _measure(fn, timer, config, clock, monitor, gate)
    finally:
        if gc_was_enabled:
            gc.enable()


def _measure(fn: Callable[[], object], timer: BlockTimer, config: SamplingPlan, clock: Clock,
             monitor: SampleMonitor | None, gate: Gate | None = None) -> Timing:
    t_start = clock()
    budget_ns = config.time_budget_s * 1e9

    def spent() -> float:
        return clock() - t_start

    # Warm-up doubles as calibration: grow the block until it lasts min_block_s and the
    # warm-up time has passed (caches, clocks, lazy initialisation, allocator pools).
    number, warmup_calls = 1, 0
    while True:
        block = timer.time_block(fn, number)
        warmup_calls += number
        warmed = spent() >= config.warmup_s * 1e9
        if block >= config.min_block_s and warmed:
            break
        if spent() >= budget_ns / 2:  # a slow op: keep half the budget for samples
            break
        if block < config.min_block_s:
            per_call = max(block / number, 1e-9)
            number = max(number + 1, min(number * 10, math.ceil(1.2 * config.min_block_s / per_call)))

    warmup_ns = spent()
    samples: list[float] = []
    next_check = config.min_samples
    stop = "budget"
    retaken = 0
    if monitor is not None:
        monitor.start()
    while True:
        if gate is not None:
            permit = gate()
            if permit is None:  # the other side is gone: this side finishes by itself
                gate = None
            elif not permit and len(samples) >= MIN_SAMPLES_HARD:
                stop = "paired"
                break
        if monitor is None:
            samples.append(timer.time_block(fn, number) / number)
        else:
            token = monitor.sample_begin()
            block = timer.time_block(fn, number)
            disturbed, wait, wall = monitor.sample_end(token)
            if (disturbed and retaken < max(MIN_RETAKES, len(samples))
                    and spent() < budget_ns):
                retaken += 1
                monitor.retake()
                continue
            monitor.keep(disturbed, wait, wall)
            samples.append(block / number)
        n = len(samples)
        if n >= config.max_samples:
            stop = "max_samples"
            break
        if gate is not None:
            continue  # taking turns: the other process says when to stop
        if n >= next_check:
            next_check = n + _check_every(n)
            low, high = stats.median_ci(samples, config.confidence)
            median = stats.quantile(sorted(samples), 0.5)
            converged = stats.rel_half_width(median, low, high) <= config.target_rel_ci
            # converged, but other processes' load is not yet known well enough to say whether
            # they took a core (a short window reads /proc/stat to a few ticks): sample on
            # while the budget lasts. On a quiet machine this costs nothing.
            if converged and (monitor is None or spent() >= budget_ns or not monitor.undecided()):
                stop = "converged"
                break
        if n >= MIN_SAMPLES_HARD and spent() >= budget_ns:
            break
    interference = monitor.finish() if monitor is not None else NO_INTERFERENCE_DATA
    return Timing(tuple(samples), number, warmup_calls, stop, spent() * 1e-9, warmup_ns * 1e-9,
                  interference)
