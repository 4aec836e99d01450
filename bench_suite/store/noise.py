"""Noise profiles on disk: each case's measured run-to-run noise on one machine
(``bench-suite calibrate``; the figures are computed by ``analysis.noise``).

Noise-profile files (``results/<machine>/noise.json``) format history (bump ``NOISE_VERSION``):

* version 1: ``{"schema": "bench-suite/noise", "version": 1, "machine", "created_at", "env",
  "config", "cases": [{"case_id", "rounds", "median_s", "round_sd", "pair_sd", "bimodal",
  "contended_rounds"}, ...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_suite.core.errors import BenchSuiteError
from bench_suite.store import codec
from bench_suite.store.results import Run, read_text, save_document

NOISE_SCHEMA = codec.NoiseDoc.SCHEMA
NOISE_VERSION = 1
NOISE_FILENAME = "noise.json"


def is_noise_file(path: Path) -> bool:
    """By name: ``noise.json`` or ``*.noise.json`` (run-file loaders skip them)."""
    return path.name == NOISE_FILENAME or path.name.endswith("." + NOISE_FILENAME)


@dataclass(frozen=True)
class CaseNoise:
    """One case's noise on one machine, log scale (0.05 is about 5%)."""

    case_id: str
    rounds: int  # paired rounds it was measured from
    median_s: float
    round_sd: float | None  # spread of one side's round medians
    pair_sd: float | None  # spread of the log ratio of paired rounds (ab)
    bimodal: bool = False
    contended_rounds: int = 0


@dataclass(frozen=True)
class NoiseProfile:
    machine: str
    created_at: str
    env: Mapping[str, Any]
    config: Mapping[str, Any]
    cases: tuple[CaseNoise, ...]
    path: str = field(default="", compare=False)

    def for_case(self, case_id: str) -> CaseNoise | None:
        return next((c for c in self.cases if c.case_id == case_id), None)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": NOISE_SCHEMA, "version": NOISE_VERSION, "machine": self.machine,
                "created_at": self.created_at, "env": dict(self.env), "config": dict(self.config),
                "cases": [asdict(c) for c in self.cases]}


def save_profile(profile: NoiseProfile, path: Path) -> None:
    save_document(codec.json_safe(profile.to_dict()), path)


def load_profile(path: str | Path) -> NoiseProfile:
    path = Path(path)
    doc = codec.decode(codec.NoiseDoc, read_text(path), str(path))
    cases = tuple(CaseNoise(
        case_id=c.case_id, rounds=c.rounds, median_s=math.nan if c.median_s is None else c.median_s,
        round_sd=c.round_sd, pair_sd=c.pair_sd, bimodal=c.bimodal, contended_rounds=c.contended_rounds,
    ) for c in doc.cases)
    return NoiseProfile(doc.machine, doc.created_at, doc.env, doc.config, cases, str(path))


def profiles_for_runs(runs: Iterable[Run]) -> dict[str, NoiseProfile]:
    """The noise profile of each run's machine, found beside its run file (or one folder up,
    as for an ``ab`` folder inside ``results/<machine>/``): machine -> profile. Unreadable
    profiles are skipped: they only add a column."""
    out: dict[str, NoiseProfile] = {}
    for run in runs:
        if run.machine in out or not run.path:
            continue
        here = Path(run.path).parent
        for folder in (here, here.parent):
            candidate = folder / NOISE_FILENAME
            if candidate.is_file():
                try:
                    profile = load_profile(candidate)
                except BenchSuiteError:
                    continue
                if profile.machine == run.machine:
                    out[run.machine] = profile
                    break
    return out
