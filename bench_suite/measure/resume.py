"""Continuing an interrupted run (``bench-suite run --resume FILE``).

FILE is the final file of an interrupted run (``complete: false``, written on Ctrl-C) or the
journal of a killed one (``<run>.json.journal``). The run goes on under the same run id, in
the same file, with the same seed, timing and GPU timing settings, over the case list saved in
its config (``case_ids``); finished cases (ok, failed or skipped) are kept and not run again.

While it runs, the journal is the run's one copy on disk, as for any run in progress: it is
seeded with every measurement so far (atomically: see ``results.RunWriter``), then the stale
incomplete final file is removed, so a folder never shows the run twice or half.

Refused, with one line: a complete run, a file that is not a bench-suite run, a run that does
not record its case list, and a run started on another host or with other package versions
(its measurements would no longer come from one environment).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench_suite.backends import Backend, get_backend
from bench_suite.core.cases import Case, parse_case_id
from bench_suite.core.errors import BenchSuiteError, ResultsFileError, UsageError
from bench_suite.env import collect as env_mod
from bench_suite.measure.runner import MeasureCase, Progress, Rounds, RunOptions, done_rounds, finish_sweep, now_iso
from bench_suite.store.env_record import EnvRecord
from bench_suite.store.results import JOURNAL_SUFFIX, Measurement, Run, RunWriter, journal_path, read_run_file


@dataclass(frozen=True)
class Resumable:
    """An interrupted run, read back and checked, ready to continue."""

    path: Path  # the run's final file
    run: Run  # its header and every measurement so far
    cases: tuple[Case, ...]  # the whole sweep, in its order
    options: RunOptions

    @property
    def remaining(self) -> tuple[Case, ...]:
        """Cases with a round still to measure (any round, with ``--rounds``)."""
        done, skipped = done_rounds(self.run.measurements)
        rounds = range(self.rounds) if self.rounds > 1 else (None,)
        measured = {m.id for m in self.run.measurements}
        return tuple(c for c in self.cases if c.id not in skipped and any(
            (c.id not in measured) if r is None else ((c.id, r) not in done) for r in rounds))

    @property
    def rounds(self) -> int:
        value = self.run.config.get("rounds", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000 else 1

    @property
    def order_seed(self) -> int:
        value = self.run.config.get("order_seed", 0)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    @property
    def progress_text(self) -> str:
        todo = len(self.remaining)
        text = f"{len(self.cases) - todo} of {len(self.cases)} cases done, {todo} to go"
        return text + (f" (in {self.rounds} rounds)" if self.rounds > 1 else "")

    @property
    def isolate(self) -> bool:
        return self.run.config.get("isolate") is True

    @property
    def case_timeout_s(self) -> float | None:
        value = self.run.config.get("case_timeout_s")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_resumable(file: str | os.PathLike[str]) -> Resumable:
    """Read an interrupted run (its final file, its journal, or both) and check it can go on."""
    given = Path(file)
    if given.name.endswith(JOURNAL_SUFFIX):
        path = given.with_name(given.name[: -len(JOURNAL_SUFFIX)])
    else:
        path = given
    journal = journal_path(path)
    if not path.exists() and not journal.exists():
        raise ResultsFileError(f"{given}: no such file")
    # Both can exist: a resumed run killed again leaves the old final file's measurements in
    # its journal, and a run killed while finishing leaves a journal beside its final file.
    parts = [read_run_file(p) for p in (path, journal) if p.exists()]
    run = parts[0]
    for other in parts[1:]:
        if (other.run_id, other.machine) != (run.run_id, run.machine):
            raise ResultsFileError(f"{path} and {journal} belong to different runs")
    if run.source != "bench-suite":
        raise ResultsFileError(f"{given}: a {run.source} result, not a bench-suite run: nothing to resume")
    if any(p.complete for p in parts):
        raise UsageError(f"{given}: run {run.run_id} is complete: nothing to resume")
    merged: dict[str, Measurement] = {}
    for part in parts:
        for m in part.measurements:
            merged.setdefault(m.id, m)
    run = replace(run, measurements=tuple(merged.values()), path=str(path))
    _check_same_environment(run, given)
    return Resumable(path, run, _saved_cases(run.config, given), RunOptions.from_config(run.config, str(given)))


def resume_run(
    state: Resumable,
    progress: Progress | None = None,
    measure_case: MeasureCase | None = None,
    backend_for: Callable[[str], Backend] = get_backend,
    config: Mapping[str, Any] | None = None,
    rounds: Rounds | None = None,
) -> Run:
    """Measure the cases the run still lacks, then write its final file (as ``run_sweep``).

    ``config``: entries to add to the run's config (how the rest is measured: isolation).
    """
    config = {**state.run.config, **(config or {})}
    config["resumed_at"] = [*_strings(config.get("resumed_at")), now_iso()]
    header = replace(state.run, config=config, complete=False, finished_at="")
    writer = RunWriter(state.path, header)  # the journal now holds every measurement so far
    with contextlib.suppress(FileNotFoundError):
        state.path.unlink()  # the stale incomplete final file: the journal supersedes it
    return finish_sweep(writer, state.cases, state.options, progress, backend_for, measure_case, rounds)


def _check_same_environment(run: Run, given: Path) -> None:
    env = EnvRecord.of(run.env)
    host = env.hostname
    if host and host != socket.gethostname():
        raise UsageError(
            f"{given}: run {run.run_id} was started on host {host!r}, this is "
            f"{socket.gethostname()!r}: resume it there, or start a new run"
        )
    saved = env.packages
    if saved:
        now = env_mod.package_versions()
        changed = [f"{k} {saved[k]} -> {now[k]}" for k in now if k in saved and saved[k] != now[k]]
        if changed:
            raise UsageError(
                f"{given}: packages changed since run {run.run_id} started ({', '.join(changed)}): "
                "its measurements would not come from one environment; start a new run"
            )


def _saved_cases(config: Mapping[str, Any], given: Path) -> tuple[Case, ...]:
    ids = config.get("case_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ResultsFileError(
            f"{given}: cannot resume: the run does not record its case list (config.case_ids)"
        )
    try:
        cases = tuple(parse_case_id(i) for i in dict.fromkeys(ids))
    except BenchSuiteError as exc:
        raise ResultsFileError(f"{given}: config.case_ids: {exc}") from None
    return cases


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
