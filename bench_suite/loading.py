"""Loading results from any source the suite understands, into Run records.

Sources: the suite's own run files (and journals of interrupted runs), folders of them.
Each file is identified by its content, never by its name alone, and nothing is unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bench_suite.errors import ResultsFileError
from bench_suite.results import JOURNAL_SUFFIX, Run, read_run_file


def _expand(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(x for x in p.rglob("*.json") if not x.name.startswith("."))
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
        else:
            raise ResultsFileError(f"{p}: no such file or folder")
    if not files:
        raise ResultsFileError("no results given")
    return files


def load_runs(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Run]:
    return [read_run_file(f) for f in _expand(paths)]
