"""bench-suite: verified, correctly timed benchmarks of matmul, the Hadamard product and
autograd backward across numpy, torch-cpu and torch-cuda.

The public API is small and pinned by a test: ``load_results`` (any run files, folders,
asv results or pytest-benchmark JSON into one tidy DataFrame), the records ``Case``,
``Measurement`` and ``Run``, and ``BenchSuiteError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench_suite.core.cases import Case
from bench_suite.core.errors import BenchSuiteError
from bench_suite.store.results import Measurement, Run

if TYPE_CHECKING:
    from collections.abc import Iterable
    from os import PathLike

    import pandas as pd

__all__ = ["BenchSuiteError", "Case", "Measurement", "Run", "load_results", "load_runs"]


def load_runs(paths: Iterable[str | PathLike[str]] | str | PathLike[str]) -> list[Run]:
    from bench_suite.store.loading import load_runs as _load_runs

    return _load_runs(paths)


def load_results(paths: Iterable[str | PathLike[str]] | str | PathLike[str]) -> pd.DataFrame:
    """One tidy row per measurement from run files, folders of them, asv results folders or
    pytest-benchmark JSON files."""
    from bench_suite.store.results import to_frame

    return to_frame(load_runs(paths))
