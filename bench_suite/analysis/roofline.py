"""Peaks (measured, datasheet and theoretical) and the attainable performance of each case.

A *peak* is what a device can do at one dtype: FLOP/s and memory bytes/s. Three sources:

* ``measured``: ``bench-suite peaks`` (``bench_suite.peaks``): the best matmul of a small sweep
  of large shapes and a large device copy, timed like every other case. What the report's
  ``pct_of_peak`` is against: what this machine, with these libraries, was seen to do.
* ``datasheet``: the built-in :data:`CATALOGUE` of NVIDIA GPUs (dense, no sparsity), looked up
  by the name torch reports (:func:`lookup_gpu`). What ``pct_of_datasheet`` is against on GPUs.
* ``theoretical``: a CPU's vector width x FMA units x 2 x cores x clock
  (:func:`cpu_theoretical_peaks`). What ``pct_of_datasheet`` is against on CPUs.
* ``link``: the host-device link of a GPU, per direction: PCIe generation x lanes (from NVML
  or sysfs, recorded in the run's environment) or NVLink-C2C (:func:`link_peak`). What the
  copies (``h2d``, ``d2h``) are held to: ``pct_of_link``.

The roofline of a case with arithmetic intensity I (FLOPs per byte, ``ops.arithmetic_intensity``)
is ``attainable = min(peak FLOP/s, I x bandwidth)``; :func:`add_roofline_columns` adds it, and
the fraction achieved, to the tidy frame of ``results.to_frame``.

Peaks files (``bench-suite peaks``) format history (bump ``PEAKS_VERSION`` on a change):

* version 1: ``{"schema": "bench-suite/peaks", "version": 1, "machine", "created_at", "env",
  "config", "peaks": [Peak.to_dict(), ...]}``.

Layering: this module imports only cases, ops, results, env, stats and errors.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_suite.core.cases import DTYPES
from bench_suite.core.errors import ResultsFileError
from bench_suite.env.collect import tf32_matmul_enabled
from bench_suite.store.results import atomic_write_text, parse_json, read_text

if TYPE_CHECKING:
    import pandas as pd

    from bench_suite.store.results import Run

PEAKS_SCHEMA = "bench-suite/peaks"
PEAKS_VERSION = 1
#: File name ``bench-suite peaks`` writes by default, and reports look for beside run files.
PEAKS_FILENAME = "peaks.json"
SOURCES = ("measured", "datasheet", "theoretical", "link")
#: The dtype of a link peak: it holds for every dtype.
LINK_DTYPE = "*"
#: Peak dtypes: the suite's dtypes, tf32 (float32 matmul on tensor cores) among them.
PEAK_DTYPES: tuple[str, ...] = tuple(dict.fromkeys((*DTYPES, "tf32")))

#: Columns :func:`add_roofline_columns` adds. Rates in GFLOP/s and GB/s, fractions in percent.
ROOFLINE_COLUMNS: tuple[str, ...] = (
    "peak_gflops", "peak_gbps", "attainable_gflops", "pct_of_peak", "peak_source",
    "datasheet_gflops", "datasheet_gbps", "attainable_datasheet_gflops", "pct_of_datasheet",
    "datasheet_source", "link_gbps", "pct_of_link", "link_source",
)


# --- the record -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Peak:
    """What one device can do at one dtype. ``None`` where a figure is not known."""

    device: str  # "cpu", "cuda:0", ...
    dtype: str
    flops_per_s: float | None
    bytes_per_s: float | None
    source: str  # measured | datasheet | theoretical
    note: str = ""  # how it was found, or where it is written (a URL)
    device_name: str = ""
    machine: str = ""  # "" for catalogue figures, which hold for any machine
    backend: str = ""  # measured only: which library reached it
    threads: int | None = None  # CPU: cores the figure is for (None: not applicable)
    details: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"peak source must be one of {SOURCES}, not {self.source!r}")
        for name in ("flops_per_s", "bytes_per_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number or None, not {value!r}")

    @property
    def gflops(self) -> float:
        return self.flops_per_s / 1e9 if self.flops_per_s else math.nan

    @property
    def gbps(self) -> float:
        return self.bytes_per_s / 1e9 if self.bytes_per_s else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device, "device_name": self.device_name, "machine": self.machine,
            "backend": self.backend, "dtype": self.dtype, "threads": self.threads,
            "flops_per_s": self.flops_per_s, "bytes_per_s": self.bytes_per_s,
            "source": self.source, "note": self.note, "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Peak:
        if not isinstance(d, dict):
            raise ResultsFileError(f"{where}: a peak must be an object")

        def text(key: str, default: str = "") -> str:
            value = d.get(key, default)
            if not isinstance(value, str):
                raise ResultsFileError(f"{where}.{key}: expected a string")
            return value

        def rate(key: str) -> float | None:
            value = d.get(key)
            if value is None:
                return None
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                    math.isfinite(value) and value > 0):
                raise ResultsFileError(f"{where}.{key}: expected a positive number or null")
            return float(value)

        threads = d.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                    or threads <= 0):
            raise ResultsFileError(f"{where}.threads: expected a positive count or null")
        details = d.get("details", {})
        if not isinstance(details, dict):
            raise ResultsFileError(f"{where}.details: expected an object")
        source = text("source")
        if source not in SOURCES:
            raise ResultsFileError(f"{where}.source: {source!r} is not one of {', '.join(SOURCES)}")
        return cls(device=text("device"), dtype=text("dtype"), flops_per_s=rate("flops_per_s"),
                   bytes_per_s=rate("bytes_per_s"), source=source, note=text("note"),
                   device_name=text("device_name"), machine=text("machine"),
                   backend=text("backend"), threads=threads, details=details)


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


# --- the GPU catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU model: dense (no structured sparsity), boost clock.

    ``flops`` per suite dtype: float64 is the FP64 *tensor core* figure where the card has one
    (cuBLAS DGEMM uses them), float32 the plain FP32 (CUDA core) figure, tf32/float16/bfloat16
    the tensor-core figures with FP32 accumulation (what cuBLAS uses for torch matmuls).
    """

    key: str
    title: str
    names: tuple[str, ...]  # names torch.cuda.get_device_name reports, matched exactly
    flops: Mapping[str, float]  # dtype -> FLOP/s
    bytes_per_s: float
    source: str  # URL of the datasheet or whitepaper
    require: tuple[str, ...] = ()  # fuzzy match: all of these tokens ...
    forbid: tuple[str, ...] = ()  # ... and none of these
    note: str = ""


