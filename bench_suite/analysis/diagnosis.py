"""The doctor's judgement: is a device normal, and if not, why? (``bench-suite doctor``).

``measure.doctor`` probes each device (the peaks of ``bench-suite peaks``, timed and verified
like every case) and reads its state while the probe runs (``env.device_state``: clocks, power
limit, throttle reasons, ECC, PCIe link, other processes on a GPU; governor, load from other
processes, BLAS kernel on a CPU). This module sets each figure against a **reference table of
what healthy devices of the same model reach** (``data/reference_devices.json``, a source for
every entry; a CPU's reference is derived from its clock and vector width, as its theoretical
peak), and turns figures and state into findings and a verdict.

Verdict rules, per device:

* a figure is *low* when it is under ``normal_at_least`` of its reference (0.9 for GPU
  references, which are measured healthy devices; 0.5 for a CPU's theoretical peak, which an
  optimized BLAS reaches to 60-95%);
* some states are *faults* on their own, whatever the figures: throttling for heat or by a
  power brake or hardware slowdown while the probe ran, a power limit lowered under its
  default, a PCIe link narrower or slower than its maximum under load, uncorrectable ECC
  errors, a pending or failed row remapping;
* **below normal**: a low figure or a fault. **unknown model**: no reference for the model
  and no fault (the table still prints; ``bench-suite peaks`` on a healthy device records a
  reference, ``--reference`` uses it). **normal**: otherwise;
* the *likeliest cause* is the first finding, in the order above (other processes first when
  a figure is low), that can explain the low figure; else the first fault; else "not
  explained by the device state".

The CLI prints the report (a table, or ``--json``) and exits 0 when every device is normal or
of unknown model, 1 when one is below normal, 2 on bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from bench_suite.analysis.catalogue import lookup_gpu
from bench_suite.core.errors import ResultsFileError, UsageError
from bench_suite.store.peaks import PEAKS_SCHEMA, Peak, PeakSet, peaks_from_dict
from bench_suite.store.results import parse_json, read_text

REFERENCE_SCHEMA = "bench-suite/reference-devices"
REFERENCE_FILE = "reference_devices.json"
SCHEMA = "bench-suite/doctor"
VERSION = 1
VERDICTS = ("normal", "below normal", "unknown model")

#: Thresholds of the state findings.
POWER_LIMIT_LOWERED = 0.98  # enforced limit under this fraction of the default
SM_CLOCK_LOW = 0.90  # median SM clock under load under this fraction of the maximum
MEM_CLOCK_LOW = 0.95
OTHER_LOAD = 0.10  # other processes' CPU use above this fraction of the cores
THERMAL = ("sw_thermal_slowdown", "hw_thermal_slowdown")
#: OpenBLAS kernels that use no AVX-512 (on an AVX-512 CPU: half its vector width or less)
#: and no AVX2/FMA (on an AVX2 CPU), lower case as threadpoolctl reports them.
_PRE_AVX512 = {"haswell", "zen", "sandybridge", "nehalem", "prescott", "core2", "penryn",
               "dunnington", "atom", "bulldozer", "piledriver", "steamroller", "excavator",
               "barcelona", "opteron", "katmai", "coppermine", "northwood", "banias"}
_PRE_AVX2 = _PRE_AVX512 - {"haswell", "zen", "excavator"}


# --- the reference table --------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    value: float | None  # per second; None: derived per device
    unit: str  # FLOP/s | B/s
    source: str
    note: str = ""
    derived: str = ""  # "theoretical": from the CPU's clock and vector width


@dataclass(frozen=True)
class ModelReference:
    title: str
    figures: Mapping[str, Reference]
    normal_at_least: float


@dataclass(frozen=True)
class ReferenceTable:
    gpus: Mapping[str, ModelReference]  # GPU catalogue key -> figures
    cpu: ModelReference  # derived figures, for any CPU
    by_name: Mapping[str, ModelReference] = field(default_factory=dict)  # exact device names
    source: str = ""
    normal_at_least: float = 0.9

    def for_gpu(self, name: str) -> ModelReference | None:
        if name in self.by_name:
            return self.by_name[name]
        match = lookup_gpu(name)
        return self.gpus.get(match.spec.key) if match else None


def _ref(d: Any, where: str) -> Reference:
    if not isinstance(d, dict):
        raise ResultsFileError(f"{where}: expected an object")
    value, unit, source = d.get("value"), d.get("unit"), d.get("source")
    derived = d.get("derived", "")
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value) and value > 0):
        raise ResultsFileError(f"{where}.value: expected a positive number")
    if value is None and derived != "theoretical":
        raise ResultsFileError(f"{where}: needs a value (or derived: theoretical)")
    if unit not in ("FLOP/s", "B/s"):
        raise ResultsFileError(f"{where}.unit: expected FLOP/s or B/s")
    if not isinstance(source, str) or not source.strip():
        raise ResultsFileError(f"{where}.source: every reference needs its source")
    return Reference(float(value) if value is not None else None, unit, source,
                     str(d.get("note", "")), str(derived))


def _fraction(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ResultsFileError(f"{where}: expected a fraction in (0, 1]")
    return float(value)


def reference_from_dict(data: Any, where: str) -> ReferenceTable:
    if not isinstance(data, dict) or data.get("schema") != REFERENCE_SCHEMA:
        raise ResultsFileError(f"{where}: not a reference table (schema {REFERENCE_SCHEMA!r})")
    if data.get("version") != 1:
        raise ResultsFileError(f"{where}: reference table version {data.get('version')!r}; "
                               "this bench-suite reads version 1")
    normal = _fraction(data.get("normal_at_least"), f"{where}.normal_at_least")
    gpus_raw, cpu_raw = data.get("gpus", {}), data.get("cpu", {})
    if not isinstance(gpus_raw, dict) or not isinstance(cpu_raw, dict):
        raise ResultsFileError(f"{where}: 'gpus' and 'cpu' must be objects")
    gpus = {}
    for key, entry in gpus_raw.items():
        w = f"{where}.gpus.{key}"
        if not isinstance(entry, dict) or not isinstance(entry.get("figures"), dict):
            raise ResultsFileError(f"{w}: expected an object with 'figures'")
        gpus[key] = ModelReference(str(entry.get("title", key)), {
            name: _ref(r, f"{w}.figures.{name}") for name, r in entry["figures"].items()},
            normal)
    cpu_figs = cpu_raw.get("figures", {})
    if not isinstance(cpu_figs, dict):
        raise ResultsFileError(f"{where}.cpu.figures: expected an object")
    cpu = ModelReference("theoretical peak from clock and vector width",
                         {n: _ref(r, f"{where}.cpu.figures.{n}") for n, r in cpu_figs.items()},
                         _fraction(cpu_raw.get("normal_at_least", 0.5), f"{where}.cpu.normal_at_least"))
    return ReferenceTable(gpus, cpu, {}, where, normal)


def packaged_reference() -> ReferenceTable:
    text = resources.files("bench_suite").joinpath("data", REFERENCE_FILE).read_text(encoding="utf-8")
    return reference_from_dict(json.loads(text), f"bench_suite/data/{REFERENCE_FILE}")


def reference_from_peaks(ps: PeakSet, normal_at_least: float) -> dict[str, ModelReference]:
    """A healthy device's own ``bench-suite peaks`` as the reference for devices of its exact
    name: the best measured matmul rate per dtype (every core, on a CPU) and copy bandwidth."""
    out: dict[str, dict[str, Reference]] = {}
    for p in ps.peaks:
        if p.source != "measured" or not p.device_name:
            continue
        widest = max((q.threads or 0) for q in ps.peaks
                     if q.source == "measured" and q.device_name == p.device_name)
        if (p.threads or 0) != widest:
            continue  # a CPU's one-thread figure is no reference for all its cores
        figs = out.setdefault(p.device_name, {})
        src = f"{ps.path or 'peaks file'} (bench-suite peaks on {ps.machine}, {ps.created_at})"
        if p.flops_per_s:
            name = f"matmul_{p.dtype}"
            old = figs.get(name)
            if old is None or (old.value or 0) < p.flops_per_s:
                figs[name] = Reference(p.flops_per_s, "FLOP/s", src, p.note)
        if p.bytes_per_s and (figs.get("copy") is None or (figs["copy"].value or 0) < p.bytes_per_s):
            figs["copy"] = Reference(p.bytes_per_s, "B/s", src, "copy of the peaks file")
    return {name: ModelReference(f"{name} as measured in {ps.path or 'the peaks file'}", figs,
                                 normal_at_least) for name, figs in out.items()}


def load_reference(path: str | Path | None = None) -> ReferenceTable:
    """The packaged table; with ``path``, a table of your own (same schema) instead, or a
    ``bench-suite peaks`` file whose measured figures become the reference for its devices."""
    table = packaged_reference()
    if path is None:
        return table
    where = str(path)
    data = parse_json(read_text(Path(path)), where)
    if isinstance(data, dict) and data.get("schema") == PEAKS_SCHEMA:
        ps = peaks_from_dict(data, where, where)
        by_name = reference_from_peaks(ps, table.normal_at_least)
        if not by_name:
            raise UsageError(f"{where}: no measured peaks to use as a reference")
        return replace(table, by_name=by_name, source=f"{table.source} + {where}")
    if isinstance(data, dict) and data.get("schema") == REFERENCE_SCHEMA:
        return reference_from_dict(data, where)
    raise ResultsFileError(f"{where}: neither a reference table ({REFERENCE_SCHEMA}) nor a peaks "
                           f"file ({PEAKS_SCHEMA})")


# --- the records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureCheck:
    """One measured figure of a device against its reference."""

    name: str  # matmul_bfloat16, copy
    label: str  # "matmul bfloat16", "matmul float32, 1 core"
    unit: str  # FLOP/s | B/s
    measured: float | None  # None: could not be measured (``note`` says why)
    reference: float | None
    source: str = ""
    normal_at_least: float = 0.9
    note: str = ""

    @property
    def kind(self) -> str:
        return self.name.split("_", 1)[0]  # matmul | copy

    @property
    def pct(self) -> float:
        if self.measured is None or not self.reference:
            return math.nan
        return 100.0 * self.measured / self.reference

    @property
    def low(self) -> bool:
        if self.reference is None:
            return False
        return self.measured is None or self.measured < self.normal_at_least * self.reference

    def to_dict(self) -> dict[str, Any]:
        pct = self.pct
        return {"name": self.name, "label": self.label, "unit": self.unit, "measured": self.measured,
                "reference": self.reference, "pct_of_reference": pct if math.isfinite(pct) else None,
                "normal_at_least": self.normal_at_least, "low": self.low, "source": self.source,
                "note": self.note}


@dataclass(frozen=True)
class Finding:
    """Something in the device's state: a ``fault`` makes the device below normal on its own;
    ``explains``: the kinds of figure (matmul, copy) it can hold down."""

    text: str
    fault: bool = False
    explains: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "fault": self.fault, "explains": sorted(self.explains)}


@dataclass(frozen=True)
class DeviceCheck:
    device: str  # cpu, cuda:0
    backend: str
    model: str  # the device's name (torch's GPU name, the CPU model)
    reference_title: str  # "" for an unknown model
    figures: tuple[FigureCheck, ...]
    findings: tuple[Finding, ...]
    verdict: str
    cause: str = ""
    advice: str = ""
    state: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "backend": self.backend, "model": self.model,
                "reference": self.reference_title or None, "verdict": self.verdict,
                "cause": self.cause, "advice": self.advice,
                "figures": [f.to_dict() for f in self.figures],
                "findings": [f.to_dict() for f in self.findings],
                "state": _json_safe(self.state), "seconds": self.seconds}


@dataclass(frozen=True)
class DoctorReport:
    machine: str
    created_at: str
    devices: tuple[DeviceCheck, ...]
    reference_source: str = ""

    @property
    def exit_status(self) -> int:
        return 1 if any(d.verdict == "below normal" for d in self.devices) else 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": VERSION, "machine": self.machine,
                "created_at": self.created_at, "reference": self.reference_source,
                "exit_status": self.exit_status, "devices": [d.to_dict() for d in self.devices]}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --- findings -------------------------------------------------------------------------------

_BOTH = frozenset({"matmul", "copy"})


def gpu_findings(state: Mapping[str, Any]) -> list[Finding]:
    """What a GPU's NVML state says, most likely cause of a shortfall first."""
    out: list[Finding] = []
    if not state.get("available"):
        return out
    load = state.get("load") or {}
    reasons = load.get("reasons") or {}
    others = [p for p in state.get("processes") or () if not p.get("own")]
    if others:
        pids = ", ".join(str(p["pid"]) for p in others[:5])
        mem = sum(p.get("used_memory_bytes") or 0 for p in others)
        out.append(Finding(f"{len(others)} other process{'es' * (len(others) > 1)} on the GPU "
                           f"(pid {pids}{f', {mem / 2**30:.1f} GiB' if mem else ''})",
                           explains=_BOTH))
    if any(reasons.get(r) for r in THERMAL):
        temp = load.get("max_temp_c")
        out.append(Finding("throttled: thermal" + (f" (up to {temp:.0f} °C)" if temp else ""),
                           fault=True, explains=_BOTH))
    if reasons.get("hw_power_brake_slowdown"):
        out.append(Finding("throttled: power brake (the system's power supply slowed the GPU)",
                           fault=True, explains=_BOTH))
    elif reasons.get("hw_slowdown") and not any(reasons.get(r) for r in THERMAL):
        out.append(Finding("throttled: hardware slowdown (overheating or a power-supply signal)",
                           fault=True, explains=_BOTH))
    limit, default = state.get("power_limit_w"), state.get("default_power_limit_w")
    if limit and default and limit < POWER_LIMIT_LOWERED * default:
        out.append(Finding(f"power limit lowered to {limit:.0f} W (default {default:.0f} W)",
                           fault=True, explains=frozenset({"matmul"})))
    sm, sm_max = load.get("sm_clock_mhz"), state.get("max_sm_clock_mhz")
    capped = reasons.get("sw_power_cap") or any(reasons.get(r) for r in THERMAL)
    if sm and sm_max and sm < SM_CLOCK_LOW * sm_max and not capped:
        held = " (application clocks set)" if reasons.get("applications_clocks_setting") else ""
        out.append(Finding(f"SM clock at {sm:.0f} of {sm_max:.0f} MHz under load{held}",
                           fault=bool(held), explains=frozenset({"matmul"})))
    mem, mem_max = load.get("mem_clock_mhz"), state.get("max_mem_clock_mhz")
    if mem and mem_max and mem < MEM_CLOCK_LOW * mem_max:
        out.append(Finding(f"memory clock at {mem:.0f} of {mem_max:.0f} MHz under load",
                           explains=frozenset({"copy"})))
    width, width_max = load.get("pcie_width"), state.get("pcie_max_width")
    if width and width_max and width < width_max:
        out.append(Finding(f"PCIe link at x{width:.0f} of x{width_max:.0f}", fault=True,
                           explains=frozenset({"h2d", "d2h"})))
    gen, gen_max = load.get("pcie_gen"), state.get("pcie_max_gen")
    if gen and gen_max and gen < gen_max:
        out.append(Finding(f"PCIe link at Gen{gen:.0f} of Gen{gen_max:.0f} under load", fault=True,
                           explains=frozenset({"h2d", "d2h"})))
    unc = state.get("ecc_uncorrected_volatile")
    if unc:
        out.append(Finding(f"{unc:.0f} uncorrectable ECC error{'s' * (unc != 1)} since the driver "
                           "loaded", fault=True))
    remap = state.get("remapped_rows") or {}
    if remap.get("failure"):
        out.append(Finding("row remapping failed: the GPU has no spare rows left", fault=True))
    elif remap.get("pending"):
        out.append(Finding("row remapping pending: the GPU needs a reset", fault=True))
    if reasons.get("sw_power_cap"):
        power = load.get("max_power_w")
        out.append(Finding("at its power cap under load" + (f" ({power:.0f} W)" if power else "")
                           + ": expected for dense matmuls at full power"))
    corrected = state.get("ecc_corrected_volatile")
    if corrected:
        out.append(Finding(f"{corrected:.0f} corrected ECC error{'s' * (corrected != 1)} since "
                           "the driver loaded"))
    return out


