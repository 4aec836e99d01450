"""How every case is timed (:func:`time_case`), with the optional ways of timing it: cold caches,
CUDA-graph replay, NVML sampling; and what every CUDA case gets: a warm-up to full clocks and
a launch-bound check.

Each option is harmless where it does not apply: without a GPU, without NVML, or with a
backend whose timer has no hooks, the case is timed as usual and ``extra`` says why.

* **Cold cache** (``cold_cache``, ``gpu.cold_cache``): a buffer larger than the last-level
  cache is written before every call, outside the timed region.
* **CUDA graphs** (``cuda_graphs``, ``gpu.graphs``): ``k`` calls captured into one graph, one
  replay checked against the reference, replays timed. Refused with ``cold_cache``: one flush
  per replay of ``k`` calls would leave ``k - 1`` of them warm.
* **NVML** (``nvml``, ``env.nvml``): SM and memory clocks, temperature, power and the
  clock-event ("throttle") reasons of the card, sampled every ``nvml_interval_s`` (15 ms)
  during the warm-up and the timing; other processes on the card make the case contended.
* **Warm-up** (every CUDA case): the timed callable runs until NVML reads the SM clock within
  ``WARMUP_CLOCK_FRACTION`` of its maximum, or for ``warmup_gpu_s`` (0.2 s) of GPU work. An
  idle card runs at a fraction of its clock (an H200: 345 of 1980 MHz).
* **Launch-bound** (every CUDA case timed with events): when the host's time to enqueue a
  block covers the device's time for it, the device waited for the launches and the events
  timed the launch rate, not the kernels: ``extra["launch"]["launch_bound"]``. Time such
  cases with ``--cuda-graphs``.

Used by ``runner.py``. torch is imported lazily (``measure.gpu._torch``), pynvml too
(``env.nvml._pynvml``); tests replace both with fakes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from bench_suite.backends.base import Backend, Prepared, memory_check
from bench_suite.core import stats
from bench_suite.core.cases import Case, cuda_index, is_cuda_backend
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import Clock, EventTimer, Gate, SamplingPlan, Timing, hooked, measure
from bench_suite.env.nvml import NVML_INTERVAL_S, NvmlSampler, nvml_session
from bench_suite.measure import harness
from bench_suite.measure.gpu.cold_cache import GPU_FLUSH_MIN_BYTES, cpu_flusher, cuda_flusher, cuda_l2_bytes
from bench_suite.measure.gpu.graphs import (
    capture_graph,
    check_replay,
    graph_calls,
    output_bytes,
    per_call_graph_timing,
)
from bench_suite.measure.interference import SIBLING_PIDS, Monitor
from bench_suite.measure.phases import with_reset
from bench_suite.store.codec import GpuDoc, lenient

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
class TimingMode:
    """How each call is timed: on a cold cache, replayed from a CUDA graph, with NVML
    telemetry beside it (``SamplingPlan`` says how long; ``RunOptions`` holds both)."""

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
    def from_config(cls, data: Any) -> TimingMode:
        """Options saved with ``dataclasses.asdict`` (a run's ``config["gpu_options"]``, a
        worker request's ``gpu``), read through ``store.codec.GpuDoc``: anything missing or
        malformed keeps its default."""
        return cls(**lenient(GpuDoc, data).settings())


def option_device_bytes(case: Case, options: TimingMode, l2_bytes: int) -> dict[str, int]:
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


def _check_option_memory(case: Case, backend: Backend, options: TimingMode) -> None:
    """Skip (``harness.Unavailable``) a CUDA case whose options' buffers would not fit in
    what its inputs and outputs left free."""
    if not (options.cold_cache or options.cuda_graphs):
        return
    l2 = cuda_l2_bytes(cuda_index(case.backend)) if options.cold_cache and options.flush_bytes is None else 0
    need = option_device_bytes(case, options, l2)
    avail = memory_check(sum(need.values()), backend.free_memory_bytes(), backend.device)
    if not avail.ok:
        raise harness.Unavailable(f"{avail.reason} (beyond its buffers, for {' and '.join(need)})")


def time_case(case: Case, backend: Backend, prepared: Prepared, config: SamplingPlan,
              clock: Clock, options: TimingMode = TimingMode(),
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
        if (with_hooks := hooked(timer)) is not None:
            if cuda:
                flush, nbytes = cuda_flusher(cuda_index(case.backend), options.flush_bytes)
            else:
                flush, nbytes = cpu_flusher(options.flush_bytes)
            with_hooks.before_call = flush
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
        with nvml_session(cuda_index(case.backend), interval_s=options.nvml_interval_s,
                          ignore_pids=SIBLING_PIDS) as sampler:
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
                     config: SamplingPlan) -> int:
    # A short estimate of one call, outside any graph, sizes the graph.
    timer.time_block(fn, 3)
    per_call = timer.time_block(fn, 10) / 10
    return graph_calls(per_call, config, output_bytes(case), backend.free_memory_bytes())
