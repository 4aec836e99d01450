"""Noise figures: what a machine's measured noise lets a comparison see.

``calibrate`` runs the same code on both sides of an ``ab`` (an A/A comparison); from its two
runs :func:`profile_from_ab` keeps, per case, how much the rounds of one side spread
(``round_sd``: what separates two ``run``\\s) and how much paired rounds of the two sides
differ (``pair_sd``: what an ``ab`` must see past), on the log scale (saved as a noise profile,
``store.noise``). From those follows the **smallest detectable change** of a comparison
(:func:`detectable_change`): the change a test at level alpha finds with 90% power, for the
number of rounds and the design at hand. ``compare`` and the report state it per case.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bench_suite.core.verdict import DEFAULT_ALPHA
from bench_suite.store.noise import CaseNoise, NoiseProfile
from bench_suite.store.results import Run

#: Power at which the smallest detectable change is stated.
POWER = 0.9


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