def cpu_findings(state: Mapping[str, Any]) -> list[Finding]:
    """What the CPU's state says, most likely cause of a shortfall first."""
    out: list[Finding] = []
    load = state.get("load") or {}
    cores = load.get("cores") or state.get("cpus") or 0
    other, steal = load.get("other_cores"), load.get("steal_cores")
    if other is not None and cores and other >= max(0.05, OTHER_LOAD * cores):
        out.append(Finding(f"other processes used {other:.1f} of {cores} cores during the probe",
                           explains=_BOTH))
    if steal is not None and cores and steal >= max(0.05, OTHER_LOAD * cores):
        out.append(Finding(f"the hypervisor took {steal:.1f} of {cores} cores (steal time)",
                           explains=_BOTH))
    gov, driver = state.get("governor"), state.get("driver") or ""
    pstate = "pstate" in driver  # intel_pstate/amd-pstate "powersave" still boosts on demand
    if gov in ("powersave", "conservative", "ondemand", "userspace") and not (pstate and gov == "powersave"):
        out.append(Finding(f"CPU frequency governor '{gov}'" + (f" ({driver})" if driver else ""),
                           explains=_BOTH))
    simd = set((state.get("cpu") or {}).get("simd") or ())
    blas = [b for b in state.get("blas") or () if b.get("user_api") == "blas"]
    if not blas:
        out.append(Finding("no optimized BLAS found (threadpoolctl lists none): numpy may be using "
                           "a reference BLAS", explains=frozenset({"matmul"})))
    for b in blas:
        arch = str(b.get("architecture") or "").lower()
        api = b.get("internal_api") or "BLAS"
        if "avx512f" in simd and arch in _PRE_AVX512:
            out.append(Finding(f"{api} runs its '{b.get('architecture')}' kernel on a CPU with "
                               "AVX-512 (OPENBLAS_CORETYPE set, or an old OpenBLAS?)",
                               explains=frozenset({"matmul"})))
        elif "avx2" in simd and arch in _PRE_AVX2:
            out.append(Finding(f"{api} runs its '{b.get('architecture')}' kernel on a CPU with AVX2",
                               explains=frozenset({"matmul"})))
    return out


