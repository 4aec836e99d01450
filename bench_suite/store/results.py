"""Measurement and Run records, their JSON format, durable writing, loading and the frame.

Format history (bump ``VERSION`` and add a line on every incompatible change):

* version 1: ``{"schema": "bench-suite/run", "version": 1, "run_id", "machine", "created_at",
  "finished_at", "complete", "env", "config", "measurements": [...]}``; each measurement holds
  its case, status, reason, raw per-call ``samples_s`` and the figures of its verification.
* version 2: a measurement's samples are kept per *round* (one pass of the sweep in one
  process): ``"rounds": [{"index", "samples_s", "number", "warmup_calls", "stop",
  "started_at", "wall_s", "contention", "steal", "wait_frac", "retaken", "contended"}, ...]``
  replaces the measurement's ``samples_s``/``number``/``warmup_calls``/``stop``. Version 1
  files still load: their samples become one round.

A run's journal holds one line per *round* of a case; the loader merges the lines of a case
into one measurement (:func:`merge_rounds`), as the final file holds it.

While a run is in progress it lives in a *journal* beside the final file
(``<run>.json.journal``): JSON Lines, a header line then one line per measurement, each
appended with flush and fsync, so a crash or a kill loses at most the case in flight. When
the run ends the final file is written atomically (temporary file, fsync, rename) and the
journal removed. The loader reads both, and tolerates a torn last line in a journal.

Statistics are never stored: they are derived from the raw samples in one place
(:attr:`Measurement.summary`), so every front end and report agrees.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from bench_suite.core import ops, stats
from bench_suite.core.cases import Case, is_cuda_backend
from bench_suite.core.errors import OutputError, ResultsFileError
from bench_suite.store import codec
from bench_suite.store.codec import (  # noqa: F401 - re-exported: where callers have found them
    MAX_SAMPLE_S,
    MAX_SAMPLES_IN_FILE,
    STATUSES,
    json_safe,
    parse_json,
)
from bench_suite.store.env_record import EnvRecord, LaunchRecord

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = codec.RunHeader.SCHEMA
VERSION = 2
#: Versions the loader reads (older ones are converted on load).
READABLE_VERSIONS = codec.RunHeader.VERSIONS
JOURNAL_SUFFIX = ".journal"
#: Largest file the loader reads: MAX_SAMPLES_IN_FILE samples at ~25 bytes each, and more.
MAX_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class Round:
    """One round of a case: its samples, taken in one process, and what disturbed them.

    Rounds are the unit of replication: a fresh process varies memory layout, thread
    placement and import state as separate runs do, so the spread *between* rounds is the
    run-to-run spread that one process's samples cannot show.
    """

    samples_s: tuple[float, ...] = ()  # per-call seconds, one per sample
    number: int = 0  # calls per sample
    warmup_calls: int = 0
    stop: str = ""  # converged | budget | max_samples
    index: int = 0  # the round's place in its run (0-based)
    started_at: str = ""
    wall_s: float = 0.0  # the sampling window
    contention: float | None = None  # other processes' CPU, cores (None: not measured)
    steal: float | None = None  # hypervisor steal, cores
    wait_frac: float | None = None  # our threads' run-queue wait per wall second
    retaken: int = 0  # disturbed samples thrown away and taken again
    contended: bool = False  # other work still held cores this case needed

    @property
    def median(self) -> float:
        return stats.quantile(sorted(self.samples_s), 0.5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "samples_s": list(self.samples_s), "number": self.number,
            "warmup_calls": self.warmup_calls, "stop": self.stop, "started_at": self.started_at,
            "wall_s": self.wall_s, "contention": self.contention, "steal": self.steal,
            "wait_frac": self.wait_frac, "retaken": self.retaken, "contended": self.contended,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Round:
        return round_from_doc(codec.decode(codec.RoundDoc, data, where))


def round_from_doc(doc: codec.RoundDoc) -> Round:
    return Round(**msgspec.structs.asdict(doc))


def _stop_of(rounds: Sequence[Round]) -> str:
    """How a measurement's sampling stopped: converged only if every round did."""
    return next((r.stop for r in rounds if r.stop != "converged"), "converged" if rounds else "")


