"""Measuring in worker processes: rounds (``run --rounds``), A/B sides (``ab``) and fault
isolation (``--isolate``).

A :class:`Worker` is a spawned ``python -m bench_suite.measure.worker --serve`` (never forked from a
parent that may hold a CUDA context), in its own session, that measures the cases it is sent
one at a time. How long a worker lives decides what it isolates:

* :class:`RoundWorkers`: one worker per *round* of a sweep, so each round runs in a fresh
  process (memory layout, thread placement and import state vary as between real runs), or,
  with ``isolate``, one per case and round;
* :class:`IsolatedMeasure`: one worker per case (``--isolate`` with a single round).

A segfault, an abort, a hang or a fatal CUDA error inside one case kills only its worker: the
case is recorded as ``failed`` with the reason (the signal, the exit status, or "timed out after
N s") and the next case gets a fresh worker. Ctrl-C reaches only the parent, which then stops
the worker itself. Requests and replies are JSON lines (``worker.py``): nothing is pickled.

Workers get their backends through ``backends.get_backend``, which honours the testing hook
``$BENCH_SUITE_BACKEND_PLUGINS`` (inherited by workers): tests inject failing backends there,
and ``ab`` users a slowed one.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import msgspec

from bench_suite.core.cases import Case
from bench_suite.core.errors import BenchSuiteError, UsageError
from bench_suite.core.timing import SamplingPlan
from bench_suite.env.system import process_cpu_ns
from bench_suite.measure.runner import Rounds, RunOptions, now_iso
from bench_suite.store import codec
from bench_suite.store.codec import PROTOCOL, parse_json
from bench_suite.store.results import Measurement, Round, measurement_from_doc

#: Default timeout = BASE + PER_BUDGET * the case's time budget. The base covers starting an
#: interpreter, importing torch, initialising CUDA and verifying a large result.
TIMEOUT_BASE_S = 30.0
TIMEOUT_PER_BUDGET = 10.0
#: A worker that has not said hello by then is not going to (its interpreter is broken).
START_TIMEOUT_S = 60.0
#: How much of a failed worker's output is kept in the measurement's ``extra``.
OUTPUT_TAIL_CHARS = 2000

# Lines of Python's fatal-error and traceback dumps: they say where, not what happened.
_NOISE = ("Fatal Python error", "Current thread", "Thread 0x", "Extension modules",
          "Stack (most recent", "Traceback (most recent", "<no Python frame>")


def default_timeout_s(timing: SamplingPlan) -> float:
    return TIMEOUT_BASE_S + TIMEOUT_PER_BUDGET * timing.time_budget_s


class WorkerStartError(BenchSuiteError):
    """An interpreter that cannot run the worker (missing, not executable, no bench-suite)."""


class Worker:
    """One worker process, alive until :meth:`close`. ``env``: its whole environment."""

    def __init__(self, python: str, env: Mapping[str, str]):
        self.python = python
        self.env = dict(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.hello: dict[str, Any] = {}
        self._rfd = -1
        self._buf = b""
        self._log: IO[bytes] | None = None
        self.ended = ""  # how the worker ended, in words, once it has

    # -- life cycle ----------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Spawn the worker and wait for its hello; WorkerStartError if it never comes."""
        rfd, wfd = os.pipe()
        self._log = tempfile.TemporaryFile(prefix="bench-suite-worker-")  # noqa: SIM115 (lives with the worker)
        env = {**self.env, "BENCH_SUITE_PARENT_PID": str(os.getpid())}
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", "bench_suite.measure.worker", "--serve", "--result-fd", str(wfd)],
                stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                pass_fds=(wfd,), start_new_session=True,
            )
        except OSError as exc:
            os.close(rfd)
            os.close(wfd)
            self._close_log()
            raise WorkerStartError(f"cannot start {self.python}: {exc.strerror or exc}") from None
        os.close(wfd)
        self._rfd = rfd
        reply = self._reply(timeout_s)
        hello, why = None, reply if isinstance(reply, str) else ""
        if isinstance(reply, dict):
            try:
                hello = codec.decode(codec.HelloReply, reply, "its hello").hello
            except BenchSuiteError as exc:
                why = f"it answered in another protocol ({exc})"
        if hello is None:
            last = _last_words(self.output_tail())
            self.kill()
            raise WorkerStartError(f"{self.python} cannot run bench-suite's worker: {why}"
                                   + (f": {last}" if last else ""))
        self.hello = msgspec.to_builtins(hello)
        return self.hello

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.ended

    def close(self, grace_s: float = 5.0) -> None:
        """End of input: the worker exits; killed if it does not within ``grace_s``."""
        if self.proc is None:
            return
        if not self.ended:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                _kill(self.proc)
            self.ended = "closed"
        self._cleanup()

    def kill(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
            self.ended = self.ended or "killed"
        self._cleanup()

    def _cleanup(self) -> None:
        if self._rfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._rfd)
            self._rfd = -1
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and exc[0] is not GeneratorExit:
            self.kill()
        else:
            self.close()

    # -- requests ------------------------------------------------------------------------

    def request(self, doc: Mapping[str, Any], timeout_s: float) -> dict[str, Any] | str:
        """Send one request; its reply, or how the worker ended without one (in words)."""
        if not self.send(doc):
            return self.ended or "worker not started"
        return self._reply(timeout_s)

    def send(self, doc: Mapping[str, Any]) -> bool:
        """Send a request without waiting for its reply (:meth:`reply` reads it)."""
        if self.proc is None or self.proc.stdin is None or self.ended:
            return False
        try:
            self.proc.stdin.write(codec.encode_line({"protocol": PROTOCOL, **doc}).encode())
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: the reply read next says how
        return True

    def reply(self, timeout_s: float) -> dict[str, Any] | str:
        return self._reply(timeout_s)

    def _reply(self, timeout_s: float) -> dict[str, Any] | str:
        line = self._readline(timeout_s)
        if line is None:
            return self.ended
        try:
            doc = parse_json(line.decode("utf-8", "replace"), "worker reply")
        except BenchSuiteError as exc:
            self.kill()
            self.ended = f"worker returned an unreadable result ({exc})"
            return self.ended
        if not isinstance(doc, dict):
            self.kill()
            self.ended = "worker returned an unreadable result"
            return self.ended
        return doc

    def _readline(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        try:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill(self.proc)  # type: ignore[arg-type]
                    self.ended = f"timed out after {timeout_s:g} s (worker killed)"
                    return None
                ready, _, _ = select.select([self._rfd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(self._rfd, 1 << 16)
                if not chunk:  # the worker closed its end: it died
                    rc = self.proc.wait() if self.proc is not None else 0
                    self.ended = describe_exit(rc)
                    return None
                self._buf += chunk
        except BaseException:  # Ctrl-C: the worker is in its own session and must be stopped
            self.kill()
            raise
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def output_tail(self, chars: int = 4 * OUTPUT_TAIL_CHARS) -> str:
        if self._log is None:
            return ""
        try:
            size = self._log.seek(0, os.SEEK_END)
            self._log.seek(max(0, size - chars))
            return self._log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cpu_ns(self) -> int | None:
        """CPU time its threads have used (``schedstat``), to see when it has gone quiet."""
        if self.proc is None:
            return None
        return process_cpu_ns(self.proc.pid)

    # -- one case ------------------------------------------------------------------------

    def measure(self, case: Case, options: RunOptions, timeout_s: float, round_index: int = 0,
                started: str = "", t0: float | None = None) -> Measurement:
        """One case in this worker: its measurement, or a failed one saying how the worker
        ended (the worker is then dead; start another for the next case)."""
        started = started or now_iso()
        t0 = time.perf_counter() if t0 is None else t0
        reply = self.request(measure_request(case, options, timeout_s, round_index), timeout_s)
        return self.measurement(case, reply, started, t0)

    def measurement(self, case: Case, reply: dict[str, Any] | str, started: str, t0: float) -> Measurement:
        """The measurement a reply carries, or a failed one saying how the worker ended
        without it (the worker is then dead)."""
        if isinstance(reply, dict):
            m = _measurement_from(reply, case)
            if isinstance(m, Measurement):
                return m
            reason = m
        else:
            reason = reply
        output = self.output_tail()
        self.kill()
        last = _last_words(output)
        if last and not reason.startswith("timed out"):
            reason = f"{reason}: {last}"
        return Measurement(case, "failed", reason[:500], started_at=started,
                           wall_s=time.perf_counter() - t0,
                           extra={"isolated": True, "worker_output": output[-OUTPUT_TAIL_CHARS:]})

    def environment(self, machine: str, timeout_s: float = 120.0) -> dict[str, Any] | None:
        """The environment as this worker's interpreter sees it, or None if it cannot say."""
        reply = self.request({"cmd": "env", "machine": machine}, timeout_s)
        try:
            return codec.decode(codec.EnvReply, reply, "worker env").env if isinstance(reply, dict) else None
        except BenchSuiteError:
            return None


def measure_request(case: Case, options: RunOptions, timeout_s: float, round_index: int = 0,
                    **more: Any) -> dict[str, Any]:
    """The worker request that measures ``case`` (``more``: lockstep, siblings)."""
    return {"case": case.to_dict(), **options.request_fields(), "round": round_index, "timeout_s": timeout_s,
            **more}


def wait_until_quiet(worker: Worker, quiet_s: float = 0.01, limit_s: float = 0.5,
                     busy_frac: float = 0.1) -> float:
    """Wait until ``worker`` uses less than ``busy_frac`` of a core over ``quiet_s``, at most
    ``limit_s``; the seconds waited.

    After a case, BLAS and OpenMP pools spin-wait for work for up to a tenth of a second. A
    worker that hands over to another (``ab``) waits for its pools to go to sleep first, so
    that they do not take cores from the case measured next.
    """
    t0 = time.monotonic()
    last = worker.cpu_ns()
    if last is None:
        return 0.0
    while time.monotonic() - t0 < limit_s:
        time.sleep(quiet_s)
        now = worker.cpu_ns()
        if now is None or now - last < busy_frac * quiet_s * 1e9:
            break
        last = now
    return time.monotonic() - t0


def describe_exit(rc: int) -> str:
    """Why a worker that left no result ended, in words: its exit status or its signal."""
    if rc == 0:
        return "worker exited without a result"
    if rc > 0:
        return f"worker exited with status {rc}"
    try:
        sig = signal.Signals(-rc)
    except ValueError:
        return f"worker killed by signal {-rc}"
    text = f"worker killed by {sig.name} ({signal.strsignal(sig) or sig.name})"
    if sig == signal.SIGKILL:
        text += "; out of host memory? (the kernel's OOM killer sends SIGKILL)"
    return text


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _measurement_from(reply: Any, case: Case) -> Measurement | str:
    """The worker's measurement, or why it cannot be used."""
    try:
        m = measurement_from_doc(codec.decode(codec.MeasurementReply, reply, "worker result").measurement)
    except BenchSuiteError as exc:
        return f"worker returned an unreadable result ({exc})"
    if m.id != case.id:
        return f"worker measured {m.id}, not {case.id}"
    return m


def _last_words(output: str) -> str:
    """The last line of a dead worker's output that says what happened."""
    for line in reversed(output.splitlines()):
        if line.strip() and not line[0].isspace() and not line.startswith(_NOISE):
            return line.strip()[:300]
    return ""


def worker_env(extra: Mapping[str, str] = {}, own_package: bool = True) -> dict[str, str]:
    """The environment workers start with: ours, plus ``extra``.

    ``own_package``: make the worker import this same bench_suite (a source tree run with
    PYTHONPATH, an editable install); a site-packages folder is never put ahead of the
    standard library. ``ab`` turns it off: each side's interpreter imports its own.
    """
    env = {**os.environ, **extra}
    root = Path(__file__).resolve().parents[2]  # the folder that holds bench_suite/
    if own_package and root.name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and not (math.isfinite(timeout_s) and 0 < timeout_s <= 7 * 86_400):
        raise UsageError(f"case timeout must be a positive number of seconds, not {timeout_s!r}")
    return None if timeout_s is None else float(timeout_s)


def with_round(m: Measurement, index: int) -> Measurement:
    """``m`` as round ``index`` of its case: its round renumbered, or an empty round added
    (a failed or skipped round keeps its place, so ``--resume`` knows it was done)."""
    rounds = tuple(replace(r, index=index) for r in m.rounds) or (Round(index=index),)
    return replace(m, rounds=rounds)


class IsolatedMeasure:
    """A ``runner.MeasureCase`` that measures each case in a fresh worker process.

    ``env``: extra environment variables for the workers (tests name plugins here).
    """

    def __init__(
        self,
        options: RunOptions | None = None,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        python: str | None = None,
    ):
        self.options = options = options or RunOptions()
        timeout = check_timeout(timeout_s)
        self.timeout_s = timeout if timeout is not None else default_timeout_s(options.timing)
        self.python = python or sys.executable
        if not self.python:
            raise UsageError("--isolate: cannot find the Python interpreter to start workers with")
        self.env = worker_env(env or {})

    def config(self) -> dict[str, Any]:
        """What the run's config records about isolation (``--resume`` reuses it)."""
        return {"isolate": True, "case_timeout_s": self.timeout_s}

    def __call__(self, case: Case) -> Measurement:
        return measure_in_fresh_worker(self.python, self.env, case, self.options, self.timeout_s)


def measure_in_fresh_worker(python: str, env: Mapping[str, str], case: Case, options: RunOptions,
                            timeout_s: float, round_index: int = 0) -> Measurement:
    started, t0 = now_iso(), time.perf_counter()
    worker = Worker(python, env)
    try:
        worker.start()
    except WorkerStartError as exc:
        return Measurement(case, "failed", str(exc)[:500], started_at=started,
                           wall_s=time.perf_counter() - t0, extra={"isolated": True})
    with worker:
        return worker.measure(case, options, timeout_s, round_index, started, t0)


@dataclass
class RoundWorkers:
    """Measures the rounds of a sweep in fresh processes: one worker per round (a new one
    after a case kills it), or one per case with ``isolate``.

    ``options`` hold the per-round timing (the case's budget divided by the rounds).
    ``python``/``env`` choose the interpreter and its environment (``ab``: each side's own).
    """

    options: RunOptions
    timeout_s: float
    python: str = sys.executable
    env: Mapping[str, str] | None = None
    isolate: bool = False
    _worker: Worker | None = None
    _importing: bool = False

    def __post_init__(self) -> None:
        if self.env is None:
            self.env = worker_env()

    def live_worker(self) -> Worker | str:
        """This round's worker, started if need be; or why it cannot start."""
        assert self.env is not None
        if self._worker is None or not self._worker.alive:
            self._worker = Worker(self.python, self.env)
            try:
                self._worker.start()
            except WorkerStartError as exc:
                self._worker = None
                return str(exc)
        return self._worker

    def measure(self, case: Case, round_index: int) -> Measurement:
        assert self.env is not None
        if self.isolate:
            m = measure_in_fresh_worker(self.python, self.env, case, self.options, self.timeout_s,
                                        round_index)
            return with_round(m, round_index)
        started, t0 = now_iso(), time.perf_counter()
        worker = self.live_worker()
        if isinstance(worker, str):
            return with_round(Measurement(case, "failed", worker[:500], started_at=started,
                                          wall_s=time.perf_counter() - t0, extra={"isolated": True}),
                              round_index)
        m = worker.measure(case, self.options, self.timeout_s, round_index, started, t0)
        return with_round(m, round_index)

    def config(self) -> dict[str, Any]:
        """What the run's config records (``--resume`` reuses it)."""
        return {"isolate": self.isolate, "case_timeout_s": self.timeout_s}

    def environment(self, machine: str) -> dict[str, Any] | None:
        """The environment of the current worker's interpreter (None without a live one)."""
        if self._worker is None or not self._worker.alive:
            return None
        return self._worker.environment(machine)

    def start_imports(self, backends: Sequence[str]) -> None:
        """Start this round's worker and have it import what ``backends`` need, without
        waiting (:meth:`finish_imports` waits): the sides of an ``ab`` import at once."""
        assert self.env is not None
        if self.isolate:
            return
        if self._worker is None or not self._worker.alive:
            self._worker = Worker(self.python, self.env)
            try:
                self._worker.start()
            except WorkerStartError:
                self._worker = None  # measure() starts another and records why it fails
                return
        self._worker.send({"cmd": "import", "backends": list(backends)})
        self._importing = True

    def finish_imports(self) -> None:
        if self._worker is not None and self._importing:
            self._worker.reply(self.timeout_s)
        self._importing = False

    def wait_until_quiet(self) -> None:
        if self._worker is not None and self._worker.alive:
            wait_until_quiet(self._worker)

    def end_round(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def kill(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None


def plan_rounds(options: RunOptions, count: int, isolate: bool = False,
                timeout_s: float | None = None, order_seed: int = 0,
                python: str | None = None, env: Mapping[str, str] | None = None) -> Rounds:
    """The rounds of a sweep: ``count`` fresh processes, the case's time budget shared
    between them, one worker per round (or per case and round with ``isolate``)."""
    per_round = per_round_options(options, count)
    timeout = check_timeout(timeout_s)
    measurer = RoundWorkers(per_round, timeout if timeout is not None else default_timeout_s(per_round.timing),
                            python or sys.executable, env, isolate)
    return Rounds(count, measurer, order_seed)


#: Fewest samples one round of a case takes (with several rounds): enough for its median.
MIN_ROUND_SAMPLES = 5


def per_round_options(options: RunOptions, count: int) -> RunOptions:
    """The options one round measures with: the case's time budget divided by the rounds,
    and so is its minimum of samples, down to :data:`MIN_ROUND_SAMPLES` (a comparison's unit
    is the round, whose spread comes from the process, not from the samples in it: a slow
    case timed ten times in each of eight rounds spent most of an ``ab`` on samples that did
    not narrow its verdict).

    The warm-up is not shared: each round is a fresh process, cold again. Measured with ``ab``
    (docs/compare.md): at 20 ms a round, paired round ratios spread 0.08 (numpy) and 0.10
    (torch) on the log scale; cut to 5 ms, 0.12 and 0.14, and a 10% slowdown was found in 39%
    of the cases instead of 82%; back at 20 ms, 0.10 and 0.09, and 65%. The machine's own noise
    moved too, so that is no proof, but a fresh process does start cold, and 15 ms more a
    round is cheap."""
    if count < 1:
        raise UsageError(f"rounds must be 1 or more, not {count}")
    t = options.timing
    least = min(t.min_samples, max(MIN_ROUND_SAMPLES, math.ceil(t.min_samples / count)))
    return replace(options, timing=replace(t, time_budget_s=t.time_budget_s / count, min_samples=least))
