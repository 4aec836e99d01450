#!/usr/bin/env python3
"""What the newer ops add to ``run --preset quick``: measured side by side, not assumed.

    python scripts/quick_cost.py [--pairs 3] [--work /tmp/quick-cost]

Runs, alternately and serially, each exactly as a user types it (a fresh process, imports
included, ``--quiet``):

* ``all``: ``bench-suite run --preset quick``;
* ``blocks``: the same with ``--ops matmul,hadamard,matmul_backward,hadamard_backward``
  (the quick preset as it was before the layer, training step, bmm and copies).

Alternating puts both sides in the same hour of a shared machine, so their difference is the
newer ops' cost and not the machine's mood. Prints one Markdown table, a row per pair, and the
median difference (issue 12's target: at most 15 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BLOCKS = "matmul,hadamard,matmul_backward,hadamard_backward"


def timed_run(out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "bench_suite", "run", "--preset", "quick", "--quiet",
           "--out", str(out), *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/quick-cost"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(args.pairs):
        # the side that goes first alternates too: a machine warming up favours neither
        sides = [("all", []), ("blocks", ["--ops", BLOCKS])]
        if i % 2:
            sides.reverse()
        walls = {name: timed_run(args.work / f"{name}-{i}.json", extra) for name, extra in sides}
        rows.append(walls)
        print(f"pair {i + 1}: all {walls['all']:.1f} s, blocks {walls['blocks']:.1f} s",
              file=sys.stderr, flush=True)
    print("| pair | quick (all ops) | quick, building blocks only | the newer ops' cost |")
    print("| --: | --: | --: | --: |")
    for i, w in enumerate(rows, 1):
        print(f"| {i} | {w['all']:.1f} s | {w['blocks']:.1f} s | {w['all'] - w['blocks']:+.1f} s |")
    diffs = [w["all"] - w["blocks"] for w in rows]
    print(f"\nmedian cost of the newer ops: {statistics.median(diffs):+.1f} s "
          f"(range {min(diffs):+.1f} to {max(diffs):+.1f} s, {len(diffs)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
