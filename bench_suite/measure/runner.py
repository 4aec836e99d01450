"""Walks a sweep: availability -> prepare -> verify -> time -> record.

Each measurement is appended to the run's journal the moment it exists, so an interrupted
run keeps every finished case. A failure inside a case (a wrong result, an exception, an
out-of-memory error) becomes a ``failed`` measurement and the sweep goes on; a case the
backend cannot run becomes ``skipped`` with the backend's reason. Nothing is dropped.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench_suite.backends import Backend, get_backend
from bench_suite.core import ops
from bench_suite.core.cases import Case, cpu_count, is_cuda_backend
from bench_suite.core.errors import OutputError, ResultsFileError, UsageError
from bench_suite.core.interference import is_contended
from bench_suite.core.timing import Clock, Gate, SamplingPlan
from bench_suite.env import collect as env_mod
from bench_suite.measure import harness
from bench_suite.measure.gpu.options import TimingMode, time_case
from bench_suite.measure.interference import Monitor
from bench_suite.measure.phases import time_phases
from bench_suite.store import codec
from bench_suite.store.results import JOURNAL_SUFFIX, Measurement, Round, Run, RunWriter


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def default_path(results_dir: Path, machine: str, run_id: str) -> Path:
    return Path(results_dir) / machine / f"{run_id}.json"


def resolve_out(out: str | Path | None, machine: str, run_id: str) -> Path:
    """``--out``: a ``.json`` file, or a folder that gets ``<run-id>.json``; default
    ``results/<machine>/<run-id>.json``."""
    if out is None:
        return default_path(Path("results"), machine, run_id)
    path = Path(out)
    if path.suffix == ".json":
        return path
    if path.name.endswith(JOURNAL_SUFFIX):
        return path.with_name(path.name[: -len(JOURNAL_SUFFIX)])
    return path / f"{run_id}.json"


#: Measures one case and never raises for a problem inside it (see :func:`run_case`).
MeasureCase = Callable[[Case], Measurement]


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def case_started(self, case: Case) -> None: ...
    def case_finished(self, measurement: Measurement) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def case_started(self, case: Case) -> None:
        pass

    def case_finished(self, measurement: Measurement) -> None:
        pass


@dataclass(frozen=True)
class RunOptions:
    """Everything one case's measurement depends on besides the case: the input seed, the
    sampling plan and the timing mode. Saved with a run, sent to workers.

    The one place options become JSON and come back (wire schemas: ``store.codec``): a run's
    config (:meth:`to_config`, :meth:`from_config`: ``seed``, ``timing``, ``gpu_options``) and
    a worker's measure request (:meth:`request_fields`, :meth:`from_request`: ``seed``,
    ``timing``, ``gpu``)."""

    seed: int = 0
    timing: SamplingPlan = field(default_factory=SamplingPlan)
    #: cold cache, CUDA graphs, NVML sampling (``measure.gpu``); all off but NVML-where-present
    gpu: TimingMode = field(default_factory=TimingMode)

    def to_config(self) -> dict[str, Any]:
        """The entries a run's config saves (``--resume`` reads them back)."""
        return {"seed": self.seed, "timing": asdict(self.timing), "gpu_options": asdict(self.gpu)}

    def request_fields(self) -> dict[str, Any]:
        """The options' fields of a worker's measure request."""
        return {"seed": self.seed, "timing": asdict(self.timing), "gpu": asdict(self.gpu)}

    @classmethod
    def from_config(cls, config: Any, where: str) -> RunOptions:
        """The options a run's config saved; a problem is one ResultsFileError naming
        ``where`` (the file) and the config entry."""
        doc = codec.decode(codec.SavedOptions, config, f"{where}: config")
        return cls._of(doc.seed, doc.timing, doc.gpu_options, f"{where}: config.timing")

    @classmethod
    def from_request(cls, request: codec.MeasureRequest) -> RunOptions:
        return cls._of(request.seed, request.timing, request.gpu, "worker request: timing")

    @classmethod
    def _of(cls, seed: int, timing: Any, gpu: Any, where: str) -> RunOptions:
        try:
            plan = SamplingPlan(**codec.plan_settings(timing))
        except (UsageError, TypeError, OverflowError) as exc:
            raise ResultsFileError(f"{where}: {exc}") from None
        return cls(seed=seed, timing=plan, gpu=TimingMode.from_config(gpu))


