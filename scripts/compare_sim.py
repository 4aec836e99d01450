#!/usr/bin/env python3
"""Which test should `compare` run on rounds? A simulation (not a test).

    python scripts/compare_sim.py [--trials 200] [--seed 0] [--rounds 5,8] [--markdown]

Each trial is a family of 16 cases (as the trust workflow's sweep), measured in R rounds per
side, each round a process. Per-call times are generated from a model of what moves them on a
shared machine (all on the log scale):

* ``drift``: the machine's speed wanders with time (an Ornstein-Uhlenbeck process, shared by
  every case and both sides; 8% spread, 5 s correlation time as seen on the 2-core VM);
* ``process``: each process (round) of each case gets its own offset (memory layout, core);
* ``bimodal``: some cases run 2x slower in a random half of the processes;
* ``samples``: the spread of per-call samples inside a round (their median is what a round
  reports; the pooled-sample methods see the samples themselves);
* ``contended``: some rounds of the candidate run beside a busy neighbour, 50% slower, and are
  flagged as the monitor flags them.

Two designs: ``ab`` (the rounds of both sides interleaved case by case, as `bench-suite ab`),
and ``separate`` (two invocations minutes apart: every base round, then every candidate round,
plus a shift between the invocations). Candidate methods, each with compare's default correction
over the 16 cases (Benjamini-Hochberg at alpha 0.05) and the 5% threshold, as `compare` applies
them:

* ``samples-mwu``: Mann-Whitney U on the pooled raw samples (the old rule);
* ``hier-boot``: hierarchical bootstrap (rounds, then samples within them) of the ratio of
  medians; p from the bootstrap distribution;
* ``rounds-mwu``: Mann-Whitney U on the rounds' medians;
* ``rounds-welch``: Welch's t on the log of the rounds' medians;
* ``paired``: paired t on the log ratio of round r of each side (ab only);
* ``suite``: what `bench_suite.analysis.compare.compare` does with the same runs (paired for ab,
  Welch otherwise, contended rounds left out, bimodal sides not judged).

For each: the share of A/A trials with any case called slower (false alarm; the gate fails),
and with 8 of 16 cases truly 10% slower, the share of those called slower (power) and of the
unslowed ones called slower. Bimodal cases are counted apart.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from bench_suite.analysis import compare as cmp
from bench_suite.core.cases import Case
from bench_suite.store.results import Measurement, Round, Run

CASES = [Case(op, be, "float32", (n, n, n) if op.startswith("matmul") else (n, n), 1)
         for op in ("matmul", "hadamard", "matmul_backward", "hadamard_backward")
         for be in ("numpy", "torch-cpu") for n in (256, 1024)]
OPTIONS = cmp.CompareOptions()


@dataclass(frozen=True)
class Model:
    name: str
    drift: float = 0.08  # OU spread of the machine's speed (log)
    drift_tau_s: float = 5.0
    process: float = 0.02  # per-process offset
    samples: float = 0.03  # per-call spread inside a round
    n_samples: int = 20
    bimodal_cases: int = 0  # how many of the 16 cases are bimodal across processes
    contended_rounds: float = 0.0  # share of candidate rounds beside a busy neighbour
    invocation_shift: float = 0.03  # separate design: spread of the shift between invocations
    case_s: float = 0.15  # wall time of one case-round, for the drift's clock


MODELS = [
    Model("quiet", drift=0.01, process=0.01),
    Model("drifting"),
    Model("process-level", drift=0.02, process=0.06),
    Model("bimodal", bimodal_cases=2),
    Model("contended", contended_rounds=0.25),
]


def _ou(rng: np.random.Generator, times: np.ndarray, sigma: float, tau: float) -> np.ndarray:
    out = np.empty(len(times))
    x = rng.normal(0, sigma)
    last = times[0]
    for i, t in enumerate(times):
        a = math.exp(-(t - last) / tau)
        x = a * x + math.sqrt(max(0.0, 1 - a * a)) * rng.normal(0, sigma)
        out[i] = x
        last = t
    return out


def simulate(model: Model, design: str, rounds: int, slowed: Sequence[bool],
             rng: np.random.Generator) -> tuple[Run, Run, list[bool]]:
    n = len(CASES)
    bimodal = [i < model.bimodal_cases for i in range(n)]
    # the schedule: (side, case, round) in time order
    slots: list[tuple[int, int, int]] = []
    if design == "ab":
        for r in range(rounds):
            for c in rng.permutation(n):
                for side in rng.permutation(2):
                    slots.append((int(side), int(c), r))
    else:
        for side in (0, 1):
            for r in range(rounds):
                slots.extend((side, int(c), r) for c in rng.permutation(n))
    times = np.arange(len(slots)) * model.case_s
    if design != "ab":  # the candidate's invocation starts minutes later
        times[len(slots) // 2:] += 600.0
    drift = _ou(rng, times, model.drift, model.drift_tau_s)
    shift = rng.normal(0, model.invocation_shift) if design != "ab" else 0.0
    rounds_of: dict[tuple[int, int], list[Round]] = {}
    mode = {}
    for (side, c, r), d in zip(slots, drift, strict=True):
        key = (side, r)
        if key not in mode:
            mode[key] = rng.random(n) < 0.5
        log_t = math.log(1e-3) + d + rng.normal(0, model.process)
        if side == 1:
            log_t += shift + (math.log(1.10) if slowed[c] else 0.0)
        if bimodal[c] and mode[key][c]:
            log_t += math.log(2.0)
        contended = side == 1 and rng.random() < model.contended_rounds
        if contended:
            log_t += math.log(1.5)
        samples = np.exp(log_t + rng.normal(0, model.samples, model.n_samples))
        rounds_of.setdefault((side, c), []).append(Round(
            tuple(float(x) for x in samples), 1, 0, "converged", index=r, wall_s=model.case_s,
            contention=1.0 if contended else 0.0, contended=contended))
    runs = []
    for side, name in ((0, "base"), (1, "cand")):
        ms = tuple(Measurement(case, "ok", rounds=tuple(sorted(rounds_of[(side, i)], key=lambda x: x.index)))
                   for i, case in enumerate(CASES))
        config = {"ab": {"session": "s"}} if design == "ab" else {}
        runs.append(Run(f"{name}", "box", "2026-01-01T00:00:00+00:00", {}, config, ms))
    return runs[0], runs[1], bimodal


# --- the candidate methods: each returns (ratio, p) per case --------------------------------


def _clean(m: Measurement) -> list[Round]:
    return [r for r in m.rounds if not r.contended] or list(m.rounds)


def m_samples_mwu(b: Measurement, c: Measurement, rng: np.random.Generator) -> tuple[float, float]:
    bs = np.array([x for r in _clean(b) for x in r.samples_s])
    cs = np.array([x for r in _clean(c) for x in r.samples_s])
    return float(np.median(cs) / np.median(bs)), cmp.mwu_pvalue(bs, cs)


def m_rounds_mwu(b: Measurement, c: Measurement, rng: np.random.Generator) -> tuple[float, float]:
    bm = np.array([r.median for r in _clean(b)])
    cm = np.array([r.median for r in _clean(c)])
    return float(np.median(cm) / np.median(bm)), cmp.mwu_pvalue(bm, cm)


def m_rounds_welch(b: Measurement, c: Measurement, rng: np.random.Generator) -> tuple[float, float]:
    st = cmp.welch_rounds_test([r.median for r in _clean(b)], [r.median for r in _clean(c)], 0.99)
    return st.ratio, st.p_value


def m_paired(b: Measurement, c: Measurement, rng: np.random.Generator) -> tuple[float, float]:
    bb = {r.index: r.median for r in _clean(b)}
    cc = {r.index: r.median for r in _clean(c)}
    keys = sorted(set(bb) & set(cc))
    st = cmp.paired_rounds_test([bb[k] for k in keys], [cc[k] for k in keys], 0.99)
    return st.ratio, st.p_value


def m_hier_boot(b: Measurement, c: Measurement, rng: np.random.Generator,
                resamples: int = 2000) -> tuple[float, float]:
    """Resample rounds, then samples within each drawn round; the ratio of the pooled medians.
    p: twice the share of resampled ratios on the far side of 1 (its resolution, 1/resamples,
    is why a Holm-corrected level needs thousands of resamples per case)."""
    def boot(m: Measurement) -> np.ndarray:
        rs = [np.asarray(r.samples_s) for r in _clean(m)]
        n = min(len(r) for r in rs)
        mat = np.stack([r[:n] for r in rs])  # rounds x samples
        pick = rng.integers(0, len(rs), (resamples, len(rs)))
        inner = rng.integers(0, n, (resamples, len(rs), n))
        drawn = mat[pick[:, :, None], inner].reshape(resamples, -1)
        return np.median(drawn, axis=1)

    def pooled(m: Measurement) -> float:
        return float(np.median([x for r in _clean(m) for x in r.samples_s]))

    ratio = pooled(c) / pooled(b)
    lr = np.log(boot(c) / boot(b))
    p = min(1.0, 2 * min(np.mean(lr <= 0), np.mean(lr >= 0)) + 1 / resamples)
    return ratio, float(p)


METHODS: dict[str, Callable[..., tuple[float, float]]] = {
    "samples-mwu": m_samples_mwu, "hier-boot": m_hier_boot, "rounds-mwu": m_rounds_mwu,
    "rounds-welch": m_rounds_welch, "paired": m_paired,
}


def verdicts(method: str, base: Run, cand: Run, rng: np.random.Generator) -> list[str]:
    if method == "suite":
        pairs = {p.case_id: p.verdict for p in cmp.compare([base], [cand], OPTIONS).pairs}
        return [pairs[c.id] for c in CASES]
    ratios, ps = zip(*(METHODS[method](b, c, rng) for b, c in
                       zip(base.measurements, cand.measurements, strict=True)), strict=True)
    adj = {"bh": cmp.benjamini_hochberg, "holm": cmp.holm}.get(OPTIONS.correction, list)(list(ps))
    return ["slower" if p < OPTIONS.alpha and r >= OPTIONS.upper else
            ("faster" if p < OPTIONS.alpha and r <= OPTIONS.lower else "other")
            for r, p in zip(ratios, adj, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", default="5,8")
    ap.add_argument("--methods", default="samples-mwu,hier-boot,rounds-mwu,rounds-welch,paired,suite")
    args = ap.parse_args()
    slowed = [i % 2 == 0 for i in range(len(CASES))]  # 8 of 16
    print("| model | design | rounds | method | A/A: gate fails | power (slowed, not bimodal) "
          "| unslowed called slower | bimodal called slower |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |")
    methods = args.methods.split(",")
    for model in MODELS:
        for design in ("ab", "separate"):
            for rounds in (int(x) for x in args.rounds.split(",")):
                names = [m for m in methods if m != "paired" or design == "ab"]
                tally = {m: [0, 0, 0, 0, 0] for m in names}  # aa fails, hits, chances, false, bimodal
                rng = np.random.default_rng([args.seed, rounds, len(model.name), len(design)])
                for _ in range(args.trials):  # the same simulated runs for every method
                    aa = simulate(model, design, rounds, [False] * 16, rng)
                    ab = simulate(model, design, rounds, slowed, rng)
                    for method in names:
                        t = tally[method]
                        t[0] += "slower" in verdicts(method, aa[0], aa[1], rng)
                        for i, verdict in enumerate(verdicts(method, ab[0], ab[1], rng)):
                            if ab[2][i]:
                                t[4] += verdict == "slower" and not slowed[i]
                            elif slowed[i]:
                                t[1] += verdict == "slower"
                                t[2] += 1
                            else:
                                t[3] += verdict == "slower"
                for method in names:
                    aa_fail, hits, chances, false, bim = tally[method]
                    print(f"| {model.name} | {design} | {rounds} | {method} | "
                          f"{aa_fail / args.trials:.1%} | {hits / max(chances, 1):.1%} | "
                          f"{false / (args.trials * 8):.2%} | {bim} |", flush=True)


if __name__ == "__main__":
    _ = sps  # scipy is what compare's tests use underneath
    main()
