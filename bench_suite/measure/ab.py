"""``bench-suite ab BASE CAND``: an A/B comparison of two interpreters in one command.

``BASE`` and ``CAND`` are Python interpreters that can import bench-suite: two virtual
environments (torch 2.12 against 2.13, OpenBLAS numpy against MKL numpy, two checkouts of
one's own code), or any executable that behaves like one (a wrapper script that sets
environment variables, a container's entry point).

Each round starts one fresh worker process per side. The cases of the round are taken in a
seeded random order and each is measured on both sides side by side, so that whatever the
machine does (a neighbour, turbo, thermal drift) hits both alike and the paired test in
``compare`` cancels it:

* **sample by sample** (*lockstep*) for one-thread and GPU cases: both workers prepare,
  verify and warm up the case, then take turns, one sample each, the side that goes first in
  each pair drawn at random, until the two sides' time budget is spent. On this kind of
  machine that halves the spread of a round's ratio against measuring one side after the
  other (docs/compare.md);
* **case by case** for multi-threaded CPU cases: their BLAS and OpenMP pools spin for a tenth
  of a second after every call, so one side measures the case, hands over once its pools have
  gone quiet (``isolation.wait_until_quiet``), and the other side measures it, the side that
  goes first drawn at random.

The idle side waits on a pipe and uses no CPU.

Both sides' measurements go to their own run file (``base.json`` and ``cand.json`` under the
output folder) as they come, with each side's environment as its own interpreter reports it;
the comparison of the two is the result.
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench_suite.core.cases import Case, is_cuda_backend
from bench_suite.core.errors import BenchSuiteError, UsageError
from bench_suite.env import collect as env_mod
from bench_suite.measure.isolation import (
    RoundWorkers,
    Worker,
    default_timeout_s,
    measure_request,
    per_round_options,
    with_round,
    worker_env,
)
from bench_suite.measure.runner import Progress, RunInterrupted, RunOptions, now_iso, round_order, start_run
from bench_suite.store import codec
from bench_suite.store.codec import PROTOCOL, parse_json
from bench_suite.store.noise import NoiseProfile
from bench_suite.store.results import Measurement, Run, RunWriter

SIDES = ("base", "cand")
HELLO_TIMEOUT_S = 60.0


def check_interpreter(python: str, label: str) -> dict[str, Any]:
    """The hello of ``python``'s worker; UsageError (one line, exit 2) if it has none.

    Checked before anything runs: a path that does not exist, is not executable, or whose
    interpreter cannot import bench-suite (or speaks another worker protocol).
    """
    path = Path(python)
    if os.sep in python or path.exists():
        if not path.exists():
            raise UsageError(f"{label} {python!r} does not exist")
        if path.is_dir() or not os.access(path, os.X_OK):
            raise UsageError(f"{label} {python!r} is not an executable file")
    try:
        done = subprocess.run([python, "-m", "bench_suite.measure.worker", "--hello"], capture_output=True,
                              text=True, timeout=HELLO_TIMEOUT_S, stdin=subprocess.DEVNULL,
                              env=worker_env(own_package=False))
    except FileNotFoundError:
        raise UsageError(f"{label} {python!r}: no such interpreter") from None
    except PermissionError:
        raise UsageError(f"{label} {python!r} is not executable") from None
    except OSError as exc:
        raise UsageError(f"{label} {python!r} cannot be run: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{label} {python!r} did not answer within {HELLO_TIMEOUT_S:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        hello = parse_json(lines[-1], "hello") if lines else None
    except BenchSuiteError:
        hello = None
    if done.returncode != 0 or not isinstance(hello, dict) or "hello" not in hello:
        why = (done.stderr.strip().splitlines() or ["no answer"])[-1][:200]
        raise UsageError(f"{label} {python!r} cannot import bench-suite's worker: {why}")
    if hello.get("protocol") != PROTOCOL:
        raise UsageError(f"{label} {python!r} runs a bench-suite whose worker protocol is "
                         f"{hello.get('protocol')!r}, not {PROTOCOL}: install a matching version")
    try:
        return msgspec.to_builtins(codec.decode(codec.HelloReply, hello, "its hello").hello)
    except BenchSuiteError as exc:
        raise UsageError(f"{label} {python!r} cannot run bench-suite's worker: {exc}") from None


@dataclass(frozen=True)
class AbResult:
    base: Run
    cand: Run
    folder: Path


def side_order(seed: int, index: int, case: Case) -> tuple[str, str]:
    """Which side measures ``case`` first in round ``index`` (seeded, so a run repeats)."""
    rng = random.Random(f"bench-suite-ab/{seed}/{index}/{case.id}")
    return SIDES if rng.random() < 0.5 else (SIDES[1], SIDES[0])


def run_ab(
    cases: Sequence[Case],
    base_python: str,
    cand_python: str,
    folder: Path,
    options: RunOptions,
    rounds: int,
    machine: str | None = None,
    config: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> AbResult:
    """Measure ``cases`` on both interpreters, round by round and case by case side by side;
    write ``folder/base.json`` and ``folder/cand.json``. ``env``: extra environment variables
    for both sides' workers. Ctrl-C saves both runs (incomplete) and raises RunInterrupted
    with the base run."""
    if not 2 <= rounds <= 1000:
        raise UsageError(f"ab needs 2..1000 rounds, not {rounds}")
    pythons = {"base": base_python, "cand": cand_python}
    hellos = {side: check_interpreter(p, side.upper()) for side, p in pythons.items()}
    session = secrets.token_hex(6)
    per_round = per_round_options(options, rounds)
    timeout = timeout_s if timeout_s is not None else default_timeout_s(per_round.timing)
    machine = env_mod.machine_name(machine)
    parent_env = env_mod.collect(machine, torch=False)
    writers: dict[str, RunWriter] = {}
    workers: dict[str, RoundWorkers] = {}
    for side in SIDES:
        side_config = {**(config or {}), "rounds": rounds, "order_seed": options.seed,
                       "ab": {"session": session, "side": side, "python": pythons[side],
                              "other": pythons["cand" if side == "base" else "base"],
                              "hello": hellos[side]}}
        writers[side] = start_run(folder / f"{side}.json", cases, options, machine, side_config,
                                  run_id=f"{side}-{session}", env=parent_env)
        workers[side] = RoundWorkers(per_round, timeout, pythons[side],
                                     worker_env(env or {}, own_package=False))
    try:
        _measure(cases, rounds, options.seed, writers, workers, machine, progress)
    except KeyboardInterrupt:
        for w in workers.values():
            w.kill()
        runs = {side: writers[side].finish(now_iso(), complete=False) for side in SIDES}
        raise RunInterrupted(runs["base"]) from None
    except BaseException:
        for side in SIDES:
            workers[side].kill()
            writers[side].close()
        raise
    runs = {}
    for side in SIDES:
        try:
            runs[side] = writers[side].finish(now_iso(), complete=True)
        finally:
            writers[side].close()
    return AbResult(runs["base"], runs["cand"], folder)


def lockstep(case: Case) -> bool:
    """Whether the two sides take turns sample by sample (see the module's doc)."""
    return case.threads == 1 or is_cuda_backend(case.backend)


def measure_in_lockstep(case: Case, index: int, workers: Mapping[str, RoundWorkers],
                        rng: random.Random) -> dict[str, Measurement]:
    """Both sides' measurements of ``case`` in round ``index``, their samples taken in turns.

    Each worker prepares, verifies and warms up the case on its own, then asks before each
    sample (``worker.py``). Pairs go on until the two sides' round budgets are spent (and at
    least ``min_samples`` pairs are taken); a side that is skipped, fails or dies leaves the
    other to finish alone.
    """
    started, t0 = now_iso(), time.perf_counter()
    live: dict[str, Worker] = {}
    out: dict[str, Measurement] = {}
    for side in SIDES:
        w = workers[side].live_worker()
        if isinstance(w, str):
            out[side] = with_round(Measurement(case, "failed", w[:500], started_at=started,
                                               extra={"isolated": True}), index)
        else:
            live[side] = w
    options = workers[SIDES[0]].options
    timeout = workers[SIDES[0]].timeout_s
    pids = {side: w.pid for side, w in live.items()}
    for side, w in live.items():
        siblings = [p for s, p in pids.items() if s != side and p is not None]
        w.send(measure_request(case, options, timeout, index, lockstep=True, siblings=siblings))
    ready: list[str] = []
    for side, w in live.items():
        msg = w.reply(timeout)
        if isinstance(msg, dict) and "gate" in msg:
            ready.append(side)
        else:
            out[side] = with_round(w.measurement(case, msg, started, t0), index)

    def answer(side: str, word: str) -> None:
        """Send ``word``; the side either asks again (its sample is taken) or is done."""
        w = live[side]
        w.send({"gate": word})
        msg = w.reply(timeout)
        if not (isinstance(msg, dict) and "gate" in msg):
            out[side] = with_round(w.measurement(case, msg, started, t0), index)
            ready.remove(side)

    budget = 2 * options.timing.time_budget_s
    pairs, sampling = 0, time.perf_counter()
    while len(ready) == 2:
        done = pairs >= options.timing.min_samples and (
            time.perf_counter() - sampling >= budget or pairs >= options.timing.max_samples)
        for side in rng.sample(ready, 2):
            if side in ready:
                answer(side, "stop" if done else "go")
        pairs += 1
    for side in list(ready):  # the other side is done: this one finishes alone
        answer(side, "free")
        while side in ready:  # it asked again before it stopped: it stops on its own rule
            answer(side, "free")
    return out


def _measure(cases: Sequence[Case], rounds: int, seed: int, writers: Mapping[str, RunWriter],
             workers: Mapping[str, RoundWorkers], machine: str, progress: Progress | None) -> None:
    skipped: set[str] = set()
    total = 2 * rounds * len(cases)
    if progress is not None:
        progress.start(total)
    want_env = set(SIDES)
    for index in range(rounds):
        try:
            # both sides import (torch: seconds) at once, before either measures anything
            names = sorted({c.backend for c in cases if c.id not in skipped})
            for side in SIDES:
                workers[side].start_imports(names)
            for side in SIDES:
                workers[side].finish_imports()
            for case in round_order(cases, seed, index):
                if case.id in skipped:
                    continue
                if progress is not None:
                    progress.case_started(case)
                if lockstep(case):
                    pair = measure_in_lockstep(case, index, workers, random.Random(
                        f"bench-suite-ab/{seed}/{index}/{case.id}/pairs"))
                else:
                    pair = {}
                    for side in side_order(seed, index, case):
                        pair[side] = workers[side].measure(case, index)
                        workers[side].wait_until_quiet()  # its pools asleep before the other side runs
                measured: list[Measurement] = []
                for side in SIDES:
                    writers[side].add(pair[side])
                    measured.append(pair[side])
                    if progress is not None:
                        progress.case_finished(pair[side])
                if all(m.status == "skipped" for m in measured):
                    skipped.add(case.id)
                    total -= 2 * (rounds - index - 1)
                    if progress is not None:
                        progress.start(total)
            for side in list(want_env):
                side_env = workers[side].environment(machine)
                if side_env is not None:
                    writers[side].update_env(**side_env)
                    want_env.discard(side)
        finally:
            for w in workers.values():
                w.end_round()


def calibrate(
    cases: Sequence[Case],
    options: RunOptions,
    rounds: int,
    out: Path,
    machine: str | None = None,
    keep: Path | None = None,
    progress: Progress | None = None,
    python: str | None = None,
) -> NoiseProfile:
    """``bench-suite calibrate``: an A/A ``ab`` of this interpreter against itself; each
    case's noise saved as the machine's noise profile at ``out``. ``keep``: also keep the two
    runs there (else they go to a temporary folder)."""
    import sys
    import tempfile

    from bench_suite.analysis.noise import profile_from_ab
    from bench_suite.store.noise import save_profile

    python = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-suite-calibrate-") as tmp:
        folder = keep or Path(tmp)
        result = run_ab(cases, python, python, folder, options, rounds, machine,
                        {"calibrate": True}, progress)
        profile = profile_from_ab(result.base, result.cand, now_iso(), {
            "rounds": rounds, "time_budget_s": options.timing.time_budget_s, "python": python,
            "runs": [str(folder / "base.json"), str(folder / "cand.json")] if keep else []})
    save_profile(profile, out)
    return profile