@dataclass(frozen=True)
class Measurement:
    """The record of one case: raw samples plus what was checked. Immutable.

    The samples are kept per round (``rounds``). ``samples_s``, ``number``,
    ``warmup_calls`` and ``stop`` are the view over all rounds (all samples in round order,
    the first round's calls per sample, the calls warmed up, how sampling stopped); a
    measurement made from ``samples_s`` alone has them as its one round.
    """

    case: Case
    status: str  # "ok" | "failed" | "skipped"
    reason: str = ""
    samples_s: tuple[float, ...] = ()  # per-call seconds, one per sample
    number: int = 0  # calls per sample
    warmup_calls: int = 0
    stop: str = ""  # why sampling stopped: converged | budget | max_samples
    rel_error: float | None = None  # ‖out - ref‖ / ‖ref‖ against float64 numpy
    tolerance: float | None = None
    check: str = ""  # how the result was checked: full | projection
    threads: int | None = None  # thread count in force while timing, read back
    peak_mem_bytes: int | None = None
    device_name: str = ""
    started_at: str = ""
    wall_s: float = 0.0  # host seconds spent on the case, verification included
    #: Statistics given by a foreign source (asv, pytest-benchmark) that kept no raw samples.
    given_summary: stats.Summary | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    rounds: tuple[Round, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        if self.rounds:  # the rounds are the record; the flat view is derived from them
            rounds = tuple(self.rounds)
            object.__setattr__(self, "rounds", rounds)
            object.__setattr__(self, "samples_s", tuple(x for r in rounds for x in r.samples_s))
            object.__setattr__(self, "number", rounds[0].number)
            object.__setattr__(self, "warmup_calls", sum(r.warmup_calls for r in rounds))
            object.__setattr__(self, "stop", _stop_of(rounds))
        elif self.samples_s:
            object.__setattr__(self, "samples_s", tuple(self.samples_s))
            object.__setattr__(self, "rounds", (Round(
                self.samples_s, self.number, self.warmup_calls, self.stop,
                started_at=self.started_at),))

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def usable_rounds(self) -> tuple[Round, ...]:
        """The rounds with samples that no other work disturbed (all of them, if every round
        was contended: the figures are then flagged, not hidden)."""
        with_samples = tuple(r for r in self.rounds if r.samples_s)
        clean = tuple(r for r in with_samples if not r.contended)
        return clean or with_samples

    @property
    def contended(self) -> bool:
        """Some round was timed while other work held cores the case needed."""
        return any(r.contended for r in self.rounds)

    @property
    def contention(self) -> float | None:
        """Other processes' CPU plus steal, in cores, per wall second of sampling (the
        wall-weighted mean over rounds); None where it was not measured."""
        known = [r for r in self.rounds if r.contention is not None and r.wall_s > 0]
        wall = math.fsum(r.wall_s for r in known)
        if not known or wall <= 0:
            return None
        return math.fsum((r.contention + (r.steal or 0.0)) * r.wall_s for r in known) / wall

    @property
    def round_medians(self) -> tuple[float, ...]:
        """Each usable round's median per-call time: the values run-to-run spread is judged by."""
        return tuple(r.median for r in self.usable_rounds)

    @property
    def bimodal(self) -> bool:
        """The rounds fall into two groups far apart (``stats.two_groups``)."""
        return stats.two_groups(self.round_medians) is not None

    @cached_property
    def summary(self) -> stats.Summary:
        """Within one round: the samples. Over several: the rounds' medians, so that the
        median's interval (the "±") is the spread between rounds, not within a process."""
        if len(self.usable_rounds) >= 2:
            return stats.summarize_rounds(self.round_medians)
        if self.samples_s or self.given_summary is None:
            return stats.summarize(self.usable_rounds[0].samples_s if self.usable_rounds else ())
        return self.given_summary

    @property
    def flops(self) -> int:
        return ops.flops(self.case)

    @property
    def bytes(self) -> int:
        return ops.bytes_moved(self.case)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case_id": self.case.id,
            "case": self.case.to_dict(),
            "status": self.status,
            "reason": self.reason,
            "rounds": [r.to_dict() for r in self.rounds],
            "rel_error": self.rel_error,
            "tolerance": self.tolerance,
            "check": self.check,
            "threads": self.threads,
            "peak_mem_bytes": self.peak_mem_bytes,
            "device_name": self.device_name,
            "started_at": self.started_at,
            "wall_s": self.wall_s,
            "extra": dict(self.extra),
        }
        if self.given_summary is not None:
            # Foreign sources leave some statistics unknown (NaN): null in JSON, NaN again on load.
            out["given_summary"] = json_safe({
                k: getattr(self.given_summary, k) for k in stats.Summary.__dataclass_fields__
            })
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "measurement") -> Measurement:
        """A measurement from its JSON form (``to_dict``); a problem is one ResultsFileError."""
        return measurement_from_doc(codec.decode(codec.MeasurementDoc, data, where))


