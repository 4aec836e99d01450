#!/usr/bin/env python3
"""How often `bench-suite compare` calls a case slower, by simulation (not a test).

    python scripts/compare_power.py [--trials 1000] [--seed 0] [--outliers 0.03] [--sizes 10,20,40,100]

Seeded synthetic per-call times: lognormal with the given spread, plus a share
(``--outliers``, default 3%) of "preempted" samples 20-100% slow, as the runner sees them on a
quiet 1-thread core. For each sample count and true ratio, the share of trials per verdict
under the default options (threshold 5%, alpha 0.01, one case, so no correction).
Output: a Markdown table for docs/compare.md.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from bench_suite.analysis.compare import VERDICTS, CompareOptions, verdict_for_samples


def samples(rng: np.random.Generator, n: int, median: float, spread: float, outliers: float) -> np.ndarray:
    x = median * rng.lognormal(0.0, spread, n)
    return np.where(rng.random(n) < outliers, x * rng.uniform(1.2, 2.0, n), x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--outliers", type=float, default=0.03, help="share of preempted samples")
    ap.add_argument("--sizes", default="10,20,40,100", help="samples per side, comma-separated")
    args = ap.parse_args()
    opts = CompareOptions()
    print(f"| samples per side | spread | true ratio | {' | '.join(VERDICTS)} |")
    print("| ---: | ---: | ---: |" + " ---: |" * len(VERDICTS))
    for n in (int(x) for x in args.sizes.split(",")):
        for spread in (0.025, 0.05):
            for ratio in (1.0, 1.02, 1.05, 1.10, 1.20):
                rng = np.random.default_rng([args.seed, n, int(spread * 1000), int(ratio * 100)])
                count: Counter[str] = Counter()
                for _ in range(args.trials):
                    base = samples(rng, n, 1e-3, spread, args.outliers)
                    cand = samples(rng, n, 1e-3 * ratio, spread, args.outliers)
                    count[verdict_for_samples(base, cand, opts, rng)] += 1
                shares = " | ".join(f"{count[v] / args.trials:.1%}" for v in VERDICTS)
                print(f"| {n} | {spread:.1%} | {ratio:.2f} | {shares} |")


if __name__ == "__main__":
    main()