_T = 1e12
_H100_DS = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_A100_DS = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
            "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_V100_DS = ("https://images.nvidia.com/content/technologies/volta/pdf/"
            "volta-v100-datasheet-update-us-1165301-r5.pdf")
_A100_FLOPS = {"float64": 19.5 * _T, "float32": 19.5 * _T, "tf32": 156 * _T,
               "float16": 312 * _T, "bfloat16": 312 * _T}

#: Datasheet peaks. Sparse figures in the datasheets are halved to the dense ones here.
CATALOGUE: tuple[GpuSpec, ...] = (
    GpuSpec("h100-sxm", "H100 SXM5 80GB", ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"),
            {"float64": 67 * _T, "float32": 67 * _T, "tf32": 494.5 * _T, "float16": 989.5 * _T,
             "bfloat16": 989.5 * _T}, 3.35e12, _H100_DS,
            require=("h100",), forbid=("pcie", "nvl", "h100l")),
    GpuSpec("h100-pcie", "H100 PCIe 80GB", ("NVIDIA H100 PCIe",),
            {"float64": 51 * _T, "float32": 51 * _T, "tf32": 378 * _T, "float16": 756.5 * _T,
             "bfloat16": 756.5 * _T}, 2.0e12, _H100_DS, require=("h100", "pcie")),
    GpuSpec("h100-nvl", "H100 NVL 94GB", ("NVIDIA H100 NVL",),
            {"float64": 60 * _T, "float32": 60 * _T, "tf32": 417.5 * _T, "float16": 835.5 * _T,
             "bfloat16": 835.5 * _T}, 3.9e12, _H100_DS, require=("h100", "nvl")),
    GpuSpec("h200-sxm", "H200 SXM 141GB", ("NVIDIA H200",),
            {"float64": 67 * _T, "float32": 67 * _T, "tf32": 494.5 * _T, "float16": 989.5 * _T,
             "bfloat16": 989.5 * _T}, 4.8e12, "https://www.nvidia.com/en-us/data-center/h200/",
            require=("h200",), forbid=("nvl",)),
    GpuSpec("h200-nvl", "H200 NVL 141GB", ("NVIDIA H200 NVL",),
            {"float64": 60 * _T, "float32": 60 * _T, "tf32": 417.5 * _T, "float16": 835.5 * _T,
             "bfloat16": 835.5 * _T}, 4.8e12, "https://www.nvidia.com/en-us/data-center/h200/",
            require=("h200", "nvl")),
    GpuSpec("a100-sxm-80gb", "A100 SXM4 80GB", ("NVIDIA A100-SXM4-80GB",), _A100_FLOPS, 2.039e12,
            _A100_DS, require=("a100", "80gb"), forbid=("pcie",)),
    GpuSpec("a100-sxm-40gb", "A100 SXM4 40GB", ("NVIDIA A100-SXM4-40GB",), _A100_FLOPS, 1.555e12,
            _A100_DS, require=("a100",), forbid=("pcie", "80gb")),
    GpuSpec("a100-pcie-80gb", "A100 PCIe 80GB", ("NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"),
            _A100_FLOPS, 1.935e12, _A100_DS, require=("a100", "pcie", "80gb")),
    GpuSpec("a100-pcie-40gb", "A100 PCIe 40GB", ("NVIDIA A100-PCIE-40GB",), _A100_FLOPS, 1.555e12,
            _A100_DS, require=("a100", "pcie"), forbid=("80gb",)),
    GpuSpec("l4", "L4 24GB", ("NVIDIA L4",),
            {"float64": 0.473 * _T, "float32": 30.3 * _T, "tf32": 60 * _T, "float16": 121 * _T,
             "bfloat16": 121 * _T}, 0.3e12, "https://www.nvidia.com/en-us/data-center/l4/",
            require=("l4",), note="FP64 is not on the datasheet: 1/64 of FP32 (Ada)"),
    GpuSpec("rtx-4090", "GeForce RTX 4090", ("NVIDIA GeForce RTX 4090",),
            {"float64": 1.29 * _T, "float32": 82.6 * _T, "tf32": 82.6 * _T, "float16": 165.2 * _T,
             "bfloat16": 165.2 * _T}, 1.008e12,
            "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
            require=("4090",), forbid=("laptop", "mobile", "d"),
            note="Ada whitepaper, appendix A: FP16/BF16 tensor with FP32 accumulate (GeForce: "
                 "half the FP16-accumulate rate); FP64 1/64 of FP32"),
    GpuSpec("v100-sxm2", "V100 SXM2", ("Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB"),
            {"float64": 7.8 * _T, "float32": 15.7 * _T, "float16": 125 * _T}, 0.9e12, _V100_DS,
            require=("v100", "sxm2"), note="no bfloat16 or tf32 on Volta"),
    GpuSpec("v100s-pcie", "V100S PCIe 32GB", ("Tesla V100S-PCIE-32GB",),
            {"float64": 8.2 * _T, "float32": 16.4 * _T, "float16": 130 * _T}, 1.134e12, _V100_DS,
            require=("v100s",), note="no bfloat16 or tf32 on Volta"),
    GpuSpec("v100-pcie", "V100 PCIe", ("Tesla V100-PCIE-16GB", "Tesla V100-PCIE-32GB"),
            {"float64": 7 * _T, "float32": 14 * _T, "float16": 112 * _T}, 0.9e12, _V100_DS,
            require=("v100", "pcie"), forbid=("v100s",), note="no bfloat16 or tf32 on Volta"),
)


