#!/usr/bin/env python3
"""Can a verdict be trusted between runs, and on a busy machine? Measured, not assumed.

    python scripts/trust.py [--work /tmp/trust] [--only aa-ab,aa-runs,power,busy,asv]
                            [--aa-trials 20] [--runs 21] [--power-trials 20] [--busy-trials 10]
                            [--asv-runs 4] [--power-rounds R]

Everything runs serially on this machine, each command in its own process, exactly as a user
types it (``python -m bench_suite ...``), on the 16 cases of the trust workflow: matmul,
hadamard, matmul_backward and hadamard_backward; numpy and torch-cpu; float32; n=256 and 1024;
1 thread. Each trial's outcome is saved as it ends (``WORK/trust.json``), so an interrupted
session resumes where it stopped. The summary, printed last as Markdown, is what
docs/compare.md quotes:

* ``aa-ab``: ``bench-suite ab PY PY`` (A/A, defaults): how many trials exit 1; wall time.
* ``aa-runs``: ``bench-suite run`` N times (defaults), then ``compare`` of each run with the
  next: how many exit 1. Also the *honest ±* check: over every ordered pair of those runs and
  every case, whether the other run's median falls inside this run's interval.
* ``power``: ``ab PY CAND`` where CAND is a wrapper that slows every timed numpy call by 10%
  of real work (scripts/trust_plugins.py): how often each slowed case is called slower
  (cases the suite reports bimodal are exempt, and counted), and whether an unslowed
  (torch-cpu) case is ever called slower.
* ``busy``: ``ab PY CAND`` where CAND's cases run beside a busy loop (only while CAND
  measures), threads=1 and threads=all: no case may be called slower; contended ones are
  flagged "machine busy".
* ``asv``: the reference tool on the same cases: ``asv run`` N times on N commits of identical
  code, then ``asv compare --factor 1.1`` of each pair: how many report a regression.
* budget use: for cases that did not reach their target, the share of the time budget spent
  sampling (from the A/A runs' own records).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CASES = ["--ops", "matmul,hadamard,matmul_backward,hadamard_backward", "--backends", "numpy,torch-cpu",
         "--dtypes", "float32", "--sizes", "256,1024", "--threads", "1", "--grad-modes", "no_grad"]
BUSY_CASES = [*CASES[:-4], "--threads", "1,all", "--grad-modes", "no_grad"]
ASV_BENCH = r"time_op\('(numpy|torch-cpu)', 'float32', (256|1024), '1'(, 'no_grad')?\)"


class Journal:
    """Trial outcomes by experiment, saved after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, list[dict[str, Any]]] = json.loads(path.read_text()) if path.exists() else {}

    def trials(self, name: str) -> list[dict[str, Any]]:
        return self.data.setdefault(name, [])

    def add(self, name: str, trial: dict[str, Any]) -> None:
        self.trials(name).append(trial)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([PY, "-m", "bench_suite", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench-suite {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.returncode, time.perf_counter() - t0, done.stdout


def wrapper(path: Path, env: dict[str, str]) -> str:
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    path.write_text(f"#!/bin/sh\n{exports}exec '{PY}' \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def loadavg() -> float:
    return os.getloadavg()[0]


# --- experiments ----------------------------------------------------------------------------


def aa_ab(work: Path, j: Journal, trials: int) -> None:
    for t in range(len(j.trials("aa-ab")), trials):
        out = work / "aa-ab" / str(t)
        shutil.rmtree(out, ignore_errors=True)
        load0 = loadavg()
        rc, wall, _ = bench("ab", PY, PY, *CASES, "--out", str(out), "--quiet", "--format", "json",
                            "-o", str(out / "compare.json"))
        doc = load(out / "compare.json")
        j.add("aa-ab", {"rc": rc, "wall_s": wall, "slower": doc["regressions"], "load": load0,
                        "summary": doc["summary"], "folder": str(out)})
        print(f"aa-ab {t}: exit {rc} in {wall:.0f} s, slower {doc['regressions']}", flush=True)


def aa_runs(work: Path, j: Journal, runs: int) -> None:
    folder = work / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(j.trials("runs")), runs):
        path = folder / f"r{i:02d}.json"
        path.unlink(missing_ok=True)
        load0 = loadavg()
        rc, wall, _ = bench("run", *CASES, "--out", str(path), "--quiet")
        j.add("runs", {"path": str(path), "wall_s": wall, "rc": rc, "load": load0})
        print(f"run {i}: {wall:.0f} s", flush=True)
    for i in range(len(j.trials("aa-runs")), runs - 1):
        a, b = folder / f"r{i:02d}.json", folder / f"r{i + 1:02d}.json"
        out = work / "aa-runs" / f"{i}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        rc, _, _ = bench("compare", str(a), str(b), "--format", "json", "-o", str(out))
        doc = load(out)
        j.add("aa-runs", {"rc": rc, "slower": doc["regressions"], "summary": doc["summary"]})
        print(f"compare r{i} r{i + 1}: exit {rc}, slower {doc['regressions']}", flush=True)


def power(work: Path, j: Journal, trials: int, rounds: int | None = None) -> None:
    cand = wrapper(work / "cand-slow.sh", {"PYTHONPATH": f"{ROOT / 'scripts'}:{os.environ.get('PYTHONPATH', '')}",
                                           "BENCH_SUITE_BACKEND_PLUGINS": "trust_plugins:slow_numpy",
                                           "TRUST_SLOWDOWN": "0.10"})
    for t in range(len(j.trials("power")), trials):
        out = work / "power" / str(t)
        shutil.rmtree(out, ignore_errors=True)
        more = ["--rounds", str(rounds)] if rounds else []
        rc, wall, _ = bench("ab", PY, cand, *CASES, *more, "--out", str(out), "--quiet", "--format", "json",
                            "-o", str(out / "compare.json"))
        doc = load(out / "compare.json")
        pairs = [{k: p[k] for k in ("case_id", "backend", "verdict", "ratio", "flag", "p_adjusted")}
                 for p in doc["pairs"]]
        j.add("power", {"rc": rc, "wall_s": wall, "pairs": pairs})
        hit = sum(p["verdict"] == "slower" for p in pairs if p["backend"] == "numpy")
        print(f"power {t}: {hit}/8 numpy cases slower, exit {rc}, {wall:.0f} s", flush=True)


def busy(work: Path, j: Journal, trials: int) -> None:
    cand = wrapper(work / "cand-busy.sh", {"PYTHONPATH": f"{ROOT / 'scripts'}:{os.environ.get('PYTHONPATH', '')}",
                                           "BENCH_SUITE_BACKEND_PLUGINS": "trust_plugins:busy_neighbour"})
    for t in range(len(j.trials("busy")), trials):
        out = work / "busy" / str(t)
        shutil.rmtree(out, ignore_errors=True)
        rc, wall, _ = bench("ab", PY, cand, *BUSY_CASES, "--out", str(out), "--quiet", "--format", "json",
                            "-o", str(out / "compare.json"))
        doc = load(out / "compare.json")
        pairs = [{k: p[k] for k in ("case_id", "threads", "verdict", "ratio", "flag")} for p in doc["pairs"]]
        j.add("busy", {"rc": rc, "wall_s": wall, "pairs": pairs})
        flagged = sum(bool(p["flag"]) for p in pairs)
        print(f"busy {t}: exit {rc}, slower {doc['regressions']}, {flagged}/{len(pairs)} flagged", flush=True)


def asv(work: Path, j: Journal, runs: int) -> None:
    repo = work / "asv-repo"
    home = work / "asv-home"
    env = {"HOME": str(home), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "BENCH_SUITE_ASV_PRESET": "quick", "BENCH_SUITE_ASV_BACKENDS": "numpy,torch-cpu"}
    genv = {**os.environ, **env}
    if not repo.exists():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        for i in range(1, runs):  # identical code under different commits
            subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", f"a/a {i}"], check=True,
                           env={**genv, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(["asv", "machine", "--yes", "--machine", "trust"], cwd=repo, env=genv, check=True,
                       capture_output=True)
    commits = subprocess.run(["git", "-C", str(repo), "rev-list", f"-{runs}", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.split()[::-1]
    for i in range(len(j.trials("asv-runs")), runs):
        t0 = time.perf_counter()
        done = subprocess.run(["asv", "run", "--python=same", "--machine", "trust", "--set-commit-hash",
                               commits[i], "--bench", ASV_BENCH], cwd=repo, env=genv, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        j.add("asv-runs", {"commit": commits[i], "rc": done.returncode, "wall_s": wall})
        print(f"asv run {i}: exit {done.returncode} in {wall:.0f} s", flush=True)
    done_pairs = {tuple(t["pair"]) for t in j.trials("asv-aa")}
    for a, b in itertools.combinations(range(runs), 2):
        if (a, b) in done_pairs:
            continue
        out = subprocess.run(["asv", "compare", "--factor", "1.1", "--split", "--machine", "trust",
                              commits[a], commits[b]], cwd=repo, env=genv, capture_output=True, text=True).stdout
        worse = [line for line in out.splitlines() if line.strip().startswith("+")]
        j.add("asv-aa", {"pair": [a, b], "regression": "PERFORMANCE DECREASED" in out, "worse": worse})
        print(f"asv compare {a} {b}: {'regression' if 'PERFORMANCE DECREASED' in out else 'no regression'}",
              flush=True)


# --- the summary ------------------------------------------------------------------------------


def _runs(paths: list[str]) -> list[Any]:
    sys.path.insert(0, str(ROOT))
    import bench_suite

    return [bench_suite.load_runs([p])[0] for p in paths]


def honest(j: Journal) -> tuple[int, int]:
    runs = _runs([t["path"] for t in j.trials("runs")])
    inside = total = 0
    for a, b in itertools.permutations(runs, 2):
        bm = {m.id: m for m in b.measurements if m.status == "ok"}
        for m in a.measurements:
            if m.status != "ok" or m.id not in bm:
                continue
            s = m.summary
            total += 1
            inside += s.ci_low <= bm[m.id].summary.median <= s.ci_high
    return inside, total


def sampling_share(j: Journal) -> list[float]:
    """For rounds that ran out of budget before reaching the target (``stop == "budget"``):
    their sampling time over their share of the case's budget (the budget over the rounds).
    ``ab`` rounds stop when both sides have spent theirs ("paired"): counted too."""
    paths = [t["path"] for t in j.trials("runs")]
    for t in j.trials("aa-ab"):
        paths += [str(Path(t["folder"]) / "base.json"), str(Path(t["folder"]) / "cand.json")]
    out = []
    for run in _runs([p for p in paths if Path(p).exists()]):
        budget = run.config.get("timing", {}).get("time_budget_s")
        rounds = run.config.get("rounds", 1)
        if not budget or not isinstance(rounds, int) or rounds < 1:
            continue
        for m in run.measurements:
            if m.status == "ok":
                out += [r.wall_s / (budget / rounds) for r in m.rounds if r.stop in ("budget", "paired")]
    return sorted(out)


def summary(j: Journal) -> str:
    lines = ["| measurement | result | goal |", "| --- | --- | --- |"]
    aa = j.trials("aa-ab")
    if aa:
        walls = sorted(t["wall_s"] for t in aa)
        lines.append(f"| A/A, `ab` with the same interpreter on both sides | {sum(t['rc'] == 1 for t in aa)} of "
                     f"{len(aa)} trials exit 1 | at most 1 of 20 |")
        lines.append(f"| wall time of one `ab` on the 16 cases (defaults) | median {walls[len(walls) // 2]:.0f} s, "
                     f"max {walls[-1]:.0f} s | at most 90 s |")
    ar = j.trials("aa-runs")
    if ar:
        lines.append(f"| A/A, separate invocations: `run`, `run`, `compare` | {sum(t['rc'] == 1 for t in ar)} of "
                     f"{len(ar)} pairs exit 1 | at most 1 of 20 |")
        inside, total = honest(j)
        lines.append(f"| honest ±: another run's median inside a run's interval | {inside} of {total} "
                     f"({inside / max(total, 1):.0%}) | at least 80% |")
        rw = sorted(t["wall_s"] for t in j.trials("runs"))
        lines.append(f"| wall time of one `run` of the 16 cases (defaults: the quick preset, 4 rounds) | median "
                     f"{rw[len(rw) // 2]:.0f} s | |")
    pw = j.trials("power")
    if pw:
        per_case: dict[str, list[str]] = {}
        bimodal: dict[str, int] = {}
        false = 0
        for t in pw:
            for p in t["pairs"]:
                if p["backend"] == "numpy":
                    per_case.setdefault(p["case_id"], []).append(p["verdict"])
                    bimodal[p["case_id"]] = bimodal.get(p["case_id"], 0) + (p["flag"] == "bimodal")
                else:
                    false += p["verdict"] == "slower"
        worst = min((sum(v == "slower" for v in vs), c) for c, vs in per_case.items())
        exempt = [c for c, n in bimodal.items() if n > len(pw) // 2]
        counted = [sum(v == "slower" for v in vs) for c, vs in per_case.items() if c not in exempt]
        lines.append(f"| power: numpy 10% slower by real work, each slowed case called slower | "
                     f"worst {min(counted) if counted else 0} of {len(pw)} trials (all cases: worst "
                     f"{worst[0]}, {worst[1]}); bimodal-exempt: {len(exempt)} of 8 | at least 18 of 20; "
                     f"at most 2 exempt |")
        lines.append(f"| power: an unslowed (torch-cpu) case called slower | {false} times in {len(pw)} trials "
                     f"| never |")
    bz = j.trials("busy")
    if bz:
        slower = sum(p["verdict"] == "slower" for t in bz for p in t["pairs"])
        flagged = [sum(bool(p["flag"]) for p in t["pairs"]) for t in bz]
        n = len(bz[0]["pairs"])
        lines.append(f"| busy neighbour while CAND measures (threads=1 and all): a case called slower | "
                     f"{slower} in {len(bz)} trials; flagged per trial: {min(flagged)}-{max(flagged)} of {n} | "
                     f"never; contended cases flagged |")
    av = j.trials("asv-aa")
    if av:
        aw = sorted(t["wall_s"] for t in j.trials("asv-runs"))
        lines.append(f"| asv, side by side: `asv run` on identical commits, then `asv compare --factor 1.1` | "
                     f"{sum(t['regression'] for t in av)} of {len(av)} pairs report a regression; one "
                     f"`asv run` {aw[len(aw) // 2]:.0f} s | (reference) |")
    share = sampling_share(j)
    if share:
        lines.append(f"| rounds that did not reach their target: their budget spent sampling | "
                     f"min {share[0]:.0%}, median {share[len(share) // 2]:.0%} ({len(share)} rounds) | "
                     f"at least 80% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/trust")
    ap.add_argument("--only", default="aa-ab,aa-runs,power,busy,asv")
    ap.add_argument("--aa-trials", type=int, default=20)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--power-trials", type=int, default=20)
    ap.add_argument("--busy-trials", type=int, default=10)
    ap.add_argument("--power-rounds", type=int, help="ab --rounds for the power trials (default: ab's)")
    ap.add_argument("--asv-runs", type=int, default=4)
    ap.add_argument("--summary", action="store_true", help="only print the summary of what is saved")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    j = Journal(work / "trust.json")
    only = set(args.only.split(","))
    if not args.summary:
        steps = {"aa-ab": lambda: aa_ab(work, j, args.aa_trials),
                 "aa-runs": lambda: aa_runs(work, j, args.runs),
                 "power": lambda: power(work, j, args.power_trials, args.power_rounds),
                 "busy": lambda: busy(work, j, args.busy_trials),
                 "asv": lambda: asv(work, j, args.asv_runs)}
        for name, step in steps.items():
            if name in only:
                step()
    print(summary(j))
    _ = re


if __name__ == "__main__":
    main()
