"""``bench-suite doctor``: probe each device and read its state while the probe runs, then
have ``analysis.diagnosis`` judge it against the reference table of healthy devices.

Per device, a short probe (well under 30 s): the peaks of ``bench-suite peaks`` (the best
matmul rate over a few large sizes and a large device copy, timed and verified like every
case), with the device's state read meanwhile (``env.device_state``). :func:`run_doctor`
computes; the CLI prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench_suite.analysis.diagnosis import (
    DeviceCheck,
    DoctorReport,
    ReferenceTable,
    cpu_check,
    gpu_check,
    packaged_reference,
)
from bench_suite.backends import Backend, device_count, get_backend
from bench_suite.core.cases import cuda_index, is_cuda_backend
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import Clock
from bench_suite.env import collect as env_mod
from bench_suite.env import device_state, system
from bench_suite.measure import peaks
from bench_suite.measure.runner import describe_error, now_iso
from bench_suite.store.peaks import PeakSet

#: The probe: sizes and dtypes of the matmuls, bytes of each copy buffer.
GPU_SIZES: tuple[int, ...] = (4096, 8192)
GPU_DTYPES: tuple[str, ...] = ("bfloat16",)
GPU_COPY_BYTES = 1 << 30
CPU_SIZES: tuple[int, ...] = (1024,)
CPU_DTYPES: tuple[str, ...] = ("float32", "float64")
CPU_COPY_BYTES = 64 << 20


@dataclass(frozen=True)
class DoctorConfig:
    time_budget_s: float = 0.25  # per matmul size and per copy
    gpu_sizes: tuple[int, ...] = GPU_SIZES
    gpu_dtypes: tuple[str, ...] = GPU_DTYPES
    gpu_copy_bytes: int = GPU_COPY_BYTES
    cpu_sizes: tuple[int, ...] = CPU_SIZES
    cpu_dtypes: tuple[str, ...] = CPU_DTYPES
    cpu_copy_bytes: int = CPU_COPY_BYTES
    nvml_interval_s: float = device_state.SAMPLE_INTERVAL_S


# --- the probe ------------------------------------------------------------------------------


Progress = Callable[[str], None]


def _silent(_line: str) -> None:
    return None


def default_backends() -> tuple[str, ...]:
    """The CPU (numpy) and every visible GPU."""
    return ("numpy", *(f"torch-cuda:{i}" for i in range(device_count("torch-cuda"))))


def check_backends(names: Iterable[str]) -> tuple[str, ...]:
    """Bad input is refused before anything runs: a GPU that is not visible, one device twice."""
    names = tuple(names)
    cuda = [n for n in names if is_cuda_backend(n)]
    if cuda:
        count = device_count("torch-cuda")
        for n in cuda:
            if cuda_index(n) >= count:
                raise UsageError(f"{n}: {'no CUDA device is visible' if count == 0 else f'only {count} visible'}")
    indices = [cuda_index(n) for n in cuda]
    if len(set(indices)) != len(indices):
        raise UsageError("the same GPU is named twice (torch-cuda and torch-cuda:0 are one device)")
    cpu = [n for n in names if not is_cuda_backend(n)]
    if len(cpu) > 1:
        raise UsageError(f"one CPU backend at a time ({', '.join(cpu)}): they probe the same cores")
    return names


def run_doctor(backends: Sequence[str], config: DoctorConfig | None = None,
               reference: ReferenceTable | None = None, machine: str | None = None,
               progress: Progress = _silent, backend_for: Callable[[str], Backend] = get_backend,
               clock: Clock = time.perf_counter_ns, nvml: Any = None, torch: Any = None) -> DoctorReport:
    """Probe each device and judge it against the reference table."""
    config = config or DoctorConfig()
    table = reference or packaged_reference()
    machine = env_mod.machine_name(machine)
    checks = []
    for name in check_backends(backends):
        t0 = time.monotonic()
        if is_cuda_backend(name):
            check = _check_gpu(name, config, table, machine, progress, backend_for, clock, nvml, torch)
        else:
            check = _check_cpu(name, config, table, machine, progress, backend_for, clock)
        checks.append(replace(check, seconds=time.monotonic() - t0))
    return DoctorReport(machine, now_iso(), tuple(checks), table.source)


def _check_gpu(name: str, config: DoctorConfig, table: ReferenceTable, machine: str,
               progress: Progress, backend_for: Callable[[str], Backend], clock: Clock,
               nvml: Any, torch: Any) -> DeviceCheck:
    backend = backend_for(name)
    pcfg = peaks.PeaksConfig(sizes=config.gpu_sizes, dtypes=config.gpu_dtypes, threads=(None,),
                             time_budget_s=config.time_budget_s, copy_bytes=config.gpu_copy_bytes)
    with device_state.gpu_state_session(cuda_index(name), nvml, torch, config.nvml_interval_s) as s:
        ps, failure = _probe(name, pcfg, machine, progress, backend, clock)
    state: dict[str, Any] = (s.state() if isinstance(s, device_state.GpuStateSampler)
                             else {"available": False, "reason": s})
    return gpu_check(name, backend.device, ps, failure, state, table, config.gpu_dtypes,
                     lambda: _name(backend))


def _probe(name: str, pcfg: peaks.PeaksConfig, machine: str, progress: Progress, backend: Backend,
           clock: Clock) -> tuple[PeakSet, str]:
    """The peaks of one device; a probe that fails (a CUDA error, no memory) is the device's
    problem, recorded as its figures' reason, not the doctor's crash."""
    try:
        return peaks.measure_peaks([name], pcfg, machine, progress, lambda _n: backend, clock), ""
    except Exception as exc:
        return PeakSet(machine, now_iso(), {}, {}, ()), f"the probe failed: {describe_error(exc)}"


def _name(backend: Backend) -> str:
    try:
        return backend.device_name()
    except Exception:  # no CUDA, no driver: the state or the verdict says why
        return backend.device


def _check_cpu(name: str, config: DoctorConfig, table: ReferenceTable, machine: str,
               progress: Progress, backend_for: Callable[[str], Backend], clock: Clock) -> DeviceCheck:
    backend = backend_for(name)
    cpus = sorted(system.usable_cpus())
    pcfg = peaks.PeaksConfig(sizes=config.cpu_sizes, dtypes=config.cpu_dtypes, threads=(1, None),
                             time_budget_s=config.time_budget_s, copy_bytes=config.cpu_copy_bytes)
    with device_state.CpuLoadMeter(cpus) as meter:
        ps, failure = _probe(name, pcfg, machine, progress, backend, clock)
    state = {**device_state.cpu_state(cpus), "load": meter.result}
    return cpu_check(name, ps, failure, state, table, config.cpu_dtypes, lambda: _name(backend))
