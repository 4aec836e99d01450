"""``bench-suite peaks``: what this machine's devices achieve at best, measured.

Per device (backend) and dtype:

* **FLOP/s**: the best median rate of square matmuls over a small sweep of large sizes, in
  the spirit of maximum-achievable-matmul finders. Each size is an ordinary case, run by
  :func:`runner.run_case`: verified against the float64 reference, timed by the same loop.
* **bytes/s**: a large device-to-device copy (``np.copyto``, ``Tensor.copy_``), counting the
  bytes read plus the bytes written, timed by the backend's own timer (CUDA events on a GPU).

CPU figures are measured on one thread and on every core, so that single-thread cases are
held to a single-thread peak. Beside the measured peaks the file keeps the CPU's theoretical
peak (``roofline.cpu_theoretical_peaks``) and a GPU's datasheet figures, so a report can show
both fractions. The result is a ``store.peaks.PeakSet``, saved as ``results/<machine>/peaks.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_suite.analysis import roofline
from bench_suite.analysis.catalogue import datasheet_peaks
from bench_suite.backends import Backend, get_backend
from bench_suite.core.cases import Case, cpu_count, is_cuda_backend
from bench_suite.core.timing import Clock, SamplingPlan, measure
from bench_suite.env import collect as env_mod
from bench_suite.env import system
from bench_suite.measure.gpu.options import TimingMode
from bench_suite.measure.runner import RunOptions, now_iso, run_case
from bench_suite.store.peaks import PEAKS_FILENAME, Peak, PeakSet

if TYPE_CHECKING:
    import pandas as pd

#: Square matmul sizes tried per device (the best median wins).
CPU_SIZES: tuple[int, ...] = (1024, 1536, 2048)
GPU_SIZES: tuple[int, ...] = (2048, 4096, 8192)
CPU_DTYPES: tuple[str, ...] = ("float32", "float64")
GPU_DTYPES: tuple[str, ...] = ("float64", "float32", "tf32", "float16", "bfloat16")
#: Bytes of each copy buffer (two are allocated): well beyond the caches of the device.
CPU_COPY_BYTES = 256 << 20
GPU_COPY_BYTES = 1 << 30
MIN_COPY_BYTES = 16 << 20


@dataclass(frozen=True)
class PeaksConfig:
    sizes: tuple[int, ...] | None = None  # None: CPU_SIZES or GPU_SIZES by device
    dtypes: tuple[str, ...] | None = None  # None: CPU_DTYPES or GPU_DTYPES by device
    threads: tuple[int | None, ...] = (1, None)  # CPU thread counts (None: every core)
    time_budget_s: float = 0.3  # per size, and per copy
    copy_bytes: int | None = None  # None: CPU_COPY_BYTES or GPU_COPY_BYTES
    seed: int = 0

    def timing(self) -> SamplingPlan:
        # A peak is a best figure: a 2% interval on the median and a few samples suffice.
        return SamplingPlan(target_rel_ci=0.02, min_samples=5, time_budget_s=self.time_budget_s)


def default_backends() -> tuple[str, ...]:
    """numpy, torch-cpu where torch is installed, torch-cuda where a GPU is visible."""
    from bench_suite.backends.torch_backend import torch_installed

    out = ["numpy"]
    if torch_installed():
        out.append("torch-cpu")
        import torch

        out += ["torch-cuda" if i == 0 else f"torch-cuda:{i}" for i in range(torch.cuda.device_count())]
    return tuple(out)


def default_path(machine: str, results_dir: str | Path = "results") -> Path:
    return Path(results_dir) / machine / PEAKS_FILENAME


#: Called with one line of progress ("numpy float32 n=2048 threads=1: 176 GFLOP/s").
Progress = Callable[[str], None]


def _silent(_line: str) -> None:
    return None


def measure_peaks(
    backends: Sequence[str],
    config: PeaksConfig = PeaksConfig(),
    machine: str | None = None,
    progress: Progress = _silent,
    backend_for: Callable[[str], Backend] = get_backend,
    clock: Clock = time.perf_counter_ns,
) -> PeakSet:
    """Measure the peaks of every backend; skipped or failed sizes are noted, not fatal."""
    wants_torch = any(b != "numpy" for b in backends)
    env = env_mod.collect(machine, torch=wants_torch and _torch_installed())
    machine = str(env["machine"])
    peaks: list[Peak] = []
    notes: list[str] = []
    for name in backends:
        backend = backend_for(name)
        cuda = is_cuda_backend(name)
        sizes = config.sizes or (GPU_SIZES if cuda else CPU_SIZES)
        dtypes = config.dtypes or (GPU_DTYPES if cuda else CPU_DTYPES)
        thread_axis: tuple[int | None, ...] = (None,) if cuda else config.threads
        for threads in thread_axis:
            bw, copy_details = measure_copy(backend, threads, config, clock)
            progress(f"{name} copy threads={_tl(threads)}: " + (
                f"{bw / 1e9:,.1f} GB/s" if bw else f"skipped ({copy_details.get('reason')})"))
            for dtype in dtypes:
                peak, why = _matmul_peak(backend, name, dtype, sizes, threads, config, clock,
                                         progress)
                if peak is None:
                    notes.append(f"{name} {dtype} threads={_tl(threads)}: {why}")
                    continue
                threads_used = None if cuda else (peak["threads"] or threads or cpu_count())
                peaks.append(Peak(
                    device=backend.device, dtype=dtype, flops_per_s=peak["flops_per_s"],
                    bytes_per_s=bw, source="measured", device_name=peak["device_name"],
                    machine=machine, backend=name, threads=threads_used,
                    note=(f"best matmul of n={','.join(map(str, sizes))}: n={peak['n']} "
                          f"(median {peak['median_s'] * 1e3:.3g} ms)"
                          + (f"; copy of 2 x {copy_details['bytes'] >> 20} MiB" if bw else "")),
                    details={"matmul": peak["per_size"], "best_n": peak["n"], "copy": copy_details},
                ))
    peaks.extend(_reference_peaks(peaks, env, machine))
    cfg = {k: v for k, v in asdict(config).items()}
    cfg.update(backends=list(backends), notes=notes)
    return PeakSet(machine, now_iso(), env, cfg, tuple(peaks))


def _tl(threads: int | None) -> str:
    return "all" if threads is None else str(threads)


def _torch_installed() -> bool:
    from bench_suite.backends.torch_backend import torch_installed

    return torch_installed()


def _matmul_peak(backend: Backend, name: str, dtype: str, sizes: Sequence[int],
                 threads: int | None, config: PeaksConfig, clock: Clock,
                 progress: Progress) -> tuple[dict[str, Any] | None, str]:
    options = RunOptions(seed=config.seed, timing=config.timing(),
                         gpu=TimingMode(nvml=False))
    best: dict[str, Any] | None = None
    per_size: dict[str, float | None] = {}
    reasons: list[str] = []
    for n in sizes:
        case = Case("matmul", name, dtype, (n, n, n), threads)
        m = run_case(case, backend, options, clock)
        rate = m.flops / m.summary.median if m.status == "ok" and m.summary.median > 0 else None
        per_size[str(n)] = rate
        if rate is None:
            reasons.append(f"n={n} {m.status}: {m.reason}")
            progress(f"{case.id}: {m.status} ({m.reason})")
            continue
        progress(f"{case.id}: {rate / 1e9:,.1f} GFLOP/s")
        if best is None or rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "n": n, "median_s": m.summary.median,
                    "threads": m.threads, "device_name": m.device_name}
    if best is None:
        return None, "; ".join(reasons) or "no size measured"
    best["per_size"] = per_size
    return best, ""


def measure_copy(backend: Backend, threads: int | None, config: PeaksConfig,
                 clock: Clock = time.perf_counter_ns) -> tuple[float | None, dict[str, Any]]:
    """Bytes/s of a large copy on the backend's device (read + written), and how it was got.

    Returns ``(None, {"reason": ...})`` for a backend that has no copy here (a test double)
    or too little memory.
    """
    cuda = is_cuda_backend(backend.name)
    nbytes = config.copy_bytes or (GPU_COPY_BYTES if cuda else CPU_COPY_BYTES)
    free = backend.free_memory_bytes()
    while free is not None and 2 * nbytes > 0.5 * free and nbytes > MIN_COPY_BYTES:
        nbytes //= 2
    if free is not None and 2 * nbytes > 0.5 * free:
        return None, {"reason": f"not enough free memory for 2 x {nbytes >> 20} MiB"}
    try:
        make = _copy_maker(backend)
    except LookupError as exc:
        return None, {"reason": str(exc)}
    call, release = make(nbytes, config.seed)
    try:
        with backend.threads(threads) as applied:
            timing = measure(call, backend.timer(clock), config.timing(), clock)
    finally:
        release()
    median = sorted(timing.samples_s)[len(timing.samples_s) // 2]
    return 2 * nbytes / median, {"bytes": nbytes, "median_s": median, "threads": applied,
                                 "counted": "bytes read + bytes written"}


CopyMaker = Callable[[int, int], tuple[Callable[[], object], Callable[[], None]]]


def _copy_maker(backend: Backend) -> CopyMaker:
    custom = getattr(backend, "copy_buffers", None)  # test doubles may bring their own
    if callable(custom):
        return custom  # type: ignore[no-any-return]
    if backend.name == "numpy":
        return _numpy_copy
    if backend.name.startswith("torch-"):
        device = backend.device
        return lambda nbytes, seed: _torch_copy(nbytes, seed, device)
    raise LookupError(f"no copy benchmark for backend {backend.name!r}")


def _numpy_copy(nbytes: int, seed: int) -> tuple[Callable[[], object], Callable[[], None]]:
    import numpy as np

    # Values do not change a copy's speed; arange is cheap to make (random data is not).
    src = np.arange(nbytes // 4, dtype=np.float32) + np.float32(seed % 7 + 0.5)
    dst = np.empty_like(src)
    dst.fill(1.5)  # touch every page before timing: first-touch faults are not bandwidth

    def call() -> object:
        return np.copyto(dst, src)

    def release() -> None:
        nonlocal src, dst
        del src, dst

    return call, release


def _torch_copy(nbytes: int, seed: int, device: str) -> tuple[Callable[[], object], Callable[[], None]]:
    import torch

    src = torch.arange(nbytes // 4, dtype=torch.float32, device=device) + (seed % 7 + 0.5)
    dst = torch.empty_like(src).fill_(1.5)
    bufs = [src, dst]

    def call() -> object:
        return dst.copy_(src)

    def release() -> None:
        bufs.clear()

    return call, release


def _reference_peaks(measured: Sequence[Peak], env: dict[str, Any], machine: str) -> list[Peak]:
    """The CPU's theoretical peak and each GPU's datasheet peaks, to set beside the measured."""
    out: list[Peak] = []
    if any(p.device == "cpu" for p in measured):
        info = system.cpuinfo()
        flags = info.flags or info.features
        spec = roofline.cpu_spec(env.get("cpu", {}), flags=flags or None)
        if spec is not None:
            bws = [p.bytes_per_s for p in measured if p.device == "cpu" and p.bytes_per_s]
            dtypes = sorted({p.dtype for p in measured if p.device == "cpu"})
            out += roofline.cpu_theoretical_peaks(spec, machine, dtypes,
                                                  bytes_per_s=max(bws) if bws else None)
    gpus = {(p.device, p.device_name) for p in measured if p.device != "cpu"}
    for device, name in sorted(gpus):
        out += [replace_machine(p, machine) for p in datasheet_peaks(name, device)]
    # the host-device link of each GPU measured (what h2d and d2h are held to)
    out += [p for p in roofline.link_peaks_from_env(env, machine) if p.device in {d for d, _ in gpus}]
    return out


def replace_machine(p: Peak, machine: str) -> Peak:
    from dataclasses import replace

    return replace(p, machine=machine)


def peaks_table(peaks: PeakSet) -> pd.DataFrame:
    """One row per measured peak, beside the theoretical or datasheet figure for the same
    device, dtype and cores: ``pct_of_reference`` = measured / reference x 100. On a CPU,
    ``implied_clock_ghz`` is the clock at which the measured rate would be the theoretical
    peak: above the clock used, the cores ran faster than it (turbo)."""
    import pandas as pd

    refs = {(p.device, p.dtype, p.threads): p for p in peaks.peaks if p.source != "measured"}
    rows = []
    for p in peaks.peaks:
        if p.source != "measured":
            continue
        ref = refs.get((p.device, p.dtype, p.threads)) or refs.get((p.device, p.dtype, None))
        ref_flops = ref.flops_per_s if ref else None
        fpc = ref.details.get("flops_per_cycle_per_core") if ref else None
        implied = (p.flops_per_s / (fpc * (p.threads or 1)) / 1e9
                   if fpc and p.flops_per_s and p.device == "cpu" else math.nan)
        rows.append({
            "device": p.device, "device_name": p.device_name, "backend": p.backend,
            "dtype": p.dtype, "threads": "all" if p.threads is None else p.threads,
            "gflops": p.gflops, "gbps": p.gbps, "best_n": p.details.get("best_n"),
            "reference": ref.source if ref else "",
            "reference_gflops": ref_flops / 1e9 if ref_flops else math.nan,
            "pct_of_reference": 100 * p.flops_per_s / ref_flops
            if ref_flops and p.flops_per_s else math.nan,
            "implied_clock_ghz": implied,
        })
    return pd.DataFrame(rows)
