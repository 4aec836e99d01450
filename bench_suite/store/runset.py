"""Run sets: the runs of one launch over several ranks (torchrun, srun, ``--concurrent``),
gathered by rank 0 into one file that ``load_results``, ``report`` and ``compare`` read.

Format history (bump ``VERSION`` on an incompatible change):

* version 1: ``{"schema": "bench-suite/run-set", "version": 1, "run_id", "created_at",
  "finished_at", "world_size", "launcher", "ranks": [{"rank", "host", "status",
  "measurements", "path", "reason"}], "runs": [<run document>, ...]}``. Each run is a whole
  run document (``results.Run.to_dict``, with its own schema and version), one per rank that
  sent anything; its ``config["distributed"]`` says which rank, host and launch it was.
  ``status`` is ``complete``, ``incomplete`` (stopped early, its measurements so far are here)
  or ``lost`` (no word from it at the end: what it had sent is here, the rest is in its own
  file on its own host, ``path``).

Each rank also keeps its own run file (``<run-id>/rank<R>.json`` beside the set, on its own
host): the durable copy when rank 0 cannot gather. A folder holding both the set and the rank
files is read once: :func:`dedupe` keeps one copy of each rank's run, the fullest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_suite.store import codec
from bench_suite.store.env_record import LaunchRecord
from bench_suite.store.results import Run, run_from_doc, save_document

SCHEMA = codec.RunSetDoc.SCHEMA
VERSION = 1
STATUSES = codec.RANK_STATUSES


@dataclass(frozen=True)
class RankStatus:
    rank: int
    host: str
    status: str  # complete | incomplete | lost
    measurements: int
    path: str = ""  # the rank's own run file, on its host
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "status": self.status,
                "measurements": self.measurements, "path": self.path, "reason": self.reason}

    def describe(self) -> str:
        """One line for a rank that is not complete."""
        where = f"rank {self.rank}" + (f" on {self.host}" if self.host else "")
        what = {"incomplete": "stopped early", "lost": "lost"}.get(self.status, self.status)
        text = f"{where}: {what} after {self.measurements} measurement{'s' * (self.measurements != 1)}"
        if self.reason:
            text += f" ({self.reason})"
        if self.path:
            text += f"; its own file: {self.path}"
        return text


@dataclass(frozen=True)
class RunSet:
    run_id: str
    created_at: str
    finished_at: str
    world_size: int
    launcher: str
    ranks: tuple[RankStatus, ...]
    runs: tuple[Run, ...]
    path: str = ""

    @property
    def missing(self) -> list[RankStatus]:
        """Ranks whose results are not all here."""
        return [r for r in self.ranks if r.status != "complete"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "version": VERSION, "run_id": self.run_id,
            "created_at": self.created_at, "finished_at": self.finished_at,
            "world_size": self.world_size, "launcher": self.launcher,
            "ranks": [r.to_dict() for r in self.ranks],
            "runs": [r.to_dict() for r in self.runs],
        }


def save_runset(rs: RunSet, path: str | Path) -> Path:
    return save_document(rs.to_dict(), path)


def is_runset(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def runset_from_dict(data: Any, where: str, path: str = "") -> RunSet:
    """Validate a decoded run-set document; every problem is one ResultsFileError line."""
    doc = codec.decode(codec.RunSetDoc, data, where)
    ranks = tuple(RankStatus(r.rank, r.host, r.status, r.measurements, r.path, r.reason) for r in doc.ranks)
    runs = tuple(run_from_doc(r, path) for r in doc.runs)
    return RunSet(doc.run_id, doc.created_at, doc.finished_at, doc.world_size, doc.launcher, ranks, runs, path)


def read_runset(data: Any, where: str, path: str = "") -> list[Run]:
    """The runs of a run-set document (what ``sources.read_results_file`` returns for one)."""
    return list(runset_from_dict(data, where, path).runs)


def distributed_key(run: Run) -> tuple[str, int] | None:
    """(run id, rank) of a run made by one rank of a launch; None for any other run."""
    rank = LaunchRecord.of(run.config).rank
    return None if rank is None else (run.run_id, rank)


def dedupe(runs: Iterable[Run]) -> list[Run]:
    """One copy of each rank's run: a folder may hold a run set and the ranks' own files, which
    repeat the same runs. The fullest copy wins (most measurements, then complete), at the
    place of the first copy. Runs that are not ranks of a launch are kept as they are."""
    runs = list(runs)
    best: dict[tuple[str, int], int] = {}
    for i, run in enumerate(runs):
        key = distributed_key(run)
        if key is None:
            continue
        j = best.get(key)
        if j is None or (len(run.measurements), run.complete) > (len(runs[j].measurements), runs[j].complete):
            best[key] = i
    first: dict[tuple[str, int], int] = {}
    for i, run in enumerate(runs):
        key = distributed_key(run)
        if key is not None:
            first.setdefault(key, i)
    out = []
    for i, run in enumerate(runs):
        key = distributed_key(run)
        if key is None:
            out.append(run)
        elif first[key] == i:
            out.append(runs[best[key]])
    return out
