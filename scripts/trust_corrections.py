#!/usr/bin/env python3
"""Which multiple-testing correction should `compare` use? Measured on saved trust trials.

    python scripts/trust_corrections.py [--work /tmp/trust] [--work /tmp/trust2 ...]

Re-judges the run files that ``scripts/trust.py`` kept (A/A ``ab`` trials, the pairs of
separate runs, and the power trials with numpy 10% slower) with ``compare`` under each
correction and alpha, and prints, as Markdown: how many A/A comparisons exit 1, and in the
power trials, the share of slowed cases called slower and how often an unslowed case was.
Nothing is measured again: the same files, judged by each rule.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_suite import load_runs  # noqa: E402
from bench_suite.analysis.compare import CompareOptions, compare  # noqa: E402

RULES = [("holm", 0.01), ("holm", 0.05), ("bh", 0.01), ("bh", 0.05), ("none", 0.01)]


def trials(work: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    journal = json.loads((work / "trust.json").read_text())
    ab = [(Path(t["folder"]) / "base.json", Path(t["folder"]) / "cand.json") for t in journal.get("aa-ab", [])]
    runs = [Path(t["path"]) for t in journal.get("runs", [])]
    pairs = list(itertools.pairwise(runs))
    power = sorted((p / "base.json", p / "cand.json") for p in (work / "power").glob("*")
                   if (p / "cand.json").exists())
    return ab, pairs, power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", action="append", default=None, help="a trust.py work folder (repeatable)")
    args = ap.parse_args()
    ab, pairs, power = [], [], []
    for work in args.work or ["/tmp/trust"]:
        a, p, w = trials(Path(work))
        ab, pairs, power = ab + a, pairs + p, power + w
    cache: dict[Path, list] = {}

    def runs(path: Path) -> list:
        if path not in cache:
            cache[path] = load_runs([path])
        return cache[path]

    print("| correction | alpha | A/A `ab` exit 1 | A/A separate runs exit 1 | slowed cases called slower "
          "| unslowed called slower |")
    print("| --- | --: | --: | --: | --: | --: |")
    for correction, alpha in RULES:
        o = CompareOptions(correction=correction, alpha=alpha)
        aa = sum(compare(runs(b), runs(c), o).has_regression for b, c in ab)
        sep = sum(compare(runs(b), runs(c), o).has_regression for b, c in pairs)
        hit = slowed = false = 0
        for b, c in power:
            for p in compare(runs(b), runs(c), o).pairs:
                if p.backend == "numpy":
                    slowed += 1
                    hit += p.verdict == "slower"
                else:
                    false += p.verdict == "slower"
        share = f"{hit} of {slowed} ({hit / slowed:.0%})" if slowed else "-"
        print(f"| {correction} | {alpha:g} | {aa} of {len(ab)} | {sep} of {len(pairs)} | {share} | {false} |")


if __name__ == "__main__":
    main()