def run_case(
    case: Case,
    backend: Backend,
    options: RunOptions = RunOptions(),
    clock: Clock = time.perf_counter_ns,
    round_index: int = 0,
    gate: Gate | None = None,
) -> Measurement:
    """Measure one case (one round of it). Never raises for a problem inside the case: it
    is recorded.

    With the real clock, every sample is watched for interference (``measure.interference.Monitor``):
    disturbed samples are retaken, and the round records the contention it saw. A fake
    clock (tests) times simulated work, which the real machine's load has nothing to do with.
    """
    started = now_iso()
    t0 = time.perf_counter()

    def done(status: str, reason: str = "", **kw: Any) -> Measurement:
        return Measurement(case, status, reason, started_at=started,
                           wall_s=time.perf_counter() - t0, **kw)

    monitor = Monitor() if clock is time.perf_counter_ns else None
    try:
        with harness.ready(case, options.seed, backend) as ready:
            timing, extra = time_case(case, backend, ready.prepared, options.timing, clock, options.gpu,
                                      monitor=monitor, gate=gate)
            phases = time_phases(ready.prepared, backend, options.timing, clock)
            if phases:  # a training step: its forward, backward and update on their own
                extra = {**extra, "phases": phases}
            peak = ready.peak_memory_bytes()
    except harness.Unavailable as why:
        return done("skipped", str(why))
    except harness.WrongResult as wrong:
        finite = math.isfinite(wrong.rel_error)
        return done("failed", str(wrong), rel_error=wrong.rel_error if finite else None,
                    tolerance=wrong.tolerance, check=wrong.check, threads=wrong.threads,
                    device_name=wrong.device_name)
    except Exception as exc:  # recorded, never hidden: the case is failed, the sweep goes on
        return done("failed", describe_error(exc))
    seen = timing.interference
    # a GPU case's host side is one thread launching kernels
    threads = 1 if is_cuda_backend(case.backend) else (ready.threads or case.threads or cpu_count())
    gpu_shared = bool(_nvml_others(extra))
    return done(
        "ok",
        rounds=(Round(
            timing.samples_s, timing.number, timing.warmup_calls, timing.stop, index=round_index,
            started_at=started, wall_s=seen.wall_s if seen.known else timing.wall_s - timing.warmup_s,
            contention=seen.other_cores, steal=seen.steal_cores, wait_frac=seen.wait_frac,
            retaken=seen.retaken, contended=gpu_shared or is_contended(seen, threads, cpu_count()),
        ),),
        rel_error=ready.rel_error,
        tolerance=ready.tolerance,
        check=ready.check,
        threads=ready.threads,
        peak_mem_bytes=peak if peak is not None else ops.footprint_bytes(case),
        device_name=ready.device_name,
        extra=extra,
    )


def _nvml_others(extra: Mapping[str, Any]) -> list[Any]:
    """Other processes NVML saw on the card while a CUDA case ran (``env.nvml``)."""
    nvml = extra.get("nvml")
    others = nvml.get("other_processes") if isinstance(nvml, Mapping) else None
    return list(others) if isinstance(others, list) else []


