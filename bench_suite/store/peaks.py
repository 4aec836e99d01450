"""Peaks on disk: the :class:`Peak` record and the peaks file (``bench-suite peaks``).

A *peak* is what a device can do at one dtype: FLOP/s and memory bytes/s, from one of four
sources: ``measured`` (``measure.peaks``), ``datasheet`` (``analysis.catalogue``),
``theoretical`` (a CPU's, ``analysis.roofline.cpu_theoretical_peaks``) and ``link`` (a GPU's
link to the host, ``analysis.roofline.link_peak``).

Peaks files (``bench-suite peaks``) format history (bump ``PEAKS_VERSION`` on a change):

* version 1: ``{"schema": "bench-suite/peaks", "version": 1, "machine", "created_at", "env",
  "config", "peaks": [Peak.to_dict(), ...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from bench_suite.core.cases import DTYPES
from bench_suite.store import codec
from bench_suite.store.results import read_text, save_document

if TYPE_CHECKING:
    from bench_suite.store.results import Run

PEAKS_SCHEMA = codec.PeaksDoc.SCHEMA
PEAKS_VERSION = 1
#: File name ``bench-suite peaks`` writes by default, and reports look for beside run files.
PEAKS_FILENAME = "peaks.json"
SOURCES = codec.PEAK_SOURCES
#: The dtype of a link peak: it holds for every dtype.
LINK_DTYPE = "*"
#: Peak dtypes: the suite's dtypes, tf32 (float32 matmul on tensor cores) among them.
PEAK_DTYPES: tuple[str, ...] = tuple(dict.fromkeys((*DTYPES, "tf32")))


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
        return peak_from_doc(codec.decode(codec.PeakDoc, d, where))


def peak_from_doc(doc: codec.PeakDoc) -> Peak:
    return Peak(**msgspec.structs.asdict(doc))


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
    return save_document(peaks.to_dict(), path)


def is_peaks_file(path: Path) -> bool:
    """By name: ``peaks.json`` or ``*.peaks.json`` (so run-file loaders can skip them)."""
    return path.name == PEAKS_FILENAME or path.name.endswith("." + PEAKS_FILENAME)


def peaks_from_dict(data: Any, where: str, path: str = "") -> PeakSet:
    doc = codec.decode(codec.PeaksDoc, data, where)
    return PeakSet(doc.machine, str(doc.created_at), doc.env, doc.config,
                   tuple(peak_from_doc(p) for p in doc.peaks), path)


def load_peaks(path: str | Path) -> PeakSet:
    path = Path(path)
    return peaks_from_dict(read_text(path), str(path), str(path))


def peaks_beside(runs: Iterable[Run], extra_files: Iterable[str | Path] = ()) -> list[Peak]:
    """The peaks of every ``peaks.json`` beside a run file (what ``bench-suite peaks`` writes by
    default into ``results/<machine>/``) and of ``extra_files``, each file read once; a peak
    without a machine gets its file's."""
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
    return out
