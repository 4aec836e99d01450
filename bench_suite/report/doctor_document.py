"""The doctor's findings as a document: per device, its figures against the reference, the
state it was in under load, what was found and the verdict. ``bench-suite doctor`` prints its
text rendering; ``--json`` is ``analysis.diagnosis.as_json``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench_suite.analysis.diagnosis import DeviceCheck, DoctorReport
from bench_suite.report.document import Cell, DisplayTable, Document, Section
from bench_suite.report.format import fmt_per_s

__all__ = ["doctor_document"]


def _figures_table(d: DeviceCheck) -> DisplayTable:
    rows = []
    for f in d.figures:
        pct = f.pct
        rows.append((Cell(f.label, left=True), Cell(fmt_per_s(f.measured, f.unit)),
                     Cell(fmt_per_s(f.reference, f.unit)),
                     Cell("-" if pct != pct else f"{pct:.0f}%" + (" (low)" if f.low else ""), noisy=f.low),
                     Cell(f"{f.normal_at_least:.0%}" if f.reference else "-")))
    return DisplayTable("", ("figure", "measured", "reference", "% of reference", "normal from"),
                        tuple(rows), left_cols=1)


def _mhz(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def state_lines(d: DeviceCheck) -> list[str]:
    """What the device's state was while it was probed: the CPU's governor, load and BLAS; a
    GPU's clocks, power, clock-event reasons, link, ECC and other processes."""
    s: Mapping[str, Any] = d.state
    if d.device == "cpu":
        load = s.get("load") or {}
        blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} {b.get('architecture') or ''}".strip()
                         for b in s.get("blas") or () if b.get("user_api") == "blas") or "none found"
        other, steal = load.get("other_cores"), load.get("steal_cores")
        parts = [f"governor {s.get('governor') or 'n/a (no cpufreq)'}",
                 f"other processes {'-' if other is None else f'{other:.2f}'} of {load.get('cores')} cores"
                 + (f", steal {steal:.2f}" if steal else ""),
                 f"load average {s.get('load_average_1m')}", f"BLAS {blas}"]
        return ["state: " + "; ".join(parts)]
    if not s.get("available"):
        return [f"state: {s.get('reason', 'not read')}"]
    load = s.get("load") or {}
    reasons = ", ".join(f"{k} {v:.0%}" for k, v in (load.get("reasons") or {}).items()) or "none"
    procs = [p for p in s.get("processes") or () if not p.get("own")]
    return [
        f"clocks under load: SM {_mhz(load.get('sm_clock_mhz'))} of {_mhz(s.get('max_sm_clock_mhz'))} MHz, "
        f"memory {_mhz(load.get('mem_clock_mhz'))} of {_mhz(s.get('max_mem_clock_mhz'))} MHz; "
        f"power limit {_mhz(s.get('power_limit_w'))} W (default {_mhz(s.get('default_power_limit_w'))} W), "
        f"peak draw {_mhz(load.get('max_power_w'))} W, {_mhz(load.get('max_temp_c'))} °C",
        f"clock-event reasons under load: {reasons}; PCIe Gen{_mhz(load.get('pcie_gen'))} "
        f"x{_mhz(load.get('pcie_width'))} of Gen{_mhz(s.get('pcie_max_gen'))} x{_mhz(s.get('pcie_max_width'))}; "
        f"ECC uncorrected {_mhz(s.get('ecc_uncorrected_volatile'))}, corrected "
        f"{_mhz(s.get('ecc_corrected_volatile'))}; other processes: {len(procs)}",
    ]


def _device_section(k: int, d: DeviceCheck) -> Section:
    ref = f" (reference: {d.reference_title})" if d.reference_title else " (unknown model)"
    notes = [*state_lines(d), *(f"{'fault' if x.fault else 'note'}: {x.text}" for x in d.findings),
             f"verdict: {d.verdict}" + (f": {d.cause}" if d.cause else "") + f"  ({d.seconds:.1f} s)"]
    if d.advice:
        notes.append(d.advice)
    return Section(f"device-{k}", f"{d.device} {d.model}{ref}", tables=(_figures_table(d),),
                   notes=tuple(notes))


def doctor_document(report: DoctorReport) -> Document:
    n = len(report.devices)
    below = sum(d.verdict == "below normal" for d in report.devices)
    summary = f"{n} device{'s' * (n != 1)} checked: {f'{below} below normal' if below else 'none below normal'}"
    return Document("bench-suite doctor", tuple(_device_section(k, d) for k, d in enumerate(report.devices)),
                    subject=report.machine, footnote=summary)
