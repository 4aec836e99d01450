"""Fault isolation (``bench-suite run --isolate``): each case in a fresh worker process.

A segfault, an abort, a hang or a fatal CUDA error inside one case kills only its worker:
the case is recorded as ``failed`` with the reason (the signal, the exit status, or "timed
out after N s") and the run goes on. Workers are *spawned* (a fresh ``python -m
bench_suite.worker``), never forked from a parent that may hold a CUDA context, and each runs
in its own session, so a timeout kills the worker with anything it started and Ctrl-C reaches
only the parent, which then stops the worker itself. Request and result travel as JSON files:
nothing is pickled.

The worker gets its backend through ``backends.get_backend``, which honours the testing hook
``$BENCH_SUITE_BACKEND_PLUGINS`` (inherited by workers): tests inject failing backends there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_suite.cases import Case
from bench_suite.errors import BenchSuiteError, UsageError
from bench_suite.results import Measurement, parse_json
from bench_suite.runner import RunOptions, now_iso
from bench_suite.timing import TimingConfig
from bench_suite.worker import PROTOCOL

#: Default timeout = BASE + PER_BUDGET * the case's time budget. The base covers starting an
#: interpreter, importing torch, initialising CUDA and verifying a large result.
TIMEOUT_BASE_S = 30.0
TIMEOUT_PER_BUDGET = 10.0
#: How much of a failed worker's output is kept in the measurement's ``extra``.
OUTPUT_TAIL_CHARS = 2000

# Lines of Python's fatal-error and traceback dumps: they say where, not what happened.
_NOISE = ("Fatal Python error", "Current thread", "Thread 0x", "Extension modules",
          "Stack (most recent", "Traceback (most recent", "<no Python frame>")


def default_timeout_s(timing: TimingConfig) -> float:
    return TIMEOUT_BASE_S + TIMEOUT_PER_BUDGET * timing.time_budget_s


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
        if timeout_s is not None and not (math.isfinite(timeout_s) and 0 < timeout_s <= 7 * 86_400):
            raise UsageError(f"case timeout must be a positive number of seconds, not {timeout_s!r}")
        self.options = options = options or RunOptions()
        self.timeout_s = float(timeout_s) if timeout_s is not None else default_timeout_s(options.timing)
        self.python = python or sys.executable
        if not self.python:
            raise UsageError("--isolate: cannot find the Python interpreter to start workers with")
        self.env = _worker_env(env or {})

    def config(self) -> dict[str, Any]:
        """What the run's config records about isolation (``--resume`` reuses it)."""
        return {"isolate": True, "case_timeout_s": self.timeout_s}

    def __call__(self, case: Case) -> Measurement:
        started, t0 = now_iso(), time.perf_counter()
        request = {
            "protocol": PROTOCOL,
            "case": case.to_dict(),
            "seed": self.options.seed,
            "timing": asdict(self.options.timing),
            "gpu": asdict(self.options.gpu),
            "timeout_s": self.timeout_s,
            "parent_pid": os.getpid(),
        }
        with tempfile.TemporaryDirectory(prefix="bench-suite-worker-") as tmp:
            req, res, log = (Path(tmp) / n for n in ("request.json", "result.json", "output.log"))
            req.write_text(json.dumps(request), encoding="utf-8")
            with open(log, "wb") as out:
                status = self._run_worker([str(req), str(res)], out)
            output = log.read_bytes()[-4 * OUTPUT_TAIL_CHARS:].decode("utf-8", "replace")
            result = res.read_text(encoding="utf-8") if res.exists() else None
        wall = time.perf_counter() - t0
        if result is not None:
            m = _measurement_from(result, case)
            if isinstance(m, Measurement):
                return m
            status = m  # an unreadable result is a failure like any other
        reason = status
        last = _last_words(output)
        if last and not status.startswith("timed out"):
            reason = f"{status}: {last}"
        return Measurement(case, "failed", reason[:500], started_at=started, wall_s=wall,
                           extra={"isolated": True, "worker_output": output[-OUTPUT_TAIL_CHARS:]})

    def _run_worker(self, args: list[str], out: Any) -> str:
        """Run one worker to its end; how it ended, in words ("" for a clean exit)."""
        proc = subprocess.Popen(
            [self.python, "-m", "bench_suite.worker", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True,
        )
        try:
            rc = proc.wait(self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return f"timed out after {self.timeout_s:g} s (worker killed)"
        except BaseException:  # Ctrl-C: the worker is in its own session and must be stopped
            _kill(proc)
            raise
        return describe_exit(rc)


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


def _measurement_from(text: str, case: Case) -> Measurement | str:
    """The worker's measurement, or why it cannot be used."""
    try:
        doc = parse_json(text, "worker result")
        if not isinstance(doc, dict) or doc.get("protocol") != PROTOCOL:
            return "worker returned an unreadable result"
        m = Measurement.from_dict(doc.get("measurement"), "worker result")
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


def _worker_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    # The worker must import this same bench_suite (a source tree run with PYTHONPATH, an
    # editable install); a site-packages folder is never put ahead of the standard library.
    root = Path(__file__).resolve().parent.parent
    if root.name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env