def describe_error(exc: BaseException) -> str:
    """One line for a failed case: the exception's type and first line, OOM named as such."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in first.lower():
        return f"out of memory: {name}: {first}"[:500]
    return f"{name}: {first}"[:500]


def run_cases(
    cases: Sequence[Case],
    writer: RunWriter,
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
    backend_for: Callable[[str], Backend] = get_backend,
    skip_ids: Iterable[str] = (),
    clock: Clock = time.perf_counter_ns,
    measure_case: MeasureCase | None = None,
) -> list[Measurement]:
    """Run ``cases`` in order, appending each measurement to ``writer`` as it is made.

    ``skip_ids``: cases already measured (a resumed run). ``measure_case``: how to measure
    one case, instead of :func:`run_case` in this process (``isolation.IsolatedMeasure``
    runs each in a worker process). KeyboardInterrupt propagates after the finished cases
    are safely in the journal.
    """
    progress = progress or _Silent()
    done = set(skip_ids)
    todo = [c for c in cases if c.id not in done]
    progress.start(len(todo))
    backends: dict[str, Backend] = {}
    out = []
    for case in todo:
        progress.case_started(case)
        if measure_case is not None:
            m = measure_case(case)
        else:
            backend = backends.get(case.backend)
            if backend is None:
                backend = backends[case.backend] = backend_for(case.backend)
            m = run_case(case, backend, options, clock)
        writer.add(m)
        out.append(m)
        progress.case_finished(m)
    return out


def start_run(
    path: Path,
    cases: Sequence[Case],
    options: RunOptions,
    machine: str | None = None,
    config: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    env: Mapping[str, Any] | None = None,
) -> RunWriter:
    """Collect the environment and open the run's journal (fails early if unwritable).

    The case ids go into the run's config, so ``--resume`` continues exactly this list. A
    fresh run never replaces an existing run file or journal. ``env``: the environment to
    record, when it comes from elsewhere (``ab``: each side's interpreter).
    """
    for existing in (path, Path(str(path) + JOURNAL_SUFFIX)):
        if existing.exists():
            raise OutputError(f"{existing} already exists: choose another --out, or --resume it")
    if env is None:
        # Measured in worker processes (rounds), torch's details come from the first
        # worker: the parent need not import it.
        in_process = not (config or {}).get("rounds", 1) > 1
        wants_torch = in_process and any(c.backend != "numpy" for c in cases)
        env = env_mod.collect(machine, torch=wants_torch and _torch_installed())
    header = Run(
        run_id=run_id or path.stem,
        machine=env["machine"],
        created_at=now_iso(),
        env=env,
        config={**options.to_config(), **(config or {}),
                "case_ids": [c.id for c in cases]},
        measurements=(),
        complete=False,
    )
    return RunWriter(path, header)


def _torch_installed() -> bool:
    from bench_suite.backends.torch_backend import torch_installed

    return torch_installed()


# --- rounds -----------------------------------------------------------------------------------


class RoundMeasurer(Protocol):
    """Measures one round of a case in the round's process (``isolation.RoundWorkers``)."""

    def measure(self, case: Case, round_index: int) -> Measurement: ...
    def end_round(self) -> None: ...
    def environment(self, machine: str) -> dict[str, Any] | None: ...


@dataclass
class Rounds:
    """A sweep measured ``count`` times, each round in a fresh process, the cases of each
    round in a seeded random order (randomized multiple interleaved trials: a slow drift of
    the machine spreads over all cases instead of landing on the ones measured last)."""

    count: int
    measurer: RoundMeasurer
    order_seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 1000:
            raise UsageError(f"rounds must be 1..1000, not {self.count}")

    def config(self) -> dict[str, Any]:
        own = getattr(self.measurer, "config", None)
        return {"rounds": self.count, "order_seed": self.order_seed, **(own() if callable(own) else {})}


def round_order(cases: Sequence[Case], seed: int, index: int) -> list[Case]:
    """The cases of round ``index`` in their seeded random order (the same on every machine)."""
    order = list(cases)
    random.Random(f"bench-suite/{seed}/{index}").shuffle(order)
    return order


def done_rounds(measurements: Iterable[Measurement]) -> tuple[set[tuple[str, int]], set[str]]:
    """(case id, round) pairs already measured, and the cases found skipped (never retried)."""
    done = {(m.id, r.index) for m in measurements for r in m.rounds}
    skipped = {m.id for m in measurements if m.status == "skipped"}
    return done, skipped


def run_rounds(cases: Sequence[Case], writer: RunWriter, rounds: Rounds,
               progress: Progress | None = None) -> None:
    """Measure every round of every case not yet in ``writer``, appending each as it comes.

    A case found skipped (the backend cannot run it here) is not sent again in later rounds.
    After the first round, the round's process reports torch's part of the environment,
    which the parent does not import.
    """
    progress = progress or _Silent()
    done, skipped = done_rounds(writer.measurements)

    def todo(index: int) -> list[Case]:
        return [c for c in round_order(cases, rounds.order_seed, index)
                if (c.id, index) not in done and c.id not in skipped]

    total = sum(len(todo(i)) for i in range(rounds.count))
    progress.start(total)  # called again when the total shrinks (a case found skipped)
    want_env = "torch" not in writer.env
    for index in range(rounds.count):
        order = todo(index)
        if not order:
            continue
        try:
            for case in order:
                progress.case_started(case)
                m = rounds.measurer.measure(case, index)
                writer.add(m)
                done.add((case.id, index))
                progress.case_finished(m)
                if m.status == "skipped" and case.id not in skipped:
                    total -= sum((case.id, i) not in done for i in range(index + 1, rounds.count))
                    skipped.add(case.id)
                    progress.start(total)
            if want_env and any(c.backend != "numpy" for c in order):
                env = rounds.measurer.environment(writer.env.get("machine", ""))
                if env is not None and "torch" in env:
                    writer.update_env(torch=env["torch"])
                    want_env = False
        finally:
            rounds.measurer.end_round()


class RunInterrupted(Exception):
    """Ctrl-C during a sweep: the finished cases are saved in ``run``."""

    def __init__(self, run: Run):
        super().__init__(f"interrupted after {len(run.measurements)} cases")
        self.run = run


def run_sweep(
    cases: Sequence[Case],
    path: Path,
    options: RunOptions = RunOptions(),
    machine: str | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    backend_for: Callable[[str], Backend] = get_backend,
    measure_case: MeasureCase | None = None,
    rounds: Rounds | None = None,
) -> Run:
    """A whole run: open the journal, measure every case, write the final file atomically.

    ``rounds``: measure the sweep round by round in worker processes (``run --rounds``);
    its count and order seed go into the run's config.
    """
    config = {**(config or {}), **(rounds.config() if rounds is not None else {})}
    writer = start_run(path, cases, options, machine, config)
    return finish_sweep(writer, cases, options, progress, backend_for, measure_case, rounds)


def finish_sweep(
    writer: RunWriter,
    cases: Sequence[Case],
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
    backend_for: Callable[[str], Backend] = get_backend,
    measure_case: MeasureCase | None = None,
    rounds: Rounds | None = None,
) -> Run:
    """Measure the cases (or rounds) not yet in ``writer`` and write the final file (complete).

    Ctrl-C writes the final file marked incomplete and raises :class:`RunInterrupted`; any
    other error leaves the journal, which keeps every finished case.
    """
    try:
        if rounds is not None:
            run_rounds(cases, writer, rounds, progress)
        else:
            run_cases(cases, writer, options, progress, backend_for,
                      skip_ids=[m.id for m in writer.measurements], measure_case=measure_case)
    except KeyboardInterrupt:
        raise RunInterrupted(writer.finish(now_iso(), complete=False)) from None
    except BaseException:
        writer.close()  # the journal keeps what was measured
        raise
    try:
        return writer.finish(now_iso(), complete=True)
    finally:
        writer.close()