def judge(figures: Sequence[FigureCheck], findings: Sequence[Finding],
          has_reference: bool) -> tuple[str, str]:
    """The verdict and the likeliest cause (see the module's rules)."""
    low = [f for f in figures if f.low]
    faults = [x for x in findings if x.fault]
    if not has_reference and not faults:
        return "unknown model", ""
    if not low and not faults:
        return "normal", ""
    if low:
        kinds = {f.kind for f in low}
        unmeasured = [f for f in low if f.measured is None]
        for x in findings:
            if x.explains & kinds:
                return "below normal", x.text
        if faults:
            return "below normal", faults[0].text
        if unmeasured:
            return "below normal", f"{unmeasured[0].label} could not be measured: {unmeasured[0].note}"
        return "below normal", ("not explained by the device state (clocks, power, throttling, "
                                "other load): rerun, and compare with another device of this model")
    return "below normal", faults[0].text


# --- one device's verdict -------------------------------------------------------------------


def gpu_check(name: str, device: str, ps: PeakSet, failure: str, state: Mapping[str, Any],
              table: ReferenceTable, dtypes: Sequence[str], device_name: Callable[[], str]) -> DeviceCheck:
    """A GPU's verdict from its probe (``ps``; ``failure``: why the probe failed, or "") and
    the state read while it ran, against ``table``. ``device_name``: the device's name, asked
    only where neither the probe nor the state gives one."""
    measured = _measured(ps)
    model = (measured[0].device_name if measured else "") or state.get("name") or device_name()
    ref = table.for_gpu(model)
    notes = {n.split(": ", 1)[0]: n for n in ps.config.get("notes", [])}
    figures = []
    for dtype in dtypes:
        p = next((q for q in measured if q.dtype == dtype), None)
        r = ref.figures.get(f"matmul_{dtype}") if ref else None
        figures.append(FigureCheck(
            f"matmul_{dtype}", f"matmul {dtype}", "FLOP/s", p.flops_per_s if p else None,
            r.value if r else None, _source(r), ref.normal_at_least if ref else 0.9,
            p.note if p else failure or notes.get(f"{name} {dtype} threads=all", "not measured")))
    bw = max((p.bytes_per_s for p in measured if p.bytes_per_s), default=None)
    r = ref.figures.get("copy") if ref else None
    figures.append(FigureCheck("copy", "device copy", "B/s", bw, r.value if r else None, _source(r),
                               ref.normal_at_least if ref else 0.9,
                               "bytes read + written" if bw else failure or "not measured"))
    findings = gpu_findings(state)
    if failure:
        findings.insert(0, Finding(failure, fault=True, explains=_BOTH))
    if not state.get("available"):
        findings.append(Finding(f"device state not read: {state.get('reason')}"))
    verdict, cause = judge(figures, findings, ref is not None)
    advice = ""
    if verdict == "unknown model" or ref is None:
        advice = (f"no reference for {model!r}: record one with `bench-suite peaks --backends {name} "
                  "--out healthy.json` on a healthy device of this model, then `bench-suite doctor "
                  "--reference healthy.json`")
    return DeviceCheck(device, name, model, ref.title if ref else "", tuple(figures),
                       tuple(findings), verdict, cause, advice, state)