def measurement_from_doc(doc: codec.MeasurementDoc) -> Measurement:
    """The record of a decoded (so valid) measurement document."""
    given = None
    if doc.given_summary is not msgspec.UNSET:
        # unknown statistics are null in the file, NaN in the record
        g = msgspec.structs.asdict(doc.given_summary)
        given = stats.Summary(**{k: v if v is not None else math.nan for k, v in g.items()})
    return Measurement(
        case=Case.from_dict(doc.case),
        status=doc.status,
        reason=doc.reason,
        rel_error=doc.rel_error,
        tolerance=doc.tolerance,
        check=doc.check,
        threads=doc.threads,
        peak_mem_bytes=doc.peak_mem_bytes,
        device_name=doc.device_name,
        started_at=doc.started_at,
        wall_s=doc.wall_s,
        given_summary=given,
        extra=doc.extra,
        rounds=tuple(round_from_doc(r) for r in doc.round_docs()),
    )


def merge_rounds(parts: Sequence[Measurement]) -> Measurement:
    """One measurement from the per-round measurements of one case, in the order given.

    The rounds are concatenated. Verification figures, threads and device come from the
    first round that has them. Any failed round fails the case (its reason names the round),
    keeping the rounds that were measured: a case that crashed in one process of five is not
    a result to trust. All skipped: skipped.
    """
    if not parts:
        raise ValueError("nothing to merge")
    if len(parts) == 1:
        return parts[0]
    ids = {m.id for m in parts}
    if len(ids) != 1:
        raise ValueError(f"cannot merge different cases: {sorted(ids)}")
    rounds = tuple(r for m in parts for r in m.rounds)
    failed = [m for m in parts if m.status == "failed"]
    ok = [m for m in parts if m.status == "ok"]
    first = ok[0] if ok else (failed[0] if failed else parts[0])
    if failed:
        where = ", ".join(str(_round_label(m)) for m in failed)
        status, reason = "failed", f"round {where}: {failed[0].reason}"[:500]
    elif ok:
        status, reason = "ok", ""
    else:
        status, reason = "skipped", parts[0].reason
    peaks = [m.peak_mem_bytes for m in parts if m.peak_mem_bytes is not None]
    return Measurement(
        case=first.case, status=status, reason=reason,
        rel_error=first.rel_error, tolerance=first.tolerance, check=first.check,
        threads=first.threads, peak_mem_bytes=max(peaks) if peaks else None,
        device_name=first.device_name, started_at=min(m.started_at for m in parts),
        wall_s=math.fsum(m.wall_s for m in parts), given_summary=first.given_summary,
        extra=first.extra, rounds=rounds,
    )


