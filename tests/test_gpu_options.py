"""Cold-cache timing, CUDA-graph replay and NVML sampling: through fakes everywhere, and for
real where a GPU is visible (``gpu`` marker)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench_suite.backends import get_backend
from bench_suite.backends.base import Availability, Backend, Prepared
from bench_suite.core import ops
from bench_suite.core.cases import Case
from bench_suite.core.timing import EventTimer, HostTimer, SamplingPlan
from bench_suite.env import nvml as env_nvml
from bench_suite.env import system
from bench_suite.env.nvml import NvmlSampler
from bench_suite.measure import gpu as measure_gpu
from bench_suite.measure.gpu import cold_cache, graphs
from bench_suite.measure.gpu import options as gpu_options
from bench_suite.measure.gpu.options import TimingMode, time_case
from bench_suite.measure.runner import RunOptions, run_case
from bench_suite.store.results import Run, to_frame
from tests.fakes import FakeClock, FakeCudaDevice, FakeWork

# --- a fake GPU with a cache and graph capture --------------------------------------------


class CachedDevice(FakeCudaDevice):
    """A FakeCudaDevice whose L2 is warm after a kernel and cold after a flush, and that can
    capture kernels into a graph instead of launching them."""

    def __init__(self, clock: FakeClock, launch_ns: float):
        super().__init__(clock, launch_ns)
        self.warm = False
        self.capture: list[float] | None = None
        self.flushes = 0


class Kernel:
    """One kernel: ``cold_ns`` on a cold cache, ``warm_ns`` on a warm one."""

    def __init__(self, dev: CachedDevice, warm_ns: float, cold_ns: float | None = None):
        self.dev, self.warm_ns, self.cold_ns = dev, warm_ns, cold_ns or warm_ns
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        ns = self.warm_ns if self.dev.warm else self.cold_ns
        if self.dev.capture is not None:
            self.dev.capture.append(self.warm_ns)  # captured, not run
            return
        self.dev.launch(ns)
        self.dev.warm = True


class FakeBuffer:
    def __init__(self, dev: CachedDevice, flush_ns: float):
        self.dev, self.flush_ns = dev, flush_ns

    def zero_(self) -> None:
        self.dev.launch(self.flush_ns)
        self.dev.warm = False
        self.dev.flushes += 1


class FakeGraph:
    def __init__(self, dev: CachedDevice):
        self.dev = dev
        self.kernels: list[float] = []
        self.replays = 0

    def replay(self) -> None:  # one launch for the whole graph, kernels back to back
        self.replays += 1
        self.dev.clock.advance(self.dev.launch_ns)
        start = max(self.dev.device_free_at, self.dev.clock.t)
        self.dev.device_free_at = start + int(sum(self.kernels))


class FakeStream:
    def __init__(self, name: str):
        self.name = name

    def wait_stream(self, other: Any) -> None:
        pass


class FakeCuda:
    """Streams, a current stream, and graph capture as torch's ``graph`` context does it:
    ending a capture that failed raises, and leaves the capture stream current."""

    def __init__(self, dev: CachedDevice, fail_capture: bool = False):
        self.dev, self.fail_capture = dev, fail_capture
        self.graphs: list[FakeGraph] = []
        self.default = FakeStream("default")
        self.current: Any = self.default
        self.captured_on: list[Any] = []

    def device(self, index: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def Stream(self, device: int | None = None) -> FakeStream:
        return FakeStream("side")

    def current_stream(self, index: int | None = None) -> Any:
        return self.current

    def default_stream(self, index: int | None = None) -> Any:
        return self.default

    def set_stream(self, s: Any) -> None:
        self.current = s

    def is_current_stream_capturing(self) -> bool:
        return self.dev.capture is not None

    @contextlib.contextmanager
    def stream(self, s: Any) -> Iterator[None]:
        before, self.current = self.current, s
        try:
            yield
        finally:
            self.current = before

    def CUDAGraph(self) -> FakeGraph:
        g = FakeGraph(self.dev)
        self.graphs.append(g)
        return g

    @contextlib.contextmanager
    def graph(self, g: FakeGraph, stream: Any = None) -> Iterator[None]:
        stream = stream or FakeStream("capture")
        self.current = stream
        self.captured_on.append(stream)
        self.dev.capture = g.kernels
        if self.fail_capture:
            self.dev.capture = None  # the capture ends invalidated; the stream stays current
            raise RuntimeError("operation not permitted when stream is capturing")
        yield
        self.dev.capture = None
        self.current = self.default

    def synchronize(self, index: int | None = None) -> None:
        self.dev.synchronize()

    def get_device_properties(self, index: int) -> Any:
        class Props:  # no PCI ids: NVML falls back to the index
            L2_cache_size = 50 << 20

        return Props()


class FakeTorch:
    int8 = "int8"

    def __init__(self, dev: CachedDevice, flush_ns: float = 50_000, fail_capture: bool = False):
        self.cuda = FakeCuda(dev, fail_capture)
        self.flush_ns = flush_ns
        self.buffers: list[tuple[int, str]] = []

    def empty(self, n: int, dtype: Any = None, device: str = "") -> FakeBuffer:
        self.buffers.append((n, device))
        return FakeBuffer(self.cuda.dev, self.flush_ns)


class FakeCudaBackend(Backend):
    """A CUDA backend over the fake device: its matmul is a Kernel, its results are right."""

    name = "torch-cuda"
    device = "cuda:0"

    def __init__(self, dev: CachedDevice, kernel: Kernel):
        self.dev, self.kernel = dev, kernel

    def availability(self, case: Case) -> Availability:
        return Availability.yes()

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        def run_once() -> dict[str, np.ndarray]:
            return ops.reference(case, inputs)

        # read/poison offered, so the graph path runs; the kernel returns no outputs, so a
        # replay is reported as unchecked rather than failed
        return Prepared(self.kernel, run_once, inputs, read=lambda r: run_once(), poison=lambda r: None)

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return contextlib.nullcontext(None)

    def synchronize(self) -> None:
        self.dev.synchronize()

    def timer(self, clock: Any) -> EventTimer:
        return EventTimer(self.dev, host_clock=self.dev.clock)

    def device_name(self) -> str:
        return "NVIDIA H100 80GB HBM3"

    def free_memory_bytes(self) -> int | None:
        return 1 << 30


CASE = Case("matmul", "torch-cuda", "float32", (4, 4, 4), None)
CONFIG = SamplingPlan(time_budget_s=0.05, min_samples=5, target_rel_ci=0.01)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClock, CachedDevice, FakeTorch]:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=5_000)
    torch = FakeTorch(dev)
    monkeypatch.setattr(measure_gpu, "_torch", lambda: torch)
    monkeypatch.setattr(env_nvml, "_torch", lambda: torch)
    return clock, dev, torch


# --- timer hooks --------------------------------------------------------------------------


def test_host_timer_hooks_stay_outside_the_time() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 100)
    calls: list[str] = []

    def before_call() -> None:
        calls.append("call")
        clock.advance(1_000)  # a slow flush: must not be counted

    timer = HostTimer(clock, before_block=lambda: calls.append("block"), before_call=before_call)
    assert timer.time_block(work, 5) == pytest.approx(5 * 100e-9)
    assert calls == ["block"] + ["call"] * 5 and work.calls == 5
    plain = HostTimer(clock, before_block=lambda: clock.advance(1_000))
    assert plain.time_block(work, 5) == pytest.approx(5 * 100e-9)


def test_event_timer_cold_cache_times_each_call_after_a_flush() -> None:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=1_000)
    kernel = Kernel(dev, warm_ns=10_000, cold_ns=20_000)
    flush = FakeBuffer(dev, 50_000).zero_
    warm = EventTimer(dev).time_block(kernel, 10) / 10
    cold = EventTimer(dev, before_call=flush).time_block(kernel, 10) / 10
    assert cold == pytest.approx(20e-6)  # every call cold, the flushes not counted
    # only the first call is cold (and waits for its launch: the device was idle)
    assert warm == pytest.approx((1_000 + 20_000 + 9 * 10_000) / 10 * 1e-9)
    assert dev.flushes == 10


# --- CUDA graphs --------------------------------------------------------------------------


def test_cuda_graph_removes_launch_overhead(gpu: tuple[FakeClock, CachedDevice, FakeTorch]) -> None:
    clock, dev, torch = gpu
    kernel = Kernel(dev, warm_ns=1_000)  # 1 us kernels behind 5 us launches
    backend = FakeCudaBackend(dev, kernel)
    prepared = Prepared(kernel, lambda: {}, {}, read=lambda r: {}, poison=lambda r: None)
    plain, extra = time_case(CASE, backend, prepared, CONFIG, clock, TimingMode(nvml=False))
    assert set(extra) == {"warmup", "launch"}
    assert np.median(plain.samples_s) == pytest.approx(5e-6, rel=0.01)  # launch-bound
    # the host took as long to queue the calls as the device took to run them: flagged
    launch = extra["launch"]
    assert launch["launch_bound"] is True and launch["ratio"] == pytest.approx(1.0, rel=0.01)
    assert launch["host_enqueue_s"] == pytest.approx(5e-6) and launch["device_s"] == pytest.approx(5e-6, rel=0.01)
    graphed, extra = time_case(CASE, backend, prepared, CONFIG, clock,
                               TimingMode(cuda_graphs=True, nvml=False))
    calls = extra["cuda_graph"]["calls_per_graph"]
    # a replay lasts min_block_s (1 ms) at the 5.1 us per call of a 10-call probe (10 launches,
    # then the last kernel): ceil(1e6 / 5100)
    assert calls == 197
    assert len(torch.cuda.graphs) == 1 and torch.cuda.graphs[0].kernels == [1_000] * calls
    # kernel time, plus at most one exposed 5 us graph launch per block of replays
    assert 1e-6 <= np.median(graphed.samples_s) <= (5_000 + calls * 1_000) / calls * 1e-9
    assert graphed.number % calls == 0 and torch.cuda.graphs[0].replays > 0
    # one launch per replay of 197 kernels: no longer launch-bound
    assert extra["launch"]["launch_bound"] is False and extra["launch"]["ratio"] < 0.1
    # this double offers no outputs to check a replay with: said, not hidden
    assert extra["cuda_graph"]["replay_checked"] is False
    # captured on a side stream (the current one is the default stream, which cannot be)
    assert torch.cuda.captured_on[0].name == "side" and torch.cuda.current is torch.cuda.default


def test_graph_calls_bounded() -> None:
    cfg = SamplingPlan(min_block_s=1e-3)
    assert graphs.graph_calls(1e-9, cfg, 0, None) == graphs.MAX_GRAPH_CALLS
    assert graphs.graph_calls(1.0, cfg, 0, None) == 1
    assert graphs.graph_calls(1e-6, cfg, out_bytes=1 << 20, free_bytes=40 << 20) == 10


def test_cuda_graph_failure_fails_the_case_and_restores_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=5_000)
    torch = FakeTorch(dev, fail_capture=True)
    monkeypatch.setattr(measure_gpu, "_torch", lambda: torch)
    case_stream = FakeStream("case")
    torch.cuda.current = case_stream  # as TorchCudaBackend.threads() leaves it for a case
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 1_000)),
                 RunOptions(timing=CONFIG, gpu=TimingMode(cuda_graphs=True, nvml=False)), clock)
    assert m.status == "failed"
    assert m.reason.startswith("GraphCaptureError: CUDA graph capture failed: RuntimeError: ")
    assert "not permitted when stream is capturing" in m.reason
    # captured on the case's stream, and that stream is current again after the failure
    assert torch.cuda.captured_on == [case_stream] and torch.cuda.current is case_stream
    assert not torch.cuda.is_current_stream_capturing()


def test_cuda_graphs_ignored_on_the_cpu() -> None:
    m = run_case(Case("hadamard", "numpy", "float32", (16, 16), 1), get_backend("numpy"),
                 RunOptions(timing=SamplingPlan(time_budget_s=0.05),
                            gpu=TimingMode(cuda_graphs=True, nvml=True)))
    assert m.status == "ok"
    assert m.extra["cuda_graph"] == {"skipped": "not a CUDA case"}
    assert m.extra["nvml"] == {"available": False, "reason": "not a CUDA case"}


# --- cold cache through the runner --------------------------------------------------------


def test_cold_cache_on_a_fake_gpu(gpu: tuple[FakeClock, CachedDevice, FakeTorch]) -> None:
    clock, dev, torch = gpu
    kernel = Kernel(dev, warm_ns=100_000, cold_ns=150_000)
    backend = FakeCudaBackend(dev, kernel)
    opts = RunOptions(timing=CONFIG, gpu=TimingMode(cold_cache=True, nvml=False))
    m = run_case(CASE, backend, opts, clock)
    assert m.status == "ok", m.reason
    assert m.extra["cold_cache"]["flush_bytes"] == 100 << 20  # twice the 50 MiB L2
    assert torch.buffers == [(100 << 20, "cuda:0")]
    assert m.summary.median == pytest.approx(150e-6)  # every call cold
    warm = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(nvml=False)), clock)
    assert warm.summary.median == pytest.approx(100e-6, rel=0.01)
    assert "cold_cache" not in warm.extra


def test_cold_cache_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    m = run_case(Case("hadamard", "numpy", "float32", (32, 32), 1), get_backend("numpy"),
                 RunOptions(timing=SamplingPlan(time_budget_s=0.05),
                            gpu=TimingMode(cold_cache=True, flush_bytes=1 << 20)))
    assert m.status == "ok", m.reason
    assert m.extra["cold_cache"]["flush_bytes"] == 1 << 20
    monkeypatch.setattr(cold_cache, "cpu_cache_bytes", lambda: 3 << 20)
    flush, nbytes = cold_cache.cpu_flusher()
    assert nbytes == cold_cache.CPU_FLUSH_MIN_BYTES  # twice 3 MiB, raised to the minimum
    flush()
    monkeypatch.setattr(cold_cache, "cpu_cache_bytes", lambda: 6 << 20)
    assert cold_cache.cpu_flusher()[1] == 12 << 20


def test_cache_sizes_from_sysfs(tmp_path: Any) -> None:
    for i, size in enumerate(["48K", "2048K", "105M"]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert system.cpu_cache_bytes(str(tmp_path)) == 105 << 20
    assert system.cpu_cache_bytes(str(tmp_path / "none")) is None


def test_timer_without_hooks_is_recorded_not_broken() -> None:
    clock = FakeClock()

    class OddTimer:
        def time_block(self, fn: Any, number: int) -> float:
            for _ in range(number):
                fn()
            clock.advance(1e6 * number)
            return 1e-3 * number

    class OddBackend(FakeCudaBackend):
        name = "numpy"

        def timer(self, clock: Any) -> Any:
            return OddTimer()

    dev = CachedDevice(clock, 0)
    timing, extra = time_case(Case("hadamard", "numpy", "float32", (4, 4), 1),
                              OddBackend(dev, Kernel(dev, 1)), Prepared(lambda: None, dict, {}),
                              CONFIG, clock, TimingMode(cold_cache=True))
    assert "no before_call hook" in extra["cold_cache"]["skipped"] and timing.samples_s


# --- NVML ---------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml:
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 2, 0

    def __init__(self, reasons: list[int], fail_init: bool = False, no_power: bool = False,
                 no_reasons: bool = False, clocks: list[int] | None = None, max_clock: int = 1980):
        self.reasons = list(reasons)
        self.fail_init, self.no_power, self.no_reasons = fail_init, no_power, no_reasons
        self.clocks = list(clocks or [1755])
        self.max_clock = max_clock
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByPciBusId(self, bus: bytes) -> Any:
        raise NVMLError("not found")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ("handle", index)

    def nvmlDeviceGetClockInfo(self, handle: Any, which: int) -> int:
        if which != self.NVML_CLOCK_SM:
            return 2619
        return self.clocks.pop(0) if len(self.clocks) > 1 else self.clocks[0]

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, which: int) -> int:
        return self.max_clock

    def nvmlDeviceGetTemperature(self, handle: Any, which: int) -> int:
        return 71

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if self.no_power:
            raise NVMLError("Not Supported")
        return 699_000

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        if self.no_reasons:
            raise NVMLError("Not Supported")
        return self.reasons.pop(0) if len(self.reasons) > 1 else self.reasons[0]


def test_sampler_keeps_the_power_cap_apart_from_throttling() -> None:
    nvml = FakeNvml([0x0, 0x4 | 0x1, 0x1], no_power=True)
    sampler = NvmlSampler(nvml, ("handle", 0), interval_s=0)
    with sampler:
        sampler.sample()
    s = sampler.summary()
    assert [x["reasons"] for x in s["samples"]] == [0x0, 0x5, 0x1]
    assert s["samples"][1]["reason_names"] == ["gpu_idle", "sw_power_cap"]
    # a power cap is the card holding its limit, not throttling
    assert s["power_capped"] is True and s["power_capped_fraction"] == pytest.approx(1 / 3)
    assert s["throttled"] is False and s["throttled_fraction"] == 0.0
    assert s["reasons_known"] is True and s["reasons_unknown_samples"] == 0
    assert s["reasons_seen"] == ["gpu_idle", "sw_power_cap"]
    assert s["sm_clock_mhz"] == {"min": 1755, "median": 1755, "max": 1755}
    assert s["power_w"] is None  # not supported: None, not an error
    assert s["temp_c"]["max"] == 71 and s["max_sm_clock_mhz"] == 1980
    idle = NvmlSampler(FakeNvml([0x1]), None, interval_s=0)
    with idle:
        pass
    assert idle.summary()["throttled"] is False  # an idle GPU is not throttled
    hot = NvmlSampler(FakeNvml([0x20 | 0x4]), None, interval_s=0)
    with hot:
        pass
    assert hot.summary()["throttled"] is True and hot.summary()["power_capped"] is True


def test_reasons_nvml_cannot_report_are_unknown_not_false() -> None:
    sampler = NvmlSampler(FakeNvml([0], no_reasons=True), None, interval_s=0)
    with sampler:
        pass
    s = sampler.summary()
    assert s["throttled"] is None and s["power_capped"] is None
    assert s["throttled_fraction"] is None and s["reasons_known"] is False
    assert s["reasons_unknown_samples"] == s["n_samples"] == 2
    frame = to_frame([Run("r", "m", "", {}, {}, (_ok_with_extra({"nvml": s}),))])
    assert frame["throttled"].isna().all() and frame["power_capped"].isna().all()


def _ok_with_extra(extra: dict[str, Any]) -> Any:
    from bench_suite.store.results import Measurement

    return Measurement(CASE, "ok", samples_s=(1e-3, 1e-3, 1e-3), number=1, extra=extra)


def test_summary_describes_the_timed_phase_and_thins_what_it_saves() -> None:
    nvml = FakeNvml([0x4] * 3 + [0x0] * 400, clocks=[345] * 3 + [1980] * 400)
    sampler = NvmlSampler(nvml, None, interval_s=0)
    with sampler:
        sampler.phase("warmup")
        sampler.sample()
        sampler.phase("timed")
        for _ in range(396):
            sampler.sample()
    s = sampler.summary()
    # the idle, power-capped warm-up samples are kept but not described as the case's
    assert s["sm_clock_mhz"]["min"] == 1980 and s["power_capped"] is False
    assert s["n_samples"] == 398 and s["interval_s"] == 0
    saved = s["samples"]
    assert len(saved) == env_nvml.NVML_SAMPLES_SAVED
    assert saved[0]["phase"] == "" and saved[0]["sm_clock_mhz"] == 345 and saved[-1] is sampler.samples[-1]
    assert env_nvml.thin(list(range(5)), 3) == [0, 2, 4]
    assert env_nvml.thin(list(range(2)), 3) == [0, 1] and env_nvml.thin([1, 2], 1) == [2]


@pytest.mark.parametrize(("reasons", "throttled", "capped"),
                         [([0x0], False, False), ([0x40], True, False), ([0x4], False, True)])
def test_nvml_recorded_by_the_runner_and_flagged_in_the_frame(
        gpu: tuple[FakeClock, CachedDevice, FakeTorch], monkeypatch: pytest.MonkeyPatch,
        reasons: list[int], throttled: bool, capped: bool) -> None:
    clock, dev, _torch = gpu
    nvml = FakeNvml(reasons)
    monkeypatch.setattr(env_nvml, "_pynvml", lambda: nvml)
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 100_000)), RunOptions(timing=CONFIG), clock)
    assert m.status == "ok", m.reason
    assert m.extra["nvml"]["available"] and len(m.extra["nvml"]["samples"]) >= 2
    assert m.extra["nvml"]["throttled"] is throttled and m.extra["nvml"]["power_capped"] is capped
    assert m.extra["nvml"]["interval_s"] == env_nvml.NVML_INTERVAL_S
    assert nvml.inits == nvml.shutdowns == 1
    frame = to_frame([Run("r", "m", "", {}, {}, (m,))])
    assert frame["throttled"].tolist() == [throttled] and frame["power_capped"].tolist() == [capped]
    assert m.to_dict()["extra"]["nvml"]["sm_clock_mhz"]["max"] == 1755  # JSON-ready


def test_nvml_absent_is_harmless(gpu: tuple[FakeClock, CachedDevice, FakeTorch],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock, dev, _torch = gpu
    monkeypatch.setattr(env_nvml, "_pynvml", lambda: FakeNvml([0], fail_init=True))
    backend = FakeCudaBackend(dev, Kernel(dev, 100_000))
    auto = run_case(CASE, backend, RunOptions(timing=CONFIG), clock)
    assert auto.status == "ok" and "nvml" not in auto.extra  # auto: silently off
    asked = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(nvml=True)), clock)
    assert asked.status == "ok"
    assert asked.extra["nvml"]["available"] is False
    assert "Driver Not Loaded" in asked.extra["nvml"]["reason"]

    def no_module() -> Any:
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(env_nvml, "_pynvml", no_module)
    m = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(nvml=True)), clock)
    assert m.extra["nvml"]["reason"] == "nvidia-ml-py (pynvml) is not installed"
    off = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(nvml=False)), clock)
    assert "nvml" not in off.extra


def test_cli_flags_reach_the_options() -> None:
    from bench_suite.frontends import cli

    args = cli.create_parser().parse_args(["run", "--cuda-graphs", "--no-nvml"])
    assert cli._gpu_options(args) == TimingMode(cuda_graphs=True, nvml=False)
    args = cli.create_parser().parse_args(["run", "--cold-cache"])
    assert cli._gpu_options(args) == TimingMode(cold_cache=True)
    args = cli.create_parser().parse_args(["run"])
    assert cli._gpu_options(args) == TimingMode()


def test_cold_cache_with_cuda_graphs_is_refused_in_one_line(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Any) -> None:
    from bench_suite.core.errors import UsageError
    from bench_suite.frontends import cli

    with pytest.raises(UsageError, match="cannot be combined"):
        TimingMode(cold_cache=True, cuda_graphs=True)
    code = cli.main(["run", "--cold-cache", "--cuda-graphs", "--backends", "numpy", "--ops", "hadamard",
                     "--sizes", "8", "--out", str(tmp_path / "r.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("bench-suite: error: --cold-cache and --cuda-graphs cannot be combined")
    assert not (tmp_path / "r.json").exists()


# --- the real thing -----------------------------------------------------------------------

REAL = SamplingPlan(time_budget_s=0.2, min_samples=5)


@pytest.mark.gpu
def test_real_cold_cache_and_graphs() -> None:
    backend = get_backend("torch-cuda")
    case = Case("hadamard", "torch-cuda", "float32", (256, 256), None)
    cold = run_case(case, backend, RunOptions(timing=REAL, gpu=TimingMode(cold_cache=True)))
    assert cold.status == "ok", cold.reason
    assert cold.extra["cold_cache"]["flush_bytes"] >= cold_cache.GPU_FLUSH_MIN_BYTES
    graphed = run_case(case, backend, RunOptions(timing=REAL, gpu=TimingMode(cuda_graphs=True)))
    assert graphed.status == "ok", graphed.reason
    assert graphed.extra["cuda_graph"]["calls_per_graph"] >= 1
    for mode in ("grad", "no_grad"):
        m = run_case(Case("matmul", "torch-cuda", "float32", (128, 128, 128), None, mode),
                     backend, RunOptions(timing=REAL, gpu=TimingMode(cuda_graphs=True)))
        assert m.status == "ok", m.reason


@pytest.mark.gpu
def test_real_nvml() -> None:
    pytest.importorskip("pynvml")
    m = run_case(Case("matmul", "torch-cuda", "float32", (512, 512, 512), None),
                 get_backend("torch-cuda"), RunOptions(timing=REAL, gpu=TimingMode(nvml=True)))
    assert m.status == "ok", m.reason
    nv = m.extra["nvml"]
    assert nv["available"], nv
    assert nv["sm_clock_mhz"]["max"] > 0
    assert nv["throttled"] in (True, False, None) and nv["power_capped"] in (True, False, None)
    assert nv["n_samples"] >= 2 and m.extra["warmup"]["gpu_s"] > 0


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["matmul_backward", "hadamard_backward"])
def test_real_graphs_of_backward_ops_replay_right(op: str) -> None:
    backend = get_backend("torch-cuda")
    shape = (256, 256, 256) if op == "matmul_backward" else (256, 256)
    m = run_case(Case(op, "torch-cuda", "float32", shape, None), backend,
                 RunOptions(timing=REAL, gpu=TimingMode(cuda_graphs=True)))
    assert m.status == "ok", m.reason
    assert m.extra["cuda_graph"]["replay_checked"] is True
    assert m.extra["cuda_graph"]["replay_rel_error"] <= ops.TOLERANCE["float32"]


@pytest.mark.gpu
def test_real_tiny_kernels_are_launch_bound_and_graphs_are_not() -> None:
    backend = get_backend("torch-cuda")
    case = Case("hadamard", "torch-cuda", "float32", (64, 64), None)
    plain = run_case(case, backend, RunOptions(timing=REAL))
    graphed = run_case(case, backend, RunOptions(timing=REAL, gpu=TimingMode(cuda_graphs=True)))
    assert plain.status == graphed.status == "ok", (plain.reason, graphed.reason)
    assert plain.extra["launch"]["launch_bound"] is True, plain.extra["launch"]
    assert graphed.extra["launch"]["launch_bound"] is False, graphed.extra["launch"]
    assert graphed.summary.median < plain.summary.median


@pytest.mark.gpu
def test_real_tf32_runs_on_tensor_cores_and_is_restored() -> None:
    import torch

    if torch.cuda.get_device_capability(0)[0] < 8:
        pytest.skip("no TF32 before Ampere")
    before = torch.backends.cuda.matmul.fp32_precision
    backend = get_backend("torch-cuda")
    tf32 = run_case(Case("matmul", "torch-cuda", "tf32", (1024, 1024, 1024), None), backend,
                    RunOptions(timing=REAL))
    fp32 = run_case(Case("matmul", "torch-cuda", "float32", (1024, 1024, 1024), None), backend,
                    RunOptions(timing=REAL))
    assert tf32.status == fp32.status == "ok", (tf32.reason, fp32.reason)
    assert torch.backends.cuda.matmul.fp32_precision == before
    # TF32 rounds the operands to a 10-bit mantissa: an error float32 arithmetic never makes
    assert tf32.rel_error is not None and fp32.rel_error is not None
    assert tf32.rel_error > 10 * fp32.rel_error and tf32.rel_error <= ops.TOLERANCE["tf32"]


def test_options_travel_to_workers_and_resumed_runs() -> None:
    import dataclasses

    from bench_suite.measure import worker

    opts = TimingMode(cold_cache=True, nvml=False, flush_bytes=1 << 20, warmup_gpu_s=0.05,
                         nvml_interval_s=0.01)
    assert TimingMode.from_config(dataclasses.asdict(opts)) == opts
    graphs = TimingMode(cuda_graphs=True, warmup_gpu_s=0)
    assert TimingMode.from_config(dataclasses.asdict(graphs)) == graphs
    assert TimingMode.from_config({"cold_cache": "yes", "nvml": 3, "flush_bytes": -1,
                                      "warmup_gpu_s": -1, "nvml_interval_s": True}) == TimingMode()
    assert TimingMode.from_config(None) == TimingMode()
    case = Case("hadamard", "numpy", "float32", (16, 16), 1)
    doc = worker.measure_request({
        "protocol": worker.PROTOCOL, "case": case.to_dict(), "seed": 0,
        "timing": dataclasses.asdict(SamplingPlan(time_budget_s=0.05)),
        "gpu": dataclasses.asdict(TimingMode(cold_cache=True, flush_bytes=1 << 20)),
    })
    assert doc["measurement"]["extra"]["cold_cache"]["flush_bytes"] == 1 << 20


# --- warm-up to full clocks ---------------------------------------------------------------


def test_warm_up_runs_until_the_clock_is_near_its_maximum() -> None:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=1_000)
    kernel = Kernel(dev, warm_ns=100_000)  # 100 us
    # an idle card at 345 MHz, ramping on load: near max (>= 90% of 1980) on the 4th reading
    nvml = FakeNvml([0], clocks=[345, 900, 1500, 1800, 1980])
    sampler = NvmlSampler(nvml, None, interval_s=0)
    out = gpu_options.warm_up(kernel, EventTimer(dev, host_clock=clock), clock, 0.2, sampler)
    assert out["stopped"] == "clock" and out["sm_clock_mhz"] == 1800 and out["max_sm_clock_mhz"] == 1980
    assert out["gpu_s"] < 0.2 and out["blocks"] >= 4 and out["calls"] == kernel.calls


def test_warm_up_without_nvml_runs_its_gpu_time() -> None:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=1_000)
    kernel = Kernel(dev, warm_ns=100_000)
    out = gpu_options.warm_up(kernel, EventTimer(dev, host_clock=clock), clock, 0.2)
    assert out["stopped"] == "gpu_time" and 0.2 <= out["gpu_s"] < 0.22
    # a card stuck at a low clock (power-capped) is warmed up for the GPU time, then timed
    stuck = NvmlSampler(FakeNvml([0x4], clocks=[1200]), None, interval_s=0)
    out = gpu_options.warm_up(kernel, EventTimer(dev, host_clock=clock), clock, 0.05, stuck)
    assert out["stopped"] == "gpu_time" and out["sm_clock_mhz"] == 1200
    assert gpu_options.warm_up(kernel, EventTimer(dev), clock, 0)["skipped"]


def test_every_cuda_case_is_warmed_up_before_timing(gpu: tuple[FakeClock, CachedDevice, FakeTorch],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock, dev, _torch = gpu
    nvml = FakeNvml([0], clocks=[345, 345, 1980])
    monkeypatch.setattr(env_nvml, "_pynvml", lambda: nvml)
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 100_000)), RunOptions(timing=CONFIG), clock)
    assert m.status == "ok", m.reason
    assert m.extra["warmup"]["stopped"] == "clock"
    # the summary describes the timed samples only: the idle clock of the warm-up is not in it
    assert m.extra["nvml"]["sm_clock_mhz"]["min"] == 1980
    assert {s["phase"] for s in m.extra["nvml"]["samples"]} >= {"warmup", "timed"}
    off = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 100_000)),
                   RunOptions(timing=CONFIG, gpu=TimingMode(nvml=False, warmup_gpu_s=0)), clock)
    assert "skipped" in off.extra["warmup"]


# --- launch-bound cases -------------------------------------------------------------------


@pytest.mark.parametrize(("kernel_ns", "bound"), [(1_000, True), (4_000, True), (20_000, False)])
def test_launch_bound_when_the_host_enqueue_covers_the_device_time(
        gpu: tuple[FakeClock, CachedDevice, FakeTorch], kernel_ns: int, bound: bool) -> None:
    clock, dev, _torch = gpu
    backend = FakeCudaBackend(dev, Kernel(dev, warm_ns=kernel_ns))  # behind 5 us launches
    m = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(nvml=False)), clock)
    assert m.status == "ok", m.reason
    assert m.extra["launch"]["launch_bound"] is bound
    frame = to_frame([Run("r", "m", "", {}, {}, (m,))])
    assert frame["launch_bound"].tolist() == [bound]
    cpu = run_case(Case("hadamard", "numpy", "float32", (8, 8), 1), get_backend("numpy"),
                   RunOptions(timing=SamplingPlan(time_budget_s=0.02)))
    assert "launch" not in cpu.extra
    assert to_frame([Run("r", "m", "", {}, {}, (cpu,))])["launch_bound"].isna().all()


def test_launch_bound_is_not_judged_with_a_cold_cache(gpu: tuple[FakeClock, CachedDevice, FakeTorch]) -> None:
    clock, dev, _torch = gpu
    backend = FakeCudaBackend(dev, Kernel(dev, warm_ns=1_000))
    m = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(cold_cache=True, nvml=False)), clock)
    assert m.status == "ok", m.reason
    assert m.extra["launch"]["launch_bound"] is None and "cold-cache" in m.extra["launch"]["reason"]


def test_launch_check_reads_the_sample_blocks_only() -> None:
    from bench_suite.core.timing import Timing

    clock = FakeClock()
    timer = EventTimer(CachedDevice(clock, 0), host_clock=clock)
    timer.host_samples_s[:] = [1.0, 1.0, 2e-3, 2e-3, 2e-3]  # two warm-up blocks, then samples
    timer.device_samples_s[:] = [0.5, 0.5, 1e-3, 1e-3, 1e-3]
    timing = Timing((1e-4, 1e-4, 1e-4), number=10, warmup_calls=11, stop="converged", wall_s=1)
    out = gpu_options.launch_check(timer, timing)
    assert out == {"host_enqueue_s": pytest.approx(2e-4), "device_s": pytest.approx(1e-4),
                   "ratio": pytest.approx(2.0), "launch_bound": True}
    per_graph_call = gpu_options.launch_check(timer, timing, calls_per_block_call=100)
    assert per_graph_call["device_s"] == pytest.approx(1e-6)
    timer.host_samples_s.clear()
    timer.device_samples_s.clear()
    assert gpu_options.launch_check(timer, timing)["launch_bound"] is None


# --- what the options add to a case's memory ----------------------------------------------


def test_options_buffers_that_cannot_fit_skip_the_case(gpu: tuple[FakeClock, CachedDevice, FakeTorch]) -> None:
    clock, dev, torch = gpu

    class Tight(FakeCudaBackend):
        def free_memory_bytes(self) -> int | None:
            return 96 << 20  # a flush buffer of twice the 50 MiB L2 does not fit in 80% of this

    backend = Tight(dev, Kernel(dev, 10_000))
    m = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(cold_cache=True, nvml=False)), clock)
    assert m.status == "skipped"
    assert m.reason == "needs 0.10 GiB, cuda:0 has 0.09 GiB free (beyond its buffers, for the L2 flush buffer)"
    assert torch.buffers == []  # skipped before the buffer was made
    need = gpu_options.option_device_bytes(Case("matmul_backward", "torch-cuda", "float32", (64, 32, 16)),
                                           TimingMode(cuda_graphs=True), l2_bytes=0)
    assert need == {"the CUDA graph pool": (64 * 32 + 32 * 16) * 4}  # dA and dB of one call
    assert run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingMode(nvml=False)), clock).status == "ok"


class _Proc:
    def __init__(self, pid: int, used: int = 1 << 30):
        self.pid, self.usedGpuMemory = pid, used


def test_another_process_on_the_card_makes_the_cuda_case_contended(
        gpu: tuple[FakeClock, CachedDevice, FakeTorch], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    clock, dev, _torch = gpu
    shared = FakeNvml([0x0])
    shared.nvmlDeviceGetComputeRunningProcesses = lambda h: [_Proc(os.getpid()), _Proc(424242)]  # type: ignore[attr-defined]
    monkeypatch.setattr(env_nvml, "_pynvml", lambda: shared)
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 100_000)), RunOptions(timing=CONFIG), clock)
    assert m.status == "ok" and m.extra["nvml"]["other_processes"] == [424242]
    assert m.contended and m.rounds[0].contended  # compare will not judge it
    alone = FakeNvml([0x0])
    alone.nvmlDeviceGetComputeRunningProcesses = lambda h: [_Proc(os.getpid())]  # type: ignore[attr-defined]
    monkeypatch.setattr(env_nvml, "_pynvml", lambda: alone)
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 100_000)), RunOptions(timing=CONFIG), clock)
    assert m.extra["nvml"]["other_processes"] == [] and not m.contended