def _tokens(name: str) -> set[str]:
    """``"NVIDIA A100-SXM4-80GB"`` -> {"nvidia", "a100", "sxm4", "80gb"}: whole words only, so
    that "sxm2" does not count as "sxm" nor "l40s" as "l4"."""
    return set(re.findall(r"[a-z0-9]+", name.lower()))


@dataclass(frozen=True)
class GpuMatch:
    spec: GpuSpec
    how: str  # "exact" | "fuzzy"


def lookup_gpu(name: str) -> GpuMatch | None:
    """The catalogue entry for the GPU name torch reports: an exact (case-insensitive) match
    of a known name first, else the first entry whose required tokens are all in the name and
    forbidden ones are not (``"H100 SXM5 94GB"`` -> H100 SXM). None for an unknown GPU."""
    wanted = " ".join(name.lower().split())
    if not wanted:
        return None
    for spec in CATALOGUE:
        if any(wanted == " ".join(n.lower().split()) for n in spec.names):
            return GpuMatch(spec, "exact")
    tokens = _tokens(name)
    for spec in CATALOGUE:
        # "sxm2" must not satisfy "sxm"; tokens compare whole, except memory sizes
        if all(t in tokens for t in spec.require) and not any(t in tokens for t in spec.forbid):
            return GpuMatch(spec, "fuzzy")
    return None


