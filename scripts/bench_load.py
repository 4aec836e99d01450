#!/usr/bin/env python3
"""How long loading a large run file takes (``store.results.read_run_file``, the codec).

    python scripts/bench_load.py [--samples 1000000] [--repeat 3]

Writes a run file of ``--samples`` samples (100 measurements of the example run's first case,
its rounds refilled with seeded random times) to a temporary folder, then loads it
``--repeat`` times in this process and prints each time. To compare two checkouts, run it with
each on ``PYTHONPATH`` in turn, in the same hour.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench_suite.store.results import read_run_file

EXAMPLE = Path(__file__).resolve().parent.parent / "reports" / "example" / "run.json"


def write_big_run(path: Path, samples: int, measurements: int = 100) -> None:
    doc = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    first = doc["measurements"][0]
    per_round = samples // (measurements * len(first["rounds"]))
    rng = random.Random(0)
    ms = []
    for _ in range(measurements):
        m = json.loads(json.dumps(first))
        for r in m["rounds"]:
            r["samples_s"] = [rng.uniform(1e-3, 2e-3) for _ in range(per_round)]
        ms.append(m)
    doc["measurements"] = ms
    path.write_text(json.dumps(doc), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        write_big_run(path, args.samples)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            run = read_run_file(path)
            dt = time.perf_counter() - t0
            n = sum(len(m.samples_s) for m in run.measurements)
            print(f"{path.stat().st_size / 1e6:.1f} MB, {n} samples: read_run_file {dt:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
