"""The roofline: what each case could attain on its device, and how much of it it reached.

A *peak* (``store.peaks.Peak``) is what a device can do at one dtype: FLOP/s and memory
bytes/s. Four sources, all found here for a report (:func:`peaks_for_runs`):

* ``measured``: ``bench-suite peaks`` (``measure.peaks``): the best matmul of a small sweep of
  large shapes and a large device copy, timed like every other case, saved as ``peaks.json``
  beside the run files. What the report's ``pct_of_peak`` is against: what this machine, with
  these libraries, was seen to do.
* ``datasheet``: the catalogue of NVIDIA GPUs (``analysis.catalogue``, dense, no sparsity),
  looked up by the name torch reports. What ``pct_of_datasheet`` is against on GPUs.
* ``theoretical``: a CPU's vector width x FMA units x 2 x cores x clock
  (:func:`cpu_theoretical_peaks`). What ``pct_of_datasheet`` is against on CPUs.
* ``link``: the host-device link of a GPU, per direction: PCIe generation x lanes (from NVML
  or sysfs, recorded in the run's environment) or NVLink-C2C (:func:`link_peak`). What the
  copies (``h2d``, ``d2h``) are held to: ``pct_of_link``.

The roofline of a case with arithmetic intensity I (FLOPs per byte, ``ops.arithmetic_intensity``)
is ``attainable = min(peak FLOP/s, I x bandwidth)``; :func:`add_roofline_columns` adds it, and
the fraction achieved, to the tidy frame of ``results.to_frame``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_suite.analysis.catalogue import datasheet_peaks
from bench_suite.core.cases import DTYPES
from bench_suite.env import system
from bench_suite.store.env_record import EnvRecord
from bench_suite.store.peaks import LINK_DTYPE, Peak, peaks_beside

if TYPE_CHECKING:
    import pandas as pd

    from bench_suite.store.results import Run

#: Columns :func:`add_roofline_columns` adds. Rates in GFLOP/s and GB/s, fractions in percent.
ROOFLINE_COLUMNS: tuple[str, ...] = (
    "peak_gflops", "peak_gbps", "attainable_gflops", "pct_of_peak", "peak_source",
    "datasheet_gflops", "datasheet_gbps", "attainable_datasheet_gflops", "pct_of_datasheet",
    "datasheet_source", "link_gbps", "pct_of_link", "link_source",
)


def attainable(intensity: float, flops_per_s: float | None, bytes_per_s: float | None) -> float:
    """The roofline: ``min(peak FLOP/s, intensity x bandwidth)`` in FLOP/s.

    A ceiling that is not known (None) is left out: a CPU's theoretical peak has no memory
    roof, so its attainable rate is the compute roof alone (and a memory-bound case shows how
    little of the arithmetic it uses). NaN when neither is known.
    """
    roofs = []
    if flops_per_s is not None:
        roofs.append(flops_per_s)
    if bytes_per_s is not None and intensity > 0:
        roofs.append(intensity * bytes_per_s)
    return min(roofs) if roofs else math.nan


def ridge_point(flops_per_s: float, bytes_per_s: float) -> float:
    """Intensity (FLOP/byte) where the memory roof meets the compute roof."""
    return flops_per_s / bytes_per_s


# --- the host-device link -------------------------------------------------------------------

#: Bytes per second per lane and direction of each PCIe generation, after line coding:
#: 8b/10b up to 2.0, 128b/130b for 3.0-5.0, FLIT mode (242 of 256 bytes) for 6.0.
PCIE_LANE_BYTES_PER_S: dict[int, float] = {
    1: 2.5e9 * 8 / 10 / 8, 2: 5e9 * 8 / 10 / 8, 3: 8e9 * 128 / 130 / 8, 4: 16e9 * 128 / 130 / 8,
    5: 32e9 * 128 / 130 / 8, 6: 64e9 * 242 / 256 / 8,
}
#: NVLink-C2C (Grace Hopper, Grace Blackwell): 900 GB/s both ways together, 450 GB/s each way.
NVLINK_C2C_BYTES_PER_S = 450e9
_C2C_SOURCE = "https://www.nvidia.com/en-us/data-center/nvlink-c2c/"


def link_peak(link: Mapping[str, Any], device: str = "cuda:0", device_name: str = "",
              machine: str = "") -> Peak | None:
    """The peak of one direction of a GPU's link to the host, from its environment record
    (``env.collect.link_info``: ``{"kind": "pcie", "generation", "width", ...}`` or
    ``{"kind": "nvlink-c2c"}``); None when the record says too little."""
    if not isinstance(link, Mapping):
        return None
    kind = link.get("kind")
    source = str(link.get("source") or "?")
    if kind == "nvlink-c2c":
        bps, title = NVLINK_C2C_BYTES_PER_S, "NVLink-C2C"
        note = f"NVLink-C2C (found by {source}): 450 GB/s each way ({_C2C_SOURCE})"
    elif kind == "pcie":
        gen, width = link.get("generation"), link.get("width")
        if not (isinstance(gen, int) and isinstance(width, int) and gen in PCIE_LANE_BYTES_PER_S
                and 0 < width <= 64):
            return None
        bps = PCIE_LANE_BYTES_PER_S[gen] * width
        title = f"PCIe {gen}.0 x{width}"
        note = f"{title} (from {source}): {bps / 1e9:.1f} GB/s each way"
        cur_gen, cur_width = link.get("current_generation"), link.get("current_width")
        if isinstance(cur_gen, int) and isinstance(cur_width, int) and (cur_gen, cur_width) != (gen, width):
            note += (f"; at PCIe {cur_gen}.0 x{cur_width} when the run began (an idle link trains "
                     "down; one that stays down under load halves the copies)")
    else:
        return None
    return Peak(device, LINK_DTYPE, None, bps, "link", note, device_name=device_name,
                machine=machine, details={"link": dict(link), "title": title})


def link_peaks_from_env(env: Mapping[str, Any] | EnvRecord, machine: str) -> list[Peak]:
    """The link peak of every GPU a run's (or a peaks file's) environment describes."""
    out = []
    for g in (env if isinstance(env, EnvRecord) else EnvRecord.of(env)).gpus:
        peak = link_peak(g.link, f"cuda:{g.index or 0}", g.name or "", machine)
        if peak is not None:
            out.append(peak)
    return out


# --- the CPU's theoretical peak -------------------------------------------------------------


@dataclass(frozen=True)
class CpuSpec:
    """What a CPU core can issue per cycle, and at what clock."""

    model: str
    vector_bits: int  # widest FMA vector
    fma_units: int  # FMA pipes of that width per core
    cores: int
    clock_hz: float
    clock_source: str  # where the clock came from, in words
    flags: frozenset[str] = frozenset()
    assumption: str = ""  # how vector width and FMA units were inferred

    def flops_per_cycle(self, dtype: str) -> float:
        """FLOP per cycle per core at ``dtype`` (an FMA counts as two)."""
        fp32 = self.vector_bits / 32 * 2 * self.fma_units
        if dtype == "float64":
            return fp32 / 2
        if dtype == "float16" and "avx512_fp16" in self.flags:
            return fp32 * 2
        if dtype == "bfloat16" and "amx_bf16" in self.flags:
            return 1024.0  # AMX TMUL: 512 bf16 multiply-adds per cycle per core (Intel)
        if dtype == "bfloat16" and "avx512_bf16" in self.flags:
            return fp32 * 2  # VDPBF16PS: two bf16 products per fp32 lane
        return fp32  # float32, and 16-bit types computed in fp32 after conversion

    def flops_per_s(self, dtype: str, cores: int | None = None) -> float:
        return self.flops_per_cycle(dtype) * (cores or self.cores) * self.clock_hz


def cpu_clock_hz(cpuinfo_mhz: float | None = None,
                 sysfs_max_khz: str = system.CPU0_MAX_FREQ) -> tuple[float | None, str]:
    """The clock to count peaks at, and where it came from.

    The highest clock the kernel will run a core at (cpufreq ``cpuinfo_max_freq``, which
    includes turbo) where the kernel exposes it; else ``/proc/cpuinfo``'s "cpu MHz", which in a
    virtual machine is usually the nominal (TSC) clock, so that cores in turbo can beat the
    resulting "peak". A clock is not measured here: a dependent-add chain needs compiled
    code, and numpy's accumulate loops run at several cycles per element, not at the latency
    of one add.
    """
    khz = system.cpu_max_khz(sysfs_max_khz)
    if khz is not None:
        return khz * 1e3, "cpufreq cpuinfo_max_freq (maximum, turbo included)"
    if cpuinfo_mhz and cpuinfo_mhz > 0:
        return cpuinfo_mhz * 1e6, "/proc/cpuinfo 'cpu MHz' (nominal; turbo may run higher)"
    return None, "unknown"


def cpu_spec(cpu: Mapping[str, Any], flags: Iterable[str] | None = None,
             clock_hz: float | None = None, clock_source: str = "") -> CpuSpec | None:
    """Vector width and FMA units inferred from the CPU's model and flags (``env.collect.cpu_info()``
    or a run's ``env["cpu"]``), with the clock from :func:`cpu_clock_hz` unless given.

    The inference, stated so it can be checked: Intel with AVX-512 -> two 512-bit FMA units
    (Xeon Gold/Platinum and later; some Silver/Bronze parts have one); AMD with AVX-512 ->
    Zen 4, which runs 512-bit FMAs on two 256-bit pipes (one 512-bit unit's worth); AVX2+FMA ->
    two 256-bit FMA units (Haswell and later, Zen 2 and later); ARM NEON -> two 128-bit units.
    """
    model = str(cpu.get("model") or "")
    fl = frozenset(flags if flags is not None else (cpu.get("simd") or ()))
    cores = cpu.get("usable_cores") or cpu.get("logical_cores")
    if not isinstance(cores, int) or cores <= 0:
        return None
    amd = "amd" in model.lower() or "epyc" in model.lower() or "ryzen" in model.lower()
    if "avx512f" in fl and amd:
        bits, units, why = 512, 1, "AMD with AVX-512: Zen 4 (512-bit FMAs on two 256-bit pipes)"
    elif "avx512f" in fl:
        bits, units, why = 512, 2, "AVX-512: two 512-bit FMA units per core (Xeon Gold/Platinum class)"
    elif "avx2" in fl and "fma" in fl:
        bits, units, why = 256, 2, "AVX2 + FMA: two 256-bit FMA units per core"
    elif "avx" in fl:
        bits, units, why = 256, 1, "AVX without FMA: one add and one multiply pipe"
    elif {"neon", "asimd"} & fl:
        bits, units, why = 128, 2, "ARM NEON: two 128-bit FMA pipes per core (assumed)"
    else:
        bits, units, why = 128, 1, "SSE: one 128-bit multiply-add per cycle (assumed)"
    if clock_hz is None:
        mhz = cpu.get("mhz")
        clock_hz, clock_source = cpu_clock_hz(float(mhz) if isinstance(mhz, (int, float)) else None)
    if not clock_hz:
        return None
    return CpuSpec(model, bits, units, cores, float(clock_hz), clock_source, fl, why)


def cpu_theoretical_peaks(spec: CpuSpec, machine: str = "", dtypes: Sequence[str] = DTYPES,
                          threads: Sequence[int] | None = None,
                          bytes_per_s: float | None = None) -> list[Peak]:
    """Theoretical peaks at each dtype, for each thread count (default: one core and all).

    A CPU's memory bandwidth has no figure visible from inside the machine (channels and DIMM
    speeds are not exposed, least of all in a VM): pass ``bytes_per_s`` (e.g. the measured copy
    bandwidth) or leave it None, which leaves memory-bound cases without a datasheet roofline.
    """
    counts = sorted(set(threads or (1, spec.cores)))
    out = []
    for t in counts:
        for dtype in dtypes:
            note = (f"{spec.vector_bits}-bit vectors x {spec.fma_units} FMA units x 2 x {t} "
                    f"core{'s' if t > 1 else ''} x {spec.clock_hz / 1e9:.3g} GHz "
                    f"({spec.flops_per_cycle(dtype):g} FLOP/cycle/core at {dtype}); clock: "
                    f"{spec.clock_source}; {spec.assumption}")
            out.append(Peak("cpu", dtype, spec.flops_per_s(dtype, t), bytes_per_s, "theoretical",
                            note, device_name=spec.model, machine=machine, threads=t,
                            details={"vector_bits": spec.vector_bits, "fma_units": spec.fma_units,
                                     "clock_hz": spec.clock_hz, "clock_source": spec.clock_source,
                                     "flops_per_cycle_per_core": spec.flops_per_cycle(dtype)}))
    return out


def peaks_for_runs(runs: Iterable[Run], extra_files: Iterable[str | Path] = ()) -> list[Peak]:
    """Every peak a report of ``runs`` can use, found without being told:

    1. ``peaks.json`` beside each run file (what ``bench-suite peaks`` writes by default into
       ``results/<machine>/``), and any ``extra_files``: measured peaks, and the theoretical
       CPU peaks recorded with them;
    2. the theoretical CPU peak from each run's own environment (model, SIMD flags, cores,
       clock), for machines that have no peaks file;
    3. GPU datasheet figures are looked up by :func:`add_roofline_columns` itself, by name.
    """
    runs = list(runs)
    out = peaks_beside(runs, extra_files)
    have_theory = {p.machine for p in out if p.source == "theoretical"}
    have_gpus = {(p.machine, p.device) for p in out if p.source == "datasheet"}
    have_links = {(p.machine, p.device) for p in out if p.source == "link"}
    for run in runs:
        env = EnvRecord.of(run.env)  # once a run: reading it leniently is not free
        cpu = run.env.get("cpu") if isinstance(run.env, Mapping) else None
        clock = env.cpu.mhz * 1e6 if env.cpu.mhz is not None and env.cpu.mhz > 0 else None
        if run.machine not in have_theory and isinstance(cpu, Mapping) and clock:
            spec = cpu_spec(cpu, clock_hz=clock, clock_source=_ENV_CLOCK_NOTE)
            if spec is not None:
                measured_bw = _best_bandwidth(out, run.machine)
                out.extend(cpu_theoretical_peaks(spec, run.machine, bytes_per_s=measured_bw))
                have_theory.add(run.machine)
        for device, name, tf32 in _env_gpus(env):
            if (run.machine, device) not in have_gpus:
                out.extend(gpu_datasheet_for_run(name, device, run.machine, tf32))
                have_gpus.add((run.machine, device))
        for link in link_peaks_from_env(env, run.machine):
            if (run.machine, link.device) not in have_links:
                out.append(link)
                have_links.add((run.machine, link.device))
    return out


def gpu_datasheet_for_run(name: str, device: str, machine: str, tf32: bool) -> list[Peak]:
    """Datasheet peaks of a run's GPU. Where the run let float32 matmuls use TF32 tensor cores
    (``torch.backends.cuda.matmul.fp32_precision = "tf32"``, or the legacy ``allow_tf32`` or a
    float32 matmul precision other than "highest": ``env.collect.tf32_matmul_enabled``), its float32
    cases are held to the TF32 figure, not the FP32 one. ``tf32`` cases always are."""
    out = []
    for p in datasheet_peaks(name, device):
        p = replace(p, machine=machine)
        if p.dtype == "float32" and tf32:
            tf = next((q for q in datasheet_peaks(name, device) if q.dtype == "tf32"), None)
            if tf is not None:
                p = replace(p, flops_per_s=tf.flops_per_s,
                            note=p.note + "; float32 matmuls ran on TF32 tensor cores in this run")
        out.append(p)
    return out


def _env_gpus(env: EnvRecord) -> list[tuple[str, str, bool]]:
    torch = env.torch
    tf32 = torch.tf32 is True
    return [(f"cuda:{g.index or 0}", g.name, tf32) for g in torch.gpus if g.name is not None]


_ENV_CLOCK_NOTE = "run environment's /proc/cpuinfo 'cpu MHz' (nominal; turbo may run higher)"


def _best_bandwidth(peaks: Iterable[Peak], machine: str) -> float | None:
    bws = [p.bytes_per_s for p in peaks if p.machine == machine and p.device == "cpu"
           and p.source == "measured" and p.bytes_per_s]
    return max(bws) if bws else None


# --- the roofline columns -------------------------------------------------------------------


@dataclass(frozen=True)
class _Ceiling:
    flops: float | None
    bytes: float | None
    source: str


def _pick(peaks: Sequence[Peak], threads: int | None) -> _Ceiling | None:
    """The best of ``peaks`` (one device and dtype) for a case on ``threads`` cores: an exact
    thread count first; else the figure for the most cores, FLOP/s scaled linearly to
    ``threads`` (bandwidth is not scaled: a few cores can already saturate memory)."""
    if not peaks:
        return None
    exact = [p for p in peaks if p.threads == threads or p.threads is None or threads is None]
    if exact:
        best = max(exact, key=lambda p: p.flops_per_s or 0.0)
        bws = [p.bytes_per_s for p in exact if p.bytes_per_s]
        return _Ceiling(best.flops_per_s, max(bws) if bws else None, _label(best))
    widest = max(p.threads or 0 for p in peaks)
    top = [p for p in peaks if (p.threads or 0) == widest]
    best = max(top, key=lambda p: p.flops_per_s or 0.0)
    scale = threads / widest
    bws = [p.bytes_per_s for p in top if p.bytes_per_s]
    flops = best.flops_per_s * scale if best.flops_per_s else None
    return _Ceiling(flops, max(bws) if bws else None,
                    f"{_label(best)} scaled {threads}/{widest} cores")


def _label(p: Peak) -> str:
    return f"{p.source}:{p.backend}" if p.backend else p.source


def add_roofline_columns(frame: pd.DataFrame, peaks: Iterable[Peak] = (),
                         catalogue: bool = True) -> pd.DataFrame:
    """The frame with :data:`ROOFLINE_COLUMNS` added (a copy; the input is not changed).

    For each row (its machine, device, dtype and thread count):

    * ``peak_gflops``/``peak_gbps``: the best *measured* peak of that device and dtype (over
      the backends that were measured), ``attainable_gflops`` its roofline at the row's
      intensity and ``pct_of_peak`` = 100 x achieved GFLOP/s / attainable GFLOP/s;
    * ``datasheet_*``/``pct_of_datasheet``: the same against the GPU's datasheet figure (looked
      up by ``device_name`` when ``catalogue``) or the CPU's theoretical peak.

    Achieved is the row's ``gflops``, so for a memory-bound row the percentage is its GB/s over
    the bandwidth. Percentages above 100 are real: caches beat DRAM bandwidth, turbo beats
    a nominal clock. NaN where no peak is known.
    """
    import pandas as pd

    from bench_suite.core.cases import LINK_OPS

    df = frame.copy()
    measured: dict[tuple[str, str, str], list[Peak]] = {}
    theory: dict[tuple[str, str, str], list[Peak]] = {}
    links: dict[tuple[str, str], Peak] = {}
    for p in peaks:
        if p.source == "link":
            links.setdefault((p.machine, p.device), p)
            continue
        key = (p.machine, p.device, p.dtype)
        (measured if p.source == "measured" else theory).setdefault(key, []).append(p)
    gpu_cache: dict[str, list[Peak]] = {}

    cols: dict[str, list[Any]] = {c: [] for c in ROOFLINE_COLUMNS}
    for row in df[["machine", "device", "device_name", "dtype", "threads", "intensity",
                   "gflops", "op", "gbps"]].itertuples(index=False):
        # copies across the link are held to the link, not to the device's memory
        link = links.get((row.machine, row.device)) if row.op in LINK_OPS else None
        cols["link_gbps"].append(link.gbps if link else math.nan)
        achieved_gbps = float(row.gbps) if not pd.isna(row.gbps) else math.nan
        cols["pct_of_link"].append(100.0 * achieved_gbps / link.gbps if link else math.nan)
        cols["link_source"].append(str(link.details.get("title", "")) if link else "")
        threads = None if pd.isna(row.threads) else int(row.threads)
        key = (row.machine, row.device, row.dtype)
        sheet_peaks = theory.get(key, [])
        if not sheet_peaks and row.device != "cpu" and catalogue and row.device_name:
            if row.device_name not in gpu_cache:
                gpu_cache[row.device_name] = datasheet_peaks(row.device_name, row.device)
            sheet_peaks = [p for p in gpu_cache[row.device_name] if p.dtype == row.dtype]
        achieved = float(row.gflops) if not pd.isna(row.gflops) else math.nan
        device_roofs = (("peak", _pick(measured.get(key, []), threads)),
                        ("datasheet", _pick(sheet_peaks, threads)))
        if row.op in LINK_OPS:  # the device's memory is not what limits a copy across the link
            device_roofs = (("peak", None), ("datasheet", None))
        for prefix, ceiling in device_roofs:
            flops = ceiling.flops if ceiling else None
            bw = ceiling.bytes if ceiling else None
            att = attainable(float(row.intensity), flops, bw) / 1e9
            cols[f"{prefix}_gflops"].append(flops / 1e9 if flops else math.nan)
            cols[f"{prefix}_gbps"].append(bw / 1e9 if bw else math.nan)
            cols["attainable_gflops" if prefix == "peak" else "attainable_datasheet_gflops"].append(att)
            cols["pct_of_peak" if prefix == "peak" else "pct_of_datasheet"].append(
                100.0 * achieved / att if att > 0 else math.nan)
            source = ceiling.source if ceiling else ""
            if ceiling and (flops is None or bw is None):
                source += " (no memory roof)" if bw is None else " (no compute roof)"
            cols[f"{prefix}_source"].append(source)
    for c in ROOFLINE_COLUMNS:
        df[c] = pd.Series(cols[c], index=df.index,
                          dtype=object if c.endswith("_source") else "float64")
    return df
