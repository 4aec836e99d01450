"""Noise profiles: each case's measured run-to-run noise on one machine (``bench-suite calibrate``).

``calibrate`` runs the same code on both sides of an ``ab`` (an A/A comparison) and keeps, per
case, how much the rounds of one side spread (``round_sd``: what separates two ``run``\\s) and
how much paired rounds of the two sides differ (``pair_sd``: what an ``ab`` must see past), on
the log scale. From those follows the **smallest detectable change** of a comparison
(:func:`detectable_change`): the change a test at level alpha finds with 90% power, for the
number of rounds and the design at hand. ``compare`` and the report state it per case.

Noise-profile files (``results/<machine>/noise.json``) format history (bump ``NOISE_VERSION``):

* version 1: ``{"schema": "bench-suite/noise", "version": 1, "machine", "created_at", "env",
  "config", "cases": [{"case_id", "rounds", "median_s", "round_sd", "pair_sd", "bimodal",
  "contended_rounds"}, ...]}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench_suite.errors import BenchSuiteError, ResultsFileError
from bench_suite.results import Run, _Validator, atomic_write_text, parse_json, read_text
from bench_suite.verdict import DEFAULT_ALPHA

NOISE_SCHEMA = "bench-suite/noise"
NOISE_VERSION = 1
NOISE_FILENAME = "noise.json"
#: Power at which the smallest detectable change is stated.
POWER = 0.9


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


def detectable_change(sd: float | None, base_units: int, cand_units: int, paired: bool,
                      alpha: float = DEFAULT_ALPHA, power: float = POWER) -> float:
    """Smallest relative change (0.08: 8%) a t-test at ``alpha`` finds with ``power``.

    ``sd``: the noise on the log scale: ``pair_sd`` for paired rounds (``ab``), where the
    standard error is ``sd / sqrt(pairs)``; ``round_sd`` for independent rounds, where it is
    ``sd * sqrt(1/nb + 1/nc)``. NaN where it cannot be said (no noise figure, too few units).
    """
    from scipy.stats import norm, t

    if sd is None or not math.isfinite(sd) or base_units < 1 or cand_units < 1:
        return math.nan
    if paired:
        n = min(base_units, cand_units)
        se, dof = sd / math.sqrt(n), n - 1
    else:
        se, dof = sd * math.sqrt(1 / base_units + 1 / cand_units), base_units + cand_units - 2
    if dof < 1:  # single rounds judged by a profile's noise: the noise is known, not estimated
        k = float(norm.ppf(1 - alpha / 2) + norm.ppf(power))
    else:
        k = float(t.ppf(1 - alpha / 2, dof) + t.ppf(power, dof))
    return math.expm1(k * se)


def _log_sd(values: Iterable[float]) -> float | None:
    xs = [math.log(v) for v in values if v > 0 and math.isfinite(v)]
    return float(np.std(xs, ddof=1)) if len(xs) >= 2 else None


def profile_from_ab(base: Run, cand: Run, created_at: str,
                    config: Mapping[str, Any] | None = None) -> NoiseProfile:
    """The noise of every case measured ok on both sides of an A/A ``ab`` (same code)."""
    cmap = {m.id: m for m in cand.measurements}
    cases = []
    for b in base.measurements:
        c = cmap.get(b.id)
        if c is None or b.status != "ok" or c.status != "ok":
            continue
        bb = {r.index: r.median for r in b.usable_rounds}
        cc = {r.index: r.median for r in c.usable_rounds}
        keys = sorted(set(bb) & set(cc))
        diffs = [math.log(cc[k] / bb[k]) for k in keys if bb[k] > 0 and cc[k] > 0]
        within = [_log_sd(bb.values()), _log_sd(cc.values())]
        known = [w for w in within if w is not None]
        cases.append(CaseNoise(
            case_id=b.id, rounds=len(keys),
            median_s=float(np.median([*bb.values(), *cc.values()])) if bb or cc else math.nan,
            round_sd=math.sqrt(sum(w * w for w in known) / len(known)) if known else None,
            pair_sd=float(np.std(diffs, ddof=1)) if len(diffs) >= 2 else None,
            bimodal=b.bimodal or c.bimodal,
            contended_rounds=sum(r.contended for r in (*b.rounds, *c.rounds)),
        ))
    return NoiseProfile(base.machine, created_at, base.env, dict(config or {}), tuple(cases))


def save_profile(profile: NoiseProfile, path: Path) -> None:
    from bench_suite.results import json_safe

    atomic_write_text(Path(path), json.dumps(json_safe(profile.to_dict()), allow_nan=False, indent=1) + "\n")


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


def summarize_profile(profile: NoiseProfile, rounds: int, ab_rounds: int,
                      alpha: float = DEFAULT_ALPHA) -> list[dict[str, Any]]:
    """Per case: its noise and the smallest change two ``run``\\s of ``rounds`` rounds and an
    ``ab`` of ``ab_rounds`` rounds can detect (what ``calibrate`` prints, the report shows)."""
    rows = []
    for c in profile.cases:
        rows.append({
            "case_id": c.case_id, "median_s": c.median_s, "rounds": c.rounds,
            "round_sd": c.round_sd, "pair_sd": c.pair_sd, "bimodal": c.bimodal,
            "contended_rounds": c.contended_rounds,
            "detectable_runs": detectable_change(c.round_sd, rounds, rounds, False, alpha),
            "detectable_ab": detectable_change(c.pair_sd, ab_rounds, ab_rounds, True, alpha),
        })
    return rows


