"""The clock loop, driven by a seeded fake clock and a fake CUDA device."""

from __future__ import annotations

import pytest

from bench_suite.core import timing
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import EventTimer, HostTimer, SamplingPlan, measure
from tests.fakes import FakeClock, FakeCudaDevice, FakeKernel, FakeWork


def test_host_timer_times_exactly_the_block() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 1_000)
    assert HostTimer(clock).time_block(work, 7) == pytest.approx(7e-6)
    assert work.calls == 7


def test_noiseless_work_converges_at_min_samples_with_the_exact_time() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 250_000)  # 250 µs per call
    cfg = SamplingPlan(min_samples=10, min_block_s=1e-3, warmup_s=0.0)
    t = measure(work, HostTimer(clock), cfg, clock)
    assert t.stop == "converged"
    assert len(t.samples_s) == 10
    assert all(s == pytest.approx(250e-6) for s in t.samples_s)
    # calibration: a block lasts at least min_block_s
    assert t.number * 250e-6 >= 1e-3
    assert t.number <= 6


def test_calibration_grows_number_for_short_calls() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 50)  # 50 ns: a no-op-like callable
    t = measure(work, HostTimer(clock), SamplingPlan(min_block_s=1e-3, warmup_s=0), clock)
    assert t.number * 50e-9 >= 1e-3
    assert t.number < 1e-3 / 50e-9 * 12  # not wildly over


def test_warmup_runs_for_at_least_warmup_s() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 1e6)  # 1 ms
    t = measure(work, HostTimer(clock), SamplingPlan(warmup_s=0.05, min_block_s=1e-4), clock)
    assert t.warmup_calls >= 50


def test_noisy_work_stops_on_the_budget_and_says_so() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 1e6, rel_noise=0.5, seed=1)  # very noisy: 1% is out of reach
    cfg = SamplingPlan(time_budget_s=0.2, target_rel_ci=0.001)
    t = measure(work, HostTimer(clock), cfg, clock)
    assert t.stop == "budget"
    assert not t.converged
    # the budget is honoured to within one block
    assert t.wall_s <= 0.2 + 3 * t.number * 1e-3 * 5


def test_moderate_noise_converges_with_the_median_within_target() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 200_000, rel_noise=0.03, seed=2)
    cfg = SamplingPlan(target_rel_ci=0.01, time_budget_s=10)
    t = measure(work, HostTimer(clock), cfg, clock)
    assert t.stop == "converged"
    from bench_suite.core import stats

    s = stats.summarize(t.samples_s)
    assert s.rel_ci <= 0.01
    # the lognormal's median is the nominal time
    assert s.median == pytest.approx(200e-6, rel=0.03)


def test_slow_op_still_gets_the_hard_minimum_of_samples() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 2e9, rel_noise=0.1, seed=3)  # 2 s per call, budget 1 s
    t = measure(work, HostTimer(clock), SamplingPlan(time_budget_s=1.0), clock)
    assert len(t.samples_s) == timing.MIN_SAMPLES_HARD
    assert t.number == 1


def test_max_samples_stops_the_loop() -> None:
    clock = FakeClock()
    work = FakeWork(clock, 1e5, rel_noise=0.5, seed=4)
    cfg = SamplingPlan(max_samples=25, min_samples=5, target_rel_ci=1e-6, time_budget_s=100)
    t = measure(work, HostTimer(clock), cfg, clock)
    assert t.stop == "max_samples"
    assert len(t.samples_s) == 25


# --- the CUDA path, through a fake asynchronous device --------------------------------------


def test_event_timer_measures_device_time_not_launch_time() -> None:
    clock = FakeClock()
    dev = FakeCudaDevice(clock, launch_ns=5_000)
    kernel = FakeKernel(dev, mean_ns=400_000)  # 400 µs kernels, 5 µs launches
    seconds = EventTimer(dev).time_block(kernel, 10)
    # device time: 10 kernels plus the first launch's latency (the device idles until then)
    assert seconds == pytest.approx(10 * 400e-6 + 5e-6, rel=1e-6)


def test_unsynchronized_host_clock_would_time_only_the_launches() -> None:
    # The discipline the EventTimer and a synchronizing HostTimer keep: without a sync the
    # host clock sees 10 launches (50 µs), not 4 ms of kernels.
    clock = FakeClock()
    dev = FakeCudaDevice(clock, launch_ns=5_000)
    kernel = FakeKernel(dev, mean_ns=400_000)
    naive = HostTimer(clock).time_block(kernel, 10)
    assert naive == pytest.approx(10 * 5e-6)
    synced = HostTimer(clock, dev.synchronize).time_block(kernel, 10)
    assert synced == pytest.approx(10 * 400e-6, rel=0.02)


def test_event_timer_synchronizes_before_starting() -> None:
    clock = FakeClock()
    dev = FakeCudaDevice(clock)
    FakeKernel(dev, mean_ns=10e6)()  # earlier work still running on the device
    kernel = FakeKernel(dev, mean_ns=100_000)
    seconds = EventTimer(dev).time_block(kernel, 3)
    # the earlier 10 ms does not leak in: 3 kernels and one launch latency
    assert seconds == pytest.approx(3 * 100e-6 + 5e-6, rel=1e-6)


def test_measure_on_fake_cuda_device_converges_on_kernel_time() -> None:
    clock = FakeClock()
    dev = FakeCudaDevice(clock, launch_ns=3_000)
    kernel = FakeKernel(dev, mean_ns=50_000, rel_noise=0.01, seed=5)
    t = measure(kernel, EventTimer(dev), SamplingPlan(time_budget_s=5), clock)
    assert t.converged
    from bench_suite.core import stats

    assert stats.summarize(t.samples_s).median == pytest.approx(50e-6, rel=0.01)
    assert dev.syncs >= len(t.samples_s)  # one barrier per block at least


@pytest.mark.parametrize(
    "kwargs",
    [{"target_rel_ci": 0}, {"min_samples": 0}, {"min_samples": 20, "max_samples": 10},
     {"time_budget_s": -1}, {"time_budget_s": float("nan")}, {"min_block_s": 0}],
)
def test_bad_timing_settings_are_user_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        SamplingPlan(**kwargs)  # type: ignore[arg-type]


def test_measure_restores_gc_state() -> None:
    import gc

    clock = FakeClock()
    assert gc.isenabled()
    measure(FakeWork(clock, 1e6), HostTimer(clock), SamplingPlan(), clock)
    assert gc.isenabled()
