"""Seeded test doubles for the clock and for a CUDA device, so that the timing loop, the CUDA
path included, runs deterministically without a GPU."""

from __future__ import annotations

import numpy as np


class FakeClock:
    """A nanosecond clock that only moves when told to."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t

    def advance(self, ns: float) -> None:
        self.t += int(ns)


class FakeWork:
    """A callable whose every call takes a seeded, lognormally jittered time on the clock."""

    def __init__(self, clock: FakeClock, mean_ns: float, rel_noise: float = 0.0, seed: int = 0):
        self.clock = clock
        self.mean_ns = mean_ns
        self.rel_noise = rel_noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def duration(self) -> float:
        if self.rel_noise == 0:
            return self.mean_ns
        return self.mean_ns * float(self.rng.lognormal(0.0, self.rel_noise))

    def __call__(self) -> None:
        self.calls += 1
        self.clock.advance(self.duration())


class FakeCudaDevice:
    """An asynchronous device: launches cost the host ``launch_ns``; kernels run on a device
    timeline that the host only waits for at ``synchronize``. Events record the time at which
    all work queued before them has finished, as CUDA events do."""

    def __init__(self, clock: FakeClock, launch_ns: float = 5_000):
        self.clock = clock
        self.launch_ns = launch_ns
        self.device_free_at = 0  # device-timeline time when queued work ends
        self.syncs = 0

    def launch(self, kernel_ns: float) -> None:
        self.clock.advance(self.launch_ns)
        start = max(self.device_free_at, self.clock.t)
        self.device_free_at = start + int(kernel_ns)

    def synchronize(self) -> None:
        self.syncs += 1
        self.clock.t = max(self.clock.t, self.device_free_at)

    def event(self) -> FakeEvent:
        return FakeEvent(self)


class FakeEvent:
    def __init__(self, device: FakeCudaDevice):
        self.device = device
        self.at: int | None = None

    def record(self) -> None:
        # the event completes when everything queued before it has run
        self.at = max(self.device.device_free_at, self.device.clock.t)

    def synchronize(self) -> None:
        if self.at is None:
            raise RuntimeError("event synchronized before it was recorded")
        self.device.clock.t = max(self.device.clock.t, self.at)

    def elapsed_time(self, end: FakeEvent) -> float:
        if self.at is None or end.at is None:
            raise RuntimeError("elapsed_time on an unrecorded event")
        return (end.at - self.at) / 1e6  # milliseconds, as torch.cuda.Event


class FakeKernel:
    """A callable that launches one kernel of seeded duration on a FakeCudaDevice."""

    def __init__(self, device: FakeCudaDevice, mean_ns: float, rel_noise: float = 0.0, seed: int = 0):
        self.device = device
        self.work = FakeWork(device.clock, mean_ns, rel_noise, seed)

    def __call__(self) -> None:
        self.work.calls += 1
        self.device.launch(self.work.duration())