def _round_label(m: Measurement) -> int | str:
    return m.rounds[0].index + 1 if m.rounds else "?"


def merge_by_case(ms: Iterable[Measurement]) -> tuple[Measurement, ...]:
    """Measurements of the same case merged into one (its rounds), in first-seen order."""
    groups: dict[str, list[Measurement]] = {}
    for m in ms:
        groups.setdefault(m.id, []).append(m)
    return tuple(merge_rounds(g) for g in groups.values())


@dataclass(frozen=True)
class Run:
    """One sweep on one machine: its environment and its measurements."""

    run_id: str
    machine: str
    created_at: str
    env: Mapping[str, Any]
    config: Mapping[str, Any]
    measurements: tuple[Measurement, ...]
    finished_at: str = ""
    complete: bool = True
    source: str = "bench-suite"  # or "asv", "pytest-benchmark"
    path: str = field(default="", compare=False)

    def header(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "run_id": self.run_id,
            "machine": self.machine,
            "created_at": self.created_at,
            "env": dict(self.env),
            "config": dict(self.config),
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.header()
        out["finished_at"] = self.finished_at
        out["complete"] = self.complete
        out["source"] = self.source
        out["measurements"] = [m.to_dict() for m in self.measurements]
        return out


# --- writing ------------------------------------------------------------------------------


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL_SUFFIX)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _chmod_default(fd)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _chmod_default(fd: int) -> None:
    """mkstemp makes files private (0600); give run files the mode ``open`` would (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError, AttributeError):
        os.fchmod(fd, 0o666 & ~umask)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RunWriter:
    """Appends measurements to a journal as they come, then writes the final file atomically.

    Opening the writer creates the folder and the journal at once, so an unwritable output
    path fails before anything is measured.
    """

    def __init__(self, path: Path, header: Run):
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self._header = header
        self.measurements: list[Measurement] = list(header.measurements)
        self._fh: IO[str] | None = None
        if self.path.is_dir():
            raise OutputError(f"cannot write results to {self.path}: it is a folder")
        # The header and any measurements carried over (a resumed run) go to a temporary file
        # that replaces the journal only when complete: resuming from a journal never
        # truncates the one copy of its measurements.
        lines = [header.header(), *({"measurement": m.to_dict()} for m in self.measurements)]
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.journal.name}.", suffix=".tmp", dir=self.path.parent)
            self._fh = os.fdopen(fd, "w", encoding="utf-8")
            _chmod_default(fd)
            self._fh.write("".join(codec.encode_line(obj) for obj in lines))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            os.replace(tmp, self.journal)
        except BaseException as exc:
            self.close()
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write results to {self.path}: {exc.strerror or exc}") from None
            raise
        _fsync_dir(self.path.parent)

    def _append(self, obj: Mapping[str, Any]) -> None:
        if self._fh is None:
            raise RuntimeError(f"{self.journal} is closed")
        try:
            self._fh.write(codec.encode_line(obj))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:  # a full disk: stop, the journal keeps what was written before
            raise OutputError(f"cannot append to {self.journal}: {exc.strerror or exc}") from None

    def add(self, m: Measurement) -> None:
        line = {"measurement": m.to_dict()}
        # Memory first: a Ctrl-C that lands after the journal line is written but before this
        # list holds it would otherwise leave it out of the final file, which replaces the
        # journal (a torn journal line does no harm: the journal is removed on finishing).
        self.measurements.append(m)
        self._append(line)

    @property
    def env(self) -> Mapping[str, Any]:
        return self._header.env

    def update_env(self, **entries: Any) -> None:
        """Add entries to the environment the final file records (what a round's worker
        process reported of itself, such as torch's details, which the parent never imports)."""
        self._header = replace(self._header, env={**self._header.env, **entries})

    def run(self, finished_at: str = "", complete: bool = True) -> Run:
        h = self._header
        return Run(h.run_id, h.machine, h.created_at, h.env, h.config, merge_by_case(self.measurements),
                   finished_at, complete, h.source, str(self.path))

    def finish(self, finished_at: str, complete: bool = True) -> Run:
        """Write the final file atomically and drop the journal."""
        run = self.run(finished_at, complete)
        try:
            atomic_write_text(self.path, encode_document(run.to_dict()))
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path} ({exc.strerror or exc}); the measurements are in {self.journal}"
            ) from None
        self.close()
        with contextlib.suppress(OSError):
            self.journal.unlink()
        return run

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


