"""A fake GPU node for the multi-device and doctor tests: a fake NVML whose every counter a
test sets, and a CUDA backend on the fake device of ``tests/fakes.py`` whose matmul and copy
run at chosen rates, so that the doctor's GPU verdicts and ``torch-cuda:all`` run without a GPU.

``register`` is also a backend plugin (``BENCH_SUITE_BACKEND_PLUGINS=tests.fake_gpu_node:register``)
for subprocesses: it makes ``BENCH_SUITE_TEST_GPUS`` (default 2) CUDA devices visible, each a
numpy backend under a CUDA name, so a real ``--concurrent`` launch runs end to end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from bench_suite.backends import Backend, Prepared
from bench_suite.backends.base import Availability
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.core import ops
from bench_suite.core.cases import Case, cuda_index
from bench_suite.core.timing import EventTimer
from tests.fakes import FakeClock, FakeCudaDevice

H100 = "NVIDIA H100 80GB HBM3"
PLUGIN = "tests.fake_gpu_node:register"
GPUS_ENV = "BENCH_SUITE_TEST_GPUS"


class NVMLError(Exception):
    pass


class FakeNvml:
    """nvidia-ml-py as the doctor uses it, for one card (every handle is that card). The
    defaults are a healthy H100 SXM under a dense matmul: full clocks, at its power cap."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 2, 0
    NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
    NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1

    def __init__(self, **state: Any):
        self.state: dict[str, Any] = {
            "name": H100, "sm": 1980, "mem": 2619, "max_sm": 1980, "max_mem": 2619,
            "power_limit_w": 700, "default_power_limit_w": 700, "power_w": 690, "temp_c": 71,
            "util": 100, "reasons": 0x4, "pcie_gen": 5, "pcie_width": 16, "pcie_max_gen": 5,
            "pcie_max_width": 16, "ecc_uncorrected": 0, "ecc_corrected": 0,
            "remap": (0, 0, 0, 0), "processes": [os.getpid()], "fail_init": False,
        }
        self.state.update(state)
        self.inits = self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.state["fail_init"]:
            raise NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByPciBusId(self, bus: bytes) -> Any:
        raise NVMLError("not found")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ("handle", index)

    def nvmlDeviceGetName(self, h: Any) -> str:
        return str(self.state["name"])

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return "GPU-fake"

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        return SimpleNamespace(busId=b"00000000:1B:00.0")

    def nvmlDeviceGetClockInfo(self, h: Any, which: int) -> int:
        return int(self.state["sm" if which == self.NVML_CLOCK_SM else "mem"])

    def nvmlDeviceGetMaxClockInfo(self, h: Any, which: int) -> int:
        return int(self.state["max_sm" if which == self.NVML_CLOCK_SM else "max_mem"])

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        return int(self.state["power_limit_w"] * 1000)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: Any) -> int:
        return int(self.state["default_power_limit_w"] * 1000)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        return int(self.state["power_w"] * 1000)

    def nvmlDeviceGetTemperature(self, h: Any, which: int) -> int:
        return int(self.state["temp_c"])

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        return SimpleNamespace(gpu=self.state["util"], memory=50)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        return int(self.state["reasons"])

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: Any) -> int:
        return int(self.state["pcie_gen"])

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: Any) -> int:
        return int(self.state["pcie_width"])

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: Any) -> int:
        return int(self.state["pcie_max_gen"])

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: Any) -> int:
        return int(self.state["pcie_max_width"])

    def nvmlDeviceGetEccMode(self, h: Any) -> tuple[int, int]:
        return (1, 1)

    def nvmlDeviceGetTotalEccErrors(self, h: Any, kind: int, counter: int) -> int:
        if counter != self.NVML_VOLATILE_ECC:
            raise NVMLError("Not Supported")
        key = "ecc_uncorrected" if kind == self.NVML_MEMORY_ERROR_TYPE_UNCORRECTED else "ecc_corrected"
        return int(self.state[key])

    def nvmlDeviceGetRemappedRows(self, h: Any) -> tuple[int, int, int, int]:
        return tuple(self.state["remap"])  # type: ignore[return-value]

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=2 << 30) for p in self.state["processes"]]


class FakeGpu(Backend):
    """A CUDA backend on a fake device: its matmuls run at ``flops_per_s``, its copies at
    ``bytes_per_s`` (read + written), on the device's own clock, timed by CUDA-style events.
    Results are the float64 reference, so every case verifies."""

    def __init__(self, name: str = "torch-cuda:0", model: str = H100,
                 flops_per_s: float = 795e12, bytes_per_s: float = 3.0e12):
        self.name = name
        self.device = f"cuda:{cuda_index(name)}"
        self.model, self.flops_per_s, self.bytes_per_s = model, flops_per_s, bytes_per_s
        self.dev = FakeCudaDevice(FakeClock(), launch_ns=0)

    def availability(self, case: Case) -> Availability:
        return Availability.yes()

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        ns = ops.flops(case) / self.flops_per_s * 1e9

        def call() -> None:
            self.dev.launch(ns)

        def run_once() -> dict[str, np.ndarray]:
            return ops.reference(case, inputs)

        return Prepared(call, run_once, inputs)

    def copy_buffers(self, nbytes: int, seed: int) -> tuple[Callable[[], object], Callable[[], None]]:
        ns = 2 * nbytes / self.bytes_per_s * 1e9

        def call() -> None:
            self.dev.launch(ns)

        return call, lambda: None

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return contextlib.nullcontext(None)

    def synchronize(self) -> None:
        self.dev.synchronize()

    def timer(self, clock: Any) -> EventTimer:
        return EventTimer(self.dev)

    def device_name(self) -> str:
        return self.model

    def free_memory_bytes(self) -> int | None:
        return 80 << 30


class NumpyAsGpu(NumpyBackend):
    """numpy under a CUDA name: what a subprocess sees as GPU N of a fake node."""

    def __init__(self, name: str):
        self.name = name
        self.device = f"cuda:{cuda_index(name)}"

    def device_name(self) -> str:
        return H100


def register(factories: dict[str, Callable[[str], Backend]]) -> None:
    from bench_suite import backends

    count = int(os.environ.get(GPUS_ENV, "2"))
    backends.DEVICE_COUNTERS["torch-cuda"] = lambda: count
    factories["torch-cuda"] = NumpyAsGpu
