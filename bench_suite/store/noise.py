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

from bench_suite.core.errors import BenchSuiteError, ResultsFileError
from bench_suite.store.results import Run, _Validator, parse_json, read_text, save_document

NOISE_SCHEMA = "bench-suite/noise"
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
    from bench_suite.store.results import json_safe

    save_document(json_safe(profile.to_dict()), path)


def load_profile(path: str | Path) -> NoiseProfile:
    path = Path(path)
    data = parse_json(read_text(path), str(path))
    where = str(path)
    if not isinstance(data, dict) or data.get("schema") != NOISE_SCHEMA:
        raise ResultsFileError(f"{where}: not a bench-suite noise profile (schema {NOISE_SCHEMA!r})")
    if data.get("version") != NOISE_VERSION:
        raise ResultsFileError(f"{where}: noise profile version {data.get('version')!r}; this "
                               f"bench-suite reads version {NOISE_VERSION}")
    v = _Validator(where)
    raw = data.get("cases")
    if not isinstance(raw, list):
        raise ResultsFileError(f"{where}: 'cases' must be a list")
    cases = []
    for i, c in enumerate(raw):
        cv = _Validator(f"{where}: cases[{i}]")
        d = cv.obj(c)
        cases.append(CaseNoise(
            case_id=cv.str_(d, "case_id"), rounds=cv.int_(d, "rounds", 0),
            median_s=cv.num(d, "median_s", math.nan, allow_nan=True),
            round_sd=cv.opt_num(d, "round_sd"), pair_sd=cv.opt_num(d, "pair_sd"),
            bimodal=cv.bool_(d, "bimodal", False), contended_rounds=cv.int_(d, "contended_rounds", 0),
        ))
    return NoiseProfile(v.str_(data, "machine"), v.str_(data, "created_at", ""),
                        v.obj(data.get("env", {}), "env"), v.obj(data.get("config", {}), "config"),
                        tuple(cases), str(path))


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