#: The one JSON form of every file the suite saves (runs, run sets, peaks, noise profiles).
encode_document = codec.encode


def save_document(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``doc`` atomically (:func:`encode_document`); an ``OutputError`` names the path."""
    path = Path(path)
    try:
        atomic_write_text(path, encode_document(doc))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def save_run(run: Run, path: Path) -> None:
    atomic_write_text(Path(path), encode_document(run.to_dict()))


# --- loading ------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    try:
        # A FIFO or a device (/dev/zero) would block or never end: regular files only (opened
        # without blocking, to look first), no bigger than the largest run file can be.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as fh:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ResultsFileError(f"{path}: is a folder, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise ResultsFileError(f"{path}: not a regular file (a pipe or a device?)")
            if info.st_size > MAX_FILE_BYTES:
                raise ResultsFileError(f"{path}: {info.st_size / 2**30:.1f} GiB is too large for a run file")
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ResultsFileError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}: not a text file (binary data)") from None


def run_from_dict(data: Any, where: str, path: str = "", merge: bool = False) -> Run:
    """Validate a decoded run document; every problem becomes one ResultsFileError line.

    ``merge``: measurements of the same case are rounds of one (a journal's lines); a final
    file already holds one measurement per case, and any it holds twice are kept apart.
    """
    return run_from_doc(codec.decode(codec.RunDoc, data, where), path, merge=merge)


def run_from_doc(doc: codec.RunHeader, path: str = "", measurements: Iterable[codec.MeasurementDoc] | None = None,
                 merge: bool = False, complete: bool | None = None) -> Run:
    """The record of a decoded run document (or of a journal's header and its lines)."""
    docs = doc.measurements if measurements is None else measurements  # type: ignore[attr-defined]
    ms = tuple(measurement_from_doc(m) for m in docs)
    if merge:
        ms = merge_by_case(ms)
    return Run(
        run_id=doc.run_id,
        machine=doc.machine,
        created_at=doc.created_at,
        env=doc.env,
        config=doc.config,
        measurements=ms,
        finished_at=doc.finished_at,
        complete=doc.complete if complete is None else complete,
        source=doc.source,
        path=path,
    )


def check_header(data: Any, where: str) -> None:
    problem = codec.header_problem(data, codec.RunHeader)
    if problem:
        raise ResultsFileError(f"{where}: {problem}")


def read_journal(text: str, where: str, path: str = "") -> Run:
    """A run from a journal: the header line, then measurements; a torn last line is dropped
    (it is the line being written when the process died)."""
    lines = text.split("\n")
    if not lines or not lines[0].strip():
        raise ResultsFileError(f"{where}: empty journal")
    header = codec.decode(codec.RunHeader, lines[0], f"{where}: line 1")
    body: list[codec.MeasurementDoc] = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            body.append(codec.decode(codec.JournalEntry, line, f"{where}: line {i}").measurement)
        except ResultsFileError:
            last = i == len(lines) or (i == len(lines) - 1 and not lines[-1].strip())
            if last and _torn(line):
                break  # the torn tail of a killed writer
            raise
    return run_from_doc(header, path, body, merge=True, complete=False)


def _torn(line: str) -> bool:
    """A line that is not JSON at all: cut short, not malformed."""
    try:
        parse_json(line, "")
    except ResultsFileError:
        return True
    return False


def read_run_file(path: Path) -> Run:
    path = Path(path)
    text = read_text(path)
    if path.name.endswith(JOURNAL_SUFFIX):
        return read_journal(text, str(path), str(path))
    return run_from_doc(codec.decode(codec.RunDoc, text, str(path)), str(path))


# --- the frame ----------------------------------------------------------------------------

#: Columns of :func:`to_frame`, in order. Times in seconds, rates in GFLOP/s and GB/s.
COLUMNS: tuple[str, ...] = (
    "run_id", "machine", "source", "case_id", "op", "backend", "device", "device_name",
    "dtype", "m", "k", "n", "size", "threads", "threads_label", "grad_mode", "status", "reason",
    "median_s", "q1_s", "q3_s", "ci_low_s", "ci_high_s", "min_s", "mean_s", "n_samples",
    "number", "rel_ci", "noisy", "converged", "flops", "bytes", "intensity", "gflops", "gbps",
    "rel_error", "tolerance", "peak_mem_bytes", "wall_s", "commit", "created_at",
    "throttled", "power_capped", "launch_bound", "rounds", "contention", "contended", "retaken",
    "bimodal", "rank", "host", "device_index",
    # the op's variant (activation, host memory, where created; "" for ops without one) and a
    # training step's phases (median seconds of each, timed on its own; NaN elsewhere)
    "variant", *(f"phase_{p}_s" for p in ("forward", "backward", "update")),
)


def _row(run: Run, env: EnvRecord, launch: LaunchRecord, m: Measurement) -> dict[str, Any]:
    c = m.case
    s = m.summary
    ok = m.status == "ok" and s.n > 0 and s.median > 0
    median = s.median if ok else math.nan
    cuda = is_cuda_backend(c.backend)
    cores = _env_cores(env)
    threads = m.threads if m.threads is not None else (None if cuda else (c.threads or cores))
    return {
        "run_id": run.run_id,
        "machine": run.machine,
        "source": run.source,
        "case_id": c.id,
        "op": c.op,
        "backend": c.backend,
        "device": f"cuda:{_cuda_index(c.backend)}" if cuda else "cpu",
        "device_name": m.device_name,
        "dtype": c.dtype,
        "m": c.m,
        "k": c.k,
        "n": c.n,
        "size": c.size_label,
        "threads": threads,
        "threads_label": c.threads_label,
        "grad_mode": c.grad_mode,
        "status": m.status,
        "reason": m.reason,
        "median_s": median,
        "q1_s": s.q1 if ok else math.nan,
        "q3_s": s.q3 if ok else math.nan,
        "ci_low_s": s.ci_low if ok else math.nan,
        "ci_high_s": s.ci_high if ok else math.nan,
        "min_s": s.min if ok else math.nan,
        "mean_s": s.mean if ok else math.nan,
        "n_samples": len(m.samples_s) if m.samples_s else s.n,
        "number": m.number,
        "rel_ci": s.rel_ci if ok else math.nan,
        "noisy": bool(ok and s.noisy),
        "converged": m.stop == "converged",
        "flops": m.flops,
        "bytes": m.bytes,
        "intensity": m.flops / m.bytes,
        "gflops": _rate(m.flops, median) if ok else math.nan,
        "gbps": _rate(m.bytes, median) if ok else math.nan,
        "rel_error": m.rel_error if m.rel_error is not None else math.nan,
        "tolerance": m.tolerance if m.tolerance is not None else math.nan,
        "peak_mem_bytes": m.peak_mem_bytes,
        "wall_s": m.wall_s,
        "commit": env.git.commit or "",
        "created_at": run.created_at,
        "throttled": _gpu_flag(m.extra, "nvml", "throttled"),
        "power_capped": _gpu_flag(m.extra, "nvml", "power_capped"),
        "launch_bound": _gpu_flag(m.extra, "launch", "launch_bound"),
        "rounds": len(m.usable_rounds),
        "contention": m.contention if m.contention is not None else math.nan,
        "contended": m.contended,
        "retaken": sum(r.retaken for r in m.rounds),
        "bimodal": bool(ok and m.bimodal),
        **_placement(env, launch, c.backend),
        "variant": c.variant,
        **_phase_medians(m.extra),
    }


def _placement(env: EnvRecord, launch: LaunchRecord, backend: str) -> dict[str, Any]:
    """Where a measurement ran, for fleets: ``rank`` in a torchrun/srun launch (else None),
    ``host`` (the host name the run recorded) and ``device_index``: the CUDA index for a GPU
    case; for a CPU case of a launch, the rank's local index (its share of the host's cores)."""
    index = _cuda_index(backend) if is_cuda_backend(backend) else launch.local_rank
    return {
        "rank": launch.rank if _count(launch.rank) else None,
        "host": launch.host or env.hostname or "",
        "device_index": index if _count(index) else None,
    }


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31


def _phase_medians(extra: Mapping[str, Any]) -> dict[str, float]:
    """Median seconds of each phase in ``extra["phases"]`` (``phases.time_phases``); NaN for a
    phase not timed. ``extra`` is free-form and from a file: read defensively."""
    phases = extra.get("phases") if isinstance(extra, Mapping) else None
    out = {}
    for name in ("forward", "backward", "update"):
        entry = phases.get(name) if isinstance(phases, Mapping) else None
        samples = entry.get("samples_s") if isinstance(entry, Mapping) else None
        ok = isinstance(samples, list) and samples and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
            for x in samples)
        out[f"phase_{name}_s"] = stats.quantile(sorted(float(x) for x in samples), 0.5) if ok else math.nan
    return out


def _rate(work: int, seconds: float) -> float:
    """Work per second in units of 1e9; NaN where a (subnormal) time makes it infinite."""
    try:
        rate = work / seconds / 1e9
    except (ZeroDivisionError, OverflowError):
        return math.nan
    return rate if math.isfinite(rate) else math.nan


def _cuda_index(backend: str) -> int:
    from bench_suite.core.cases import cuda_index

    return cuda_index(backend)


def _env_cores(env: EnvRecord) -> int | None:
    value = env.cpu.usable_cores
    # a count beyond any machine (or a negative one) is no count at all
    return value if value is not None and 0 < value <= 1 << 20 else None


def _gpu_flag(extra: Mapping[str, Any], section: str, key: str) -> bool | None:
    """A flag the GPU options (``measure.gpu``) recorded in ``extra[section][key]``: True or
    False, else None (not recorded, or not known). ``nvml.throttled``: thermal or hardware slowdown while the
    case was timed; ``nvml.power_capped``: the card held its power limit (not throttling);
    ``launch.launch_bound``: the events timed the host's launches, not the kernels."""
    part = extra.get(section) if isinstance(extra, Mapping) else None
    value = part.get(key) if isinstance(part, Mapping) else None
    return value if isinstance(value, bool) else None


def to_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One tidy row per measurement: what every table, figure and ``--csv`` is built from."""
    import pandas as pd

    # a run's records once, not per measurement: reading them leniently is the costly part
    rows = [_row(run, env, launch, m) for run in runs
            for env, launch in ((EnvRecord.of(run.env), LaunchRecord.of(run.config)),)
            for m in run.measurements]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("k", "threads", "peak_mem_bytes", "m", "n", "n_samples", "number", "rounds", "retaken",
                "rank", "device_index"):
        # from the Python ints, not through float64: exact above 2**53, no overflow near 2**63
        frame[col] = pd.array([row[col] for row in rows], dtype="Int64")
    for col in ("noisy", "converged", "contended", "bimodal"):
        frame[col] = frame[col].astype(bool)
    for col in ("throttled", "power_capped", "launch_bound"):  # NA: unknown or not a GPU case
        frame[col] = pd.array([row[col] for row in rows], dtype="boolean")
    return frame
