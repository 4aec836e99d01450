"""Cold-cache timing, CUDA-graph replay and NVML sampling: through fakes everywhere, and for
real where a GPU is visible (``gpu`` marker)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from bench_suite import gpu_options, ops
from bench_suite.backends import get_backend
from bench_suite.backends.base import Availability, Backend, Prepared
from bench_suite.cases import Case
from bench_suite.gpu_options import NvmlSampler, TimingOptions, time_case
from bench_suite.results import Run, to_frame
from bench_suite.runner import RunOptions, run_case
from bench_suite.timing import EventTimer, HostTimer, TimingConfig
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


class FakeCuda:
    def __init__(self, dev: CachedDevice, fail_capture: bool = False):
        self.dev, self.fail_capture = dev, fail_capture
        self.graphs: list[FakeGraph] = []

    def device(self, index: int) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def Stream(self) -> Any:
        return self

    def wait_stream(self, other: Any) -> None:
        pass

    def current_stream(self) -> Any:
        return self

    def stream(self, s: Any) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def CUDAGraph(self) -> FakeGraph:
        g = FakeGraph(self.dev)
        self.graphs.append(g)
        return g

    @contextlib.contextmanager
    def graph(self, g: FakeGraph) -> Iterator[None]:
        if self.fail_capture:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.dev.capture = g.kernels
        try:
            yield
        finally:
            self.dev.capture = None

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

        return Prepared(self.kernel, run_once, inputs)

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return contextlib.nullcontext(None)

    def synchronize(self) -> None:
        self.dev.synchronize()

    def timer(self, clock: Any) -> EventTimer:
        return EventTimer(self.dev)

    def device_name(self) -> str:
        return "NVIDIA H100 80GB HBM3"

    def free_memory_bytes(self) -> int | None:
        return 1 << 30


CASE = Case("matmul", "torch-cuda", "float32", (4, 4, 4), None)
CONFIG = TimingConfig(time_budget_s=0.05, min_samples=5, target_rel_ci=0.01)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClock, CachedDevice, FakeTorch]:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=5_000)
    torch = FakeTorch(dev)
    monkeypatch.setattr(gpu_options, "_torch", lambda: torch)
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
    prepared = Prepared(kernel, lambda: {}, {})
    plain, extra = time_case(CASE, backend, prepared, CONFIG, clock, TimingOptions(nvml=False))
    assert extra == {}
    assert np.median(plain.samples_s) == pytest.approx(5e-6, rel=0.01)  # launch-bound
    graphed, extra = time_case(CASE, backend, prepared, CONFIG, clock,
                               TimingOptions(cuda_graphs=True, nvml=False))
    calls = extra["cuda_graph"]["calls_per_graph"]
    # a replay lasts min_block_s (1 ms) at the 5.1 us per call of a 10-call probe (10 launches,
    # then the last kernel): ceil(1e6 / 5100)
    assert calls == 197
    assert len(torch.cuda.graphs) == 1 and torch.cuda.graphs[0].kernels == [1_000] * calls
    # kernel time, plus at most one exposed 5 us graph launch per block of replays
    assert 1e-6 <= np.median(graphed.samples_s) <= (5_000 + calls * 1_000) / calls * 1e-9
    assert graphed.number % calls == 0 and torch.cuda.graphs[0].replays > 0


def test_graph_calls_bounded() -> None:
    cfg = TimingConfig(min_block_s=1e-3)
    assert gpu_options.graph_calls(1e-9, cfg, 0, None) == gpu_options.MAX_GRAPH_CALLS
    assert gpu_options.graph_calls(1.0, cfg, 0, None) == 1
    assert gpu_options.graph_calls(1e-6, cfg, out_bytes=1 << 20, free_bytes=40 << 20) == 10


def test_cuda_graph_failure_fails_the_case(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    dev = CachedDevice(clock, launch_ns=5_000)
    monkeypatch.setattr(gpu_options, "_torch", lambda: FakeTorch(dev, fail_capture=True))
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 1_000)),
                 RunOptions(timing=CONFIG, gpu=TimingOptions(cuda_graphs=True, nvml=False)), clock)
    assert m.status == "failed" and "not permitted when stream is capturing" in m.reason


def test_cuda_graphs_ignored_on_the_cpu() -> None:
    m = run_case(Case("hadamard", "numpy", "float32", (16, 16), 1), get_backend("numpy"),
                 RunOptions(timing=TimingConfig(time_budget_s=0.05),
                            gpu=TimingOptions(cuda_graphs=True, nvml=True)))
    assert m.status == "ok"
    assert m.extra["cuda_graph"] == {"skipped": "not a CUDA case"}
    assert m.extra["nvml"] == {"available": False, "reason": "not a CUDA case"}


# --- cold cache through the runner --------------------------------------------------------


def test_cold_cache_on_a_fake_gpu(gpu: tuple[FakeClock, CachedDevice, FakeTorch]) -> None:
    clock, dev, torch = gpu
    kernel = Kernel(dev, warm_ns=100_000, cold_ns=150_000)
    backend = FakeCudaBackend(dev, kernel)
    opts = RunOptions(timing=CONFIG, gpu=TimingOptions(cold_cache=True, nvml=False))
    m = run_case(CASE, backend, opts, clock)
    assert m.status == "ok", m.reason
    assert m.extra["cold_cache"]["flush_bytes"] == 100 << 20  # twice the 50 MiB L2
    assert torch.buffers == [(100 << 20, "cuda:0")]
    assert m.summary.median == pytest.approx(150e-6)  # every call cold
    warm = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingOptions(nvml=False)), clock)
    assert warm.summary.median == pytest.approx(100e-6, rel=0.01)
    assert "cold_cache" not in warm.extra


def test_cold_cache_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    m = run_case(Case("hadamard", "numpy", "float32", (32, 32), 1), get_backend("numpy"),
                 RunOptions(timing=TimingConfig(time_budget_s=0.05),
                            gpu=TimingOptions(cold_cache=True, flush_bytes=1 << 20)))
    assert m.status == "ok", m.reason
    assert m.extra["cold_cache"]["flush_bytes"] == 1 << 20
    monkeypatch.setattr(gpu_options, "cpu_cache_bytes", lambda: 3 << 20)
    flush, nbytes = gpu_options.cpu_flusher()
    assert nbytes == gpu_options.CPU_FLUSH_MIN_BYTES  # twice 3 MiB, raised to the minimum
    flush()
    monkeypatch.setattr(gpu_options, "cpu_cache_bytes", lambda: 6 << 20)
    assert gpu_options.cpu_flusher()[1] == 12 << 20


def test_cache_sizes_from_sysfs(tmp_path: Any) -> None:
    for i, size in enumerate(["48K", "2048K", "105M"]):
        (tmp_path / f"index{i}").mkdir()
        (tmp_path / f"index{i}" / "size").write_text(size + "\n")
    assert gpu_options.cpu_cache_bytes(str(tmp_path)) == 105 << 20
    assert gpu_options.cpu_cache_bytes(str(tmp_path / "none")) is None


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
                              CONFIG, clock, TimingOptions(cold_cache=True))
    assert "no before_call hook" in extra["cold_cache"]["skipped"] and timing.samples_s


# --- NVML ---------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNvml:
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 2, 0

    def __init__(self, reasons: list[int], fail_init: bool = False, no_power: bool = False):
        self.reasons = list(reasons)
        self.fail_init, self.no_power = fail_init, no_power
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
        return 1755 if which == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, which: int) -> int:
        return 1980

    def nvmlDeviceGetTemperature(self, handle: Any, which: int) -> int:
        return 71

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if self.no_power:
            raise NVMLError("Not Supported")
        return 699_000

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self.reasons.pop(0) if len(self.reasons) > 1 else self.reasons[0]


def test_sampler_summary_flags_throttling() -> None:
    nvml = FakeNvml([0x0, 0x4 | 0x1, 0x1], no_power=True)
    sampler = NvmlSampler(nvml, ("handle", 0), interval_s=0)
    with sampler:
        sampler.sample()
    s = sampler.summary()
    assert [x["reasons"] for x in s["samples"]] == [0x0, 0x5, 0x1]
    assert s["samples"][1]["reason_names"] == ["gpu_idle", "sw_power_cap"]
    assert s["throttled"] and s["throttled_fraction"] == pytest.approx(1 / 3)
    assert s["reasons_seen"] == ["gpu_idle", "sw_power_cap"]
    assert s["sm_clock_mhz"] == {"min": 1755, "median": 1755, "max": 1755}
    assert s["power_w"] is None  # not supported: None, not an error
    assert s["temp_c"]["max"] == 71 and s["max_sm_clock_mhz"] == 1980
    idle = NvmlSampler(FakeNvml([0x1]), None, interval_s=0)
    with idle:
        pass
    assert not idle.summary()["throttled"]  # an idle GPU is not throttled


@pytest.mark.parametrize(("reasons", "throttled"), [([0x0], False), ([0x40], True)])
def test_nvml_recorded_by_the_runner_and_flagged_in_the_frame(
        gpu: tuple[FakeClock, CachedDevice, FakeTorch], monkeypatch: pytest.MonkeyPatch,
        reasons: list[int], throttled: bool) -> None:
    clock, dev, _torch = gpu
    nvml = FakeNvml(reasons)
    monkeypatch.setattr(gpu_options, "_pynvml", lambda: nvml)
    m = run_case(CASE, FakeCudaBackend(dev, Kernel(dev, 100_000)), RunOptions(timing=CONFIG), clock)
    assert m.status == "ok", m.reason
    assert m.extra["nvml"]["available"] and len(m.extra["nvml"]["samples"]) >= 2
    assert m.extra["nvml"]["throttled"] is throttled
    assert nvml.inits == nvml.shutdowns == 1
    frame = to_frame([Run("r", "m", "", {}, {}, (m,))])
    assert frame["throttled"].tolist() == [throttled]
    assert m.to_dict()["extra"]["nvml"]["sm_clock_mhz"]["max"] == 1755  # JSON-ready


def test_nvml_absent_is_harmless(gpu: tuple[FakeClock, CachedDevice, FakeTorch],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock, dev, _torch = gpu
    monkeypatch.setattr(gpu_options, "_pynvml", lambda: FakeNvml([0], fail_init=True))
    backend = FakeCudaBackend(dev, Kernel(dev, 100_000))
    auto = run_case(CASE, backend, RunOptions(timing=CONFIG), clock)
    assert auto.status == "ok" and "nvml" not in auto.extra  # auto: silently off
    asked = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingOptions(nvml=True)), clock)
    assert asked.status == "ok"
    assert asked.extra["nvml"]["available"] is False
    assert "Driver Not Loaded" in asked.extra["nvml"]["reason"]

    def no_module() -> Any:
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(gpu_options, "_pynvml", no_module)
    m = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingOptions(nvml=True)), clock)
    assert m.extra["nvml"]["reason"] == "nvidia-ml-py (pynvml) is not installed"
    off = run_case(CASE, backend, RunOptions(timing=CONFIG, gpu=TimingOptions(nvml=False)), clock)
    assert "nvml" not in off.extra


def test_cli_flags_reach_the_options() -> None:
    from bench_suite import cli

    args = cli.create_parser().parse_args(["run", "--cold-cache", "--cuda-graphs", "--no-nvml"])
    assert cli._gpu_options(args) == TimingOptions(cold_cache=True, cuda_graphs=True, nvml=False)
    args = cli.create_parser().parse_args(["run"])
    assert cli._gpu_options(args) == TimingOptions()


# --- the real thing -----------------------------------------------------------------------

REAL = TimingConfig(time_budget_s=0.2, min_samples=5)


@pytest.mark.gpu
def test_real_cold_cache_and_graphs() -> None:
    backend = get_backend("torch-cuda")
    case = Case("hadamard", "torch-cuda", "float32", (256, 256), None)
    cold = run_case(case, backend, RunOptions(timing=REAL, gpu=TimingOptions(cold_cache=True)))
    assert cold.status == "ok", cold.reason
    assert cold.extra["cold_cache"]["flush_bytes"] >= gpu_options.GPU_FLUSH_MIN_BYTES
    graphed = run_case(case, backend, RunOptions(timing=REAL, gpu=TimingOptions(cuda_graphs=True)))
    assert graphed.status == "ok", graphed.reason
    assert graphed.extra["cuda_graph"]["calls_per_graph"] >= 1
    for mode in ("grad", "no_grad"):
        m = run_case(Case("matmul", "torch-cuda", "float32", (128, 128, 128), None, mode),
                     backend, RunOptions(timing=REAL, gpu=TimingOptions(cuda_graphs=True)))
        assert m.status == "ok", m.reason


@pytest.mark.gpu
def test_real_nvml() -> None:
    pytest.importorskip("pynvml")
    m = run_case(Case("matmul", "torch-cuda", "float32", (512, 512, 512), None),
                 get_backend("torch-cuda"), RunOptions(timing=REAL, gpu=TimingOptions(nvml=True)))
    assert m.status == "ok", m.reason
    nv = m.extra["nvml"]
    assert nv["available"], nv
    assert nv["sm_clock_mhz"]["max"] > 0 and isinstance(nv["throttled"], bool)


def test_options_travel_to_workers_and_resumed_runs() -> None:
    import dataclasses

    from bench_suite import worker

    opts = TimingOptions(cold_cache=True, cuda_graphs=True, nvml=False, flush_bytes=1 << 20)
    assert TimingOptions.from_config(dataclasses.asdict(opts)) == opts
    assert TimingOptions.from_config({"cold_cache": "yes", "nvml": 3, "flush_bytes": -1}) == \
        TimingOptions()
    assert TimingOptions.from_config(None) == TimingOptions()
    case = Case("hadamard", "numpy", "float32", (16, 16), 1)
    doc = worker.measure_request({
        "protocol": worker.PROTOCOL, "case": case.to_dict(), "seed": 0,
        "timing": dataclasses.asdict(TimingConfig(time_budget_s=0.05)),
        "gpu": dataclasses.asdict(TimingOptions(cold_cache=True, flush_bytes=1 << 20)),
    })
    assert doc["measurement"]["extra"]["cold_cache"]["flush_bytes"] == 1 << 20
