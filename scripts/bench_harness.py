#!/usr/bin/env python3
"""Measure the harness itself, beside public tools, on this machine (not a test).

    python scripts/bench_harness.py [--skip-quick] [--json FILE]

1. Per-call overhead on a no-op callable: bench-suite's clock loop vs ``timeit``.
2. Median of numpy and torch-cpu float32 matmul n=512 at 1 thread: bench-suite vs ``timeit``
   vs ``torch.utils.benchmark.Timer`` on the same inputs, interleaved to share the noise.
3. Wall time of ``bench-suite run --preset quick`` (a fresh process: imports included).
4. Seconds spent per case at the default 1% target, for ops of 100 µs and longer.

Figures go to stdout as Markdown (for docs/performance.md) and, with --json, to a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from bench_suite import load_results
from bench_suite.backends import get_backend
from bench_suite.core import ops
from bench_suite.core.cases import Case
from bench_suite.core.timing import HostTimer, SamplingPlan, measure


def noop() -> None:
    return None


def timeit_median(fn: object, repeat: int = 15, min_time: float = 0.02) -> float:
    t = timeit.Timer(fn)  # type: ignore[arg-type]
    number, _ = t.autorange()
    while number * 1e-9 < min_time and number < 10**9:
        per = t.timeit(number) / number
        if per * number >= min_time:
            break
        number *= 2
    return statistics.median(x / number for x in t.repeat(repeat, number))


def suite_median(fn: object, budget: float = 1.0) -> float:
    cfg = SamplingPlan(time_budget_s=budget)
    res = measure(fn, HostTimer(), cfg)  # type: ignore[arg-type]
    return statistics.median(res.samples_s)


def overhead(rounds: int = 7) -> dict[str, float]:
    suite = [suite_median(noop, 0.3) for _ in range(rounds)]
    ref = [timeit_median(noop) for _ in range(rounds)]
    return {"suite_ns": statistics.median(suite) * 1e9, "timeit_ns": statistics.median(ref) * 1e9}


def matmul_agreement(backend: str, rounds: int = 5) -> dict[str, float]:
    case = Case("matmul", backend, "float32", (512, 512, 512), threads=1)
    b = get_backend(backend)
    prepared = b.prepare(case, ops.make_inputs(case, 0))
    out: dict[str, list[float]] = {"suite": [], "timeit": [], "torch_timer": []}
    with b.threads(1):
        fn = prepared.call
        fn()
        from torch.utils.benchmark import Timer

        torch_timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=1)
        for _ in range(rounds):  # interleaved: each tool sees the same machine state
            out["suite"].append(suite_median(fn, 1.0))
            out["timeit"].append(timeit_median(fn, repeat=15, min_time=0.05))
            out["torch_timer"].append(torch_timer.blocked_autorange(min_run_time=1.0).median)
    return {k: statistics.median(v) for k, v in out.items()}


def quick_wall() -> tuple[float, Path]:
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench_suite", "run", "--preset", "quick", "--quiet",
                    "--out", str(tmp)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, next(tmp.glob("*.json"))


def per_case_seconds() -> dict[str, float]:
    """Cases of 100 µs and longer, at the default target and default (1 s) budget."""
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, "-m", "bench_suite", "run", "--backends", "numpy,torch-cpu",
                    "--sizes", "512,1024", "--threads", "1", "--grad-modes", "no_grad", "--quiet",
                    "--time-budget", "1.0", "--out", str(tmp)], check=True, stdout=subprocess.DEVNULL)
    df = load_results([tmp])
    df = df[(df.status == "ok") & (df.median_s >= 100e-6)]
    conv = df[df.converged]
    for row in df.itertuples():
        print(f"|   {row.case_id} | {row.median_s * 1e3:.3f} ms | ±{row.rel_ci:.2%} | {row.n_samples} samples "
              f"| {row.wall_s:.3f} s | {'converged' if row.converged else 'budget'} |")
    return {
        "cases": float(len(df)),
        "median_wall_s": float(df.wall_s.median()),
        "max_wall_s": float(df.wall_s.max()),
        "converged_fraction": float(df.converged.mean()),
        "converged_median_wall_s": float(conv.wall_s.median()),
        "converged_within_half_second": float((conv.wall_s <= 0.5).mean()),
        "median_samples": float(df.n_samples.median()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-quick", action="store_true", help="skip the quick-preset wall time")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    res: dict[str, object] = {}
    res["overhead"] = o = overhead()
    print(f"| no-op per call | bench-suite {o['suite_ns']:.1f} ns | timeit {o['timeit_ns']:.1f} ns "
          f"| difference {o['suite_ns'] - o['timeit_ns']:+.1f} ns |")
    for backend in ("numpy", "torch-cpu"):
        res[backend] = m = matmul_agreement(backend)
        print(f"| {backend} matmul 512 fp32 1 thread | bench-suite {m['suite'] * 1e3:.4f} ms "
              f"| timeit {m['timeit'] * 1e3:.4f} ms ({m['suite'] / m['timeit'] - 1:+.2%}) "
              f"| torch Timer {m['torch_timer'] * 1e3:.4f} ms ({m['suite'] / m['torch_timer'] - 1:+.2%}) |")
    if not args.skip_quick:
        wall, _path = quick_wall()
        res["quick_wall_s"] = wall
        print(f"| run --preset quick | {wall:.1f} s wall, imports included |")
    res["per_case"] = pc = per_case_seconds()
    print(f"| per case, ops >= 100 µs, 1% target | median {pc['median_wall_s']:.3f} s, max "
          f"{pc['max_wall_s']:.3f} s over {pc['cases']:.0f} cases; {pc['converged_fraction']:.0%} converged, "
          f"median {pc['median_samples']:.0f} samples; converged cases: median {pc['converged_median_wall_s']:.3f} s, "
          f"{pc['converged_within_half_second']:.0%} within 0.5 s |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=float))
    np.set_printoptions()


if __name__ == "__main__":
    main()