def cpu_check(name: str, ps: PeakSet, failure: str, state: Mapping[str, Any], table: ReferenceTable,
              dtypes: Sequence[str], device_name: Callable[[], str]) -> DeviceCheck:
    """A CPU's verdict from its probe (one core and every core) and its state, against
    ``table`` (a reference of its own model where one was given, else its theoretical peak)."""
    measured = _measured(ps)
    theory = {(p.dtype, p.threads): p for p in ps.peaks if p.source == "theoretical"}
    model = (measured[0].device_name if measured else "") or device_name()
    own = table.by_name.get(model)
    all_cores = max((p.threads or 0 for p in measured), default=0)
    figures = []
    for p in sorted(measured, key=lambda q: (q.threads or 0, dtypes.index(q.dtype)
                                             if q.dtype in dtypes else 99)):
        t = p.threads or 0
        cores = f"{t} core{'s' * (t != 1)}"
        r = own.figures.get(f"matmul_{p.dtype}") if own and t == all_cores else None
        if r is not None and own is not None:
            figures.append(FigureCheck(f"matmul_{p.dtype}", f"matmul {p.dtype}, {cores}", "FLOP/s",
                                       p.flops_per_s, r.value, _source(r), own.normal_at_least, p.note))
            continue
        th = theory.get((p.dtype, p.threads))
        derived = table.cpu.figures.get(f"matmul_{p.dtype}")
        figures.append(FigureCheck(
            f"matmul_{p.dtype}", f"matmul {p.dtype}, {cores}", "FLOP/s", p.flops_per_s,
            th.flops_per_s if th and derived else None,
            f"theoretical: {th.note}" if th and derived else "", table.cpu.normal_at_least, p.note))
    copies = {(p.threads or 0): p.bytes_per_s for p in measured if p.bytes_per_s}
    for t, bw in sorted(copies.items()):
        r = own.figures.get("copy") if own and t == all_cores else None
        figures.append(FigureCheck("copy", f"copy, {t} core{'s' * (t != 1)}", "B/s", bw,
                                   r.value if r else None, _source(r),
                                   own.normal_at_least if own else 0.9, "bytes read + written"))
    if not measured:
        figures.append(FigureCheck(f"matmul_{dtypes[0]}", f"matmul {dtypes[0]}",
                                   "FLOP/s", None, None, note=failure or "not measured"))
    findings = cpu_findings(state)
    if failure:
        findings.insert(0, Finding(failure, fault=True, explains=_BOTH))
    has_ref = any(f.reference for f in figures)
    verdict, cause = judge(figures, findings, has_ref)
    advice = "" if has_ref else ("no theoretical peak for this CPU (its clock is unknown): record "
                                 "a healthy machine's with `bench-suite peaks` and pass it with --reference")
    title = own.title if own else (table.cpu.title if has_ref else "")
    return DeviceCheck("cpu", name, model, title, tuple(figures), tuple(findings), verdict, cause,
                       advice, state)


def _measured(ps: PeakSet) -> list[Peak]:
    return [p for p in ps.peaks if p.source == "measured"]


def _source(r: Reference | None) -> str:
    if r is None:
        return ""
    return f"{r.source}" + (f" ({r.note})" if r.note else "")


def as_json(report: DoctorReport) -> str:
    return json.dumps(report.to_dict(), indent=2, allow_nan=False)