def datasheet_peaks(name: str, device: str = "cuda:0") -> list[Peak]:
    """Datasheet peaks of a GPU by its reported name, one per dtype it lists (empty: unknown)."""
    match = lookup_gpu(name)
    if match is None:
        return []
    spec = match.spec
    note = f"{spec.title} datasheet ({match.how} match of {name!r}): {spec.source}"
    if spec.note:
        note += f"; {spec.note}"
    return [Peak(device, dtype, flops, spec.bytes_per_s, "datasheet", note, device_name=name,
                 details={"catalogue_key": spec.key, "match": match.how})
            for dtype, flops in spec.flops.items()]


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
    (``env.link_info``: ``{"kind": "pcie", "generation", "width", ...}`` or
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


def link_peaks_from_env(env: Mapping[str, Any], machine: str) -> list[Peak]:
    """The link peak of every GPU a run's (or a peaks file's) environment describes."""
    torch = env.get("torch") if isinstance(env, Mapping) else None
    out = []
    for g in (torch.get("gpus") or ()) if isinstance(torch, Mapping) else ():
        if not isinstance(g, Mapping):
            continue
        index = g.get("index", 0)
        device = f"cuda:{index if isinstance(index, int) else 0}"
        name = g.get("name") if isinstance(g.get("name"), str) else ""
        peak = link_peak(g.get("link") or {}, device, name, machine)
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


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_clock_hz(cpuinfo_mhz: float | None = None,
                 sysfs_max_khz: str = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
                 ) -> tuple[float | None, str]:
    """The clock to count peaks at, and where it came from.

    The highest clock the kernel will run a core at (cpufreq ``cpuinfo_max_freq``, which
    includes turbo) where the kernel exposes it; else ``/proc/cpuinfo``'s "cpu MHz", which in a
    virtual machine is usually the nominal (TSC) clock, so that cores in turbo can beat the
    resulting "peak". A clock is not measured here: a dependent-add chain needs compiled
    code, and numpy's accumulate loops run at several cycles per element, not at the latency
    of one add.
    """
    text = _read(sysfs_max_khz).strip()
    if text.isdigit() and int(text) > 0:
        return int(text) * 1e3, "cpufreq cpuinfo_max_freq (maximum, turbo included)"
    if cpuinfo_mhz and cpuinfo_mhz > 0:
        return cpuinfo_mhz * 1e6, "/proc/cpuinfo 'cpu MHz' (nominal; turbo may run higher)"
    return None, "unknown"


def cpu_spec(cpu: Mapping[str, Any], flags: Iterable[str] | None = None,
             clock_hz: float | None = None, clock_source: str = "") -> CpuSpec | None:
    """Vector width and FMA units inferred from the CPU's model and flags (``env.cpu_info()``
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


# --- peaks files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeakSet:
    """The content of one peaks file: a machine, its environment and its peaks."""

    machine: str
    created_at: str
    env: Mapping[str, Any]
    config: Mapping[str, Any]
    peaks: tuple[Peak, ...]
    path: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": PEAKS_SCHEMA, "version": PEAKS_VERSION, "machine": self.machine,
                "created_at": self.created_at, "env": dict(self.env),
                "config": dict(self.config), "peaks": [p.to_dict() for p in self.peaks]}


def save_peaks(peaks: PeakSet, path: str | Path) -> Path:
    from bench_suite.core.errors import OutputError

    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(peaks.to_dict(), allow_nan=False, indent=1) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def is_peaks_file(path: Path) -> bool:
    """By name: ``peaks.json`` or ``*.peaks.json`` (so run-file loaders can skip them)."""
    return path.name == PEAKS_FILENAME or path.name.endswith("." + PEAKS_FILENAME)


def peaks_from_dict(data: Any, where: str, path: str = "") -> PeakSet:
    if not isinstance(data, dict) or data.get("schema") != PEAKS_SCHEMA:
        raise ResultsFileError(f"{where}: not a bench-suite peaks file (schema {PEAKS_SCHEMA!r})")
    if data.get("version") != PEAKS_VERSION:
        raise ResultsFileError(f"{where}: peaks file version {data.get('version')!r}; this "
                               f"bench-suite reads version {PEAKS_VERSION}")
    raw = data.get("peaks")
    if not isinstance(raw, list):
        raise ResultsFileError(f"{where}: 'peaks' must be a list")
    machine = data.get("machine")
    if not isinstance(machine, str):
        raise ResultsFileError(f"{where}.machine: expected a string")
    env, config = data.get("env", {}), data.get("config", {})
    if not isinstance(env, dict) or not isinstance(config, dict):
        raise ResultsFileError(f"{where}: 'env' and 'config' must be objects")
    peaks = tuple(Peak.from_dict(p, f"{where}: peaks[{i}]") for i, p in enumerate(raw))
    return PeakSet(machine, str(data.get("created_at", "")), env, config, peaks, path)


def load_peaks(path: str | Path) -> PeakSet:
    path = Path(path)
    return peaks_from_dict(parse_json(read_text(path), str(path)), str(path), str(path))


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
    files: dict[Path, None] = {}
    for run in runs:
        if run.path:
            candidate = Path(run.path).parent / PEAKS_FILENAME
            if candidate.is_file():
                files[candidate.resolve()] = None
    for f in extra_files:
        files[Path(f).resolve()] = None
    out: list[Peak] = []
    for f in files:
        ps = load_peaks(f)
        out.extend(p if p.machine else replace(p, machine=ps.machine) for p in ps.peaks)
    have_theory = {p.machine for p in out if p.source == "theoretical"}
    have_gpus = {(p.machine, p.device) for p in out if p.source == "datasheet"}
    have_links = {(p.machine, p.device) for p in out if p.source == "link"}
    for run in runs:
        env = run.env if isinstance(run.env, Mapping) else {}
        cpu = env.get("cpu")
        clock = _env_clock(cpu) if isinstance(cpu, Mapping) else None
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
    float32 matmul precision other than "highest": ``env.tf32_matmul_enabled``), its float32
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


def _env_gpus(env: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    torch = env.get("torch")
    if not isinstance(torch, Mapping):
        return []
    tf32 = tf32_matmul_enabled(torch) is True
    out = []
    for g in torch.get("gpus") or ():
        if isinstance(g, Mapping) and isinstance(g.get("name"), str):
            index = g.get("index", 0)
            out.append((f"cuda:{index if isinstance(index, int) else 0}", g["name"], tf32))
    return out


_ENV_CLOCK_NOTE = "run environment's /proc/cpuinfo 'cpu MHz' (nominal; turbo may run higher)"


def _env_clock(cpu: Mapping[str, Any]) -> float | None:
    mhz = cpu.get("mhz")
    return float(mhz) * 1e6 if isinstance(mhz, (int, float)) and mhz > 0 else None


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
