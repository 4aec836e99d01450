"""Loading results from any source the suite understands, into Run records.

Sources: the suite's own run files (and journals of interrupted runs), folders of them, asv
results folders and files, and pytest-benchmark JSON files (the last two: sources.py).
Each file is identified by its content, never by its name alone, and nothing is unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bench_suite.core.errors import ResultsFileError
from bench_suite.store.noise import is_noise_file
from bench_suite.store.peaks import is_peaks_file
from bench_suite.store.results import JOURNAL_SUFFIX, Run
from bench_suite.store.runset import dedupe


def _expand(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # peaks and noise files (bench-suite peaks, calibrate) live beside run files; they
            # are not runs
            found = sorted(x for x in p.rglob("*.json")
                           if not x.name.startswith(".") and not is_peaks_file(x) and not is_noise_file(x))
            # a journal whose run never finished has no final file beside it
            found += sorted(
                j for j in p.rglob(f"*.json{JOURNAL_SUFFIX}")
                if not j.with_name(j.name[: -len(JOURNAL_SUFFIX)]).exists()
            )
            if not found:
                raise ResultsFileError(f"{p}: no run files in this folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        elif p.with_name(p.name + JOURNAL_SUFFIX).is_file():
            files.append(p.with_name(p.name + JOURNAL_SUFFIX))  # a run still in progress
        else:
            raise ResultsFileError(f"{p}: no such file or folder")
    if not files:
        raise ResultsFileError("no results given")
    return files


def load_runs(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Run]:
    # By content: the suite's run files, asv results, pytest-benchmark JSON (see sources.py).
    from bench_suite.store.sources import read_results_file

    files = _expand(paths)
    # a run set and the ranks' own files beside it hold the same runs: each is read once
    runs = dedupe([run for f in files for run in read_results_file(f)])
    if not runs:  # only asv's benchmarks.json / machine.json: lists, not results
        raise ResultsFileError(f"{files[0]}: no results in it (asv's benchmarks.json and machine.json "
                               "list benchmarks and machines; give the results folder)")
    return runs
