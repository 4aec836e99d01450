"""A sweep on every rank of a launch (torchrun, srun, ``--concurrent``), gathered by rank 0.

Each rank measures its own device (``launch.localize_backends``) on its own share of the
cores (``launch.assign_cpu_share``), writes its own run file as a single run does (journal
first, each measurement fsynced), and sends each measurement to rank 0 the moment it exists.
Rank 0 then writes one *run set* (``runset.py``) that ``load_results``, ``report`` and
``compare`` read.

How the results travel, and why this way: through ``torch.distributed``'s key-value store
(``TCPStore``: the torchrun agent's, or one rank 0 starts under srun and ``--concurrent``),
as JSON text under one key per rank and measurement, validated by the same loader as a run
file. A collective (gather over gloo or NCCL) needs every rank to take part, so one dead
rank would take the others' results with it or hang the gather; with a key per rank, rank 0
takes what each rank sent and names the ranks that went silent. Nothing is pickled.

The protocol, under ``bench-suite/<attempt>/``:

* join: rank 0 sets ``run_id`` and ``world_size``; every rank sets ``world/<r>`` then counts
  ``join/<r>`` up (a second process with the same rank sees 2 and stops: one line, exit 2);
  rank 0 waits for ``join/0..N-1`` (``join_timeout``), then sets ``go`` to ``ok`` or to
  ``abort:<why>``: every rank starts measuring at once, or none does.
* each rank: ``header/<r>`` (its run without measurements), ``path/<r>`` (its own file),
  then per measurement ``m/<r>/<i>`` and ``count/<r>`` += 1, a heartbeat ``hb/<r>`` every
  second from a thread of its own, and at the end ``done/<r>``.
* rank 0, after its own sweep: waits until every rank is done, or silent for
  ``silent_after_s`` (dead), or ``gather_timeout`` has passed, then reads what is there.

SIGTERM (torchrun stops the other workers when one dies) ends a rank's sweep as Ctrl-C does:
its finished cases are saved, and rank 0 still writes the run set with what it has.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from bench_suite.backends import Backend, get_backend
from bench_suite.core.cases import Case
from bench_suite.core.errors import BenchSuiteError, UsageError
from bench_suite.measure import runner
from bench_suite.measure.launch import RankContext
from bench_suite.store import codec
from bench_suite.store.codec import parse_json
from bench_suite.store.env_record import LaunchRecord
from bench_suite.store.results import JOURNAL_SUFFIX, Measurement, Run, RunWriter, run_from_doc
from bench_suite.store.runset import RankStatus, RunSet, save_runset

#: A rank that has sent no heartbeat for this long is taken for dead.
SILENT_AFTER_S = 60.0
HEARTBEAT_S = 1.0
#: After rank 0 is told to stop (SIGTERM, Ctrl-C), how long it still waits for the others'
#: last words before it writes what it has (torchrun allows 30 s before SIGKILL).
STOP_GRACE_S = 3.0
POLL_S = 0.05


def poll_s(world_size: int) -> float:
    """How often a waiting rank asks the store: 20 times a second on a node, less on a big
    launch, so that a thousand ranks do not flood rank 0's store (at most once a second)."""
    return min(1.0, POLL_S * max(1.0, world_size / 8))


class Store(Protocol):
    """What the protocol needs of a key-value store (``torch.distributed.TCPStore`` has it)."""

    def set(self, key: str, value: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def add(self, key: str, amount: int) -> int: ...
    def check(self, keys: list[str]) -> bool: ...


class PrefixedStore:
    """Keys under a prefix: a torchrun agent's store is shared with torchrun's own keys, and a
    restarted attempt must not read the keys of the one before."""

    def __init__(self, store: Store, prefix: str):
        self.store, self.prefix = store, prefix

    def set(self, key: str, value: str) -> None:
        self.store.set(self.prefix + key, value)

    def get(self, key: str) -> bytes:
        return self.store.get(self.prefix + key)

    def add(self, key: str, amount: int) -> int:
        return int(self.store.add(self.prefix + key, amount))

    def check(self, keys: list[str]) -> bool:
        return bool(self.store.check([self.prefix + k for k in keys]))


def prefix_for(ctx: RankContext) -> str:
    return f"bench-suite/{ctx.restart}/"


def connect_store(ctx: RankContext, timeout_s: float) -> Store:
    """The launch's store: torchrun's agent's (every rank a client), or one rank 0 starts."""
    host = ctx.rank == 0 and not ctx.agent_store
    if not host:  # wait for the port here: torch's client logs a stack per failed attempt
        _wait_for_port(ctx.master_addr, ctx.master_port, timeout_s)
    from torch.distributed import TCPStore

    try:
        store = TCPStore(ctx.master_addr, ctx.master_port, None, host,
                         _dt.timedelta(seconds=timeout_s), wait_for_workers=False)
    except Exception as exc:  # DistStoreError, RuntimeError: one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        what = "start the rendezvous store on" if host else "reach the rendezvous store at"
        hint = ("is the port free, and is only one process rank 0?" if host else
                "is rank 0 running, and are MASTER_ADDR and MASTER_PORT right?")
        raise UsageError(f"bad launch: cannot {what} {ctx.master_addr}:{ctx.master_port} "
                         f"within {timeout_s:g} s ({first}): {hint}") from None
    return PrefixedStore(store, prefix_for(ctx))


def _wait_for_port(addr: str, port: int, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    why = ""
    while True:
        try:
            with socket.create_connection((addr, port), timeout=min(1.0, max(timeout_s, 0.1))):
                return
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
        if time.monotonic() >= end:
            raise UsageError(f"bad launch: cannot reach the rendezvous store at {addr}:{port} within "
                             f"{timeout_s:g} s ({why}): is rank 0 running, and are MASTER_ADDR and "
                             "MASTER_PORT right?")
        time.sleep(0.1)


def _text(store: Store, key: str) -> str:
    return store.get(key).decode("utf-8", "replace")


def _wait_keys(store: Store, keys: list[str], timeout_s: float, sleep: Callable[[float], None],
               clock: Callable[[], float], every_s: float = POLL_S) -> bool:
    end = clock() + timeout_s
    while not store.check(keys):
        if clock() >= end:
            return False
        sleep(every_s)
    return True


# --- joining --------------------------------------------------------------------------------


def join(store: Store, ctx: RankContext, run_id: str, timeout_s: float,
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> str:
    """Every rank of the launch, present and agreeing, or a UsageError on each rank that can
    tell; returns the run id all ranks share (rank 0's)."""
    r, world = ctx.rank, ctx.world_size
    every = poll_s(world)
    store.set(f"world/{r}", str(world))
    if store.add(f"join/{r}", 1) > 1:
        raise UsageError(f"bad launch: two processes are rank {r} (RANK/SLURM_PROCID): each rank "
                         "must be started once")
    if r == 0:
        store.set("world_size", str(world))
        store.set("run_id", run_id)
        keys = [f"join/{i}" for i in range(world)]
        if not _wait_keys(store, keys, timeout_s, sleep, clock, every):
            missing = [i for i in range(world) if not store.check([f"join/{i}"])]
            why = (f"bad launch: {world - len(missing)} of WORLD_SIZE={world} ranks joined within "
                   f"{timeout_s:g} s (missing: {_ranks(missing)}): check WORLD_SIZE, --nnodes and "
                   "--nproc-per-node (or srun's task count)")
            store.set("go", "abort:" + why)
            raise UsageError(why)
        for i in range(world):
            theirs = _text(store, f"world/{i}")
            if theirs != str(world):
                why = (f"bad launch: rank {i} has WORLD_SIZE={theirs}, rank 0 has {world}: every "
                       "rank must be started with the same world size")
                store.set("go", "abort:" + why)
                raise UsageError(why)
        store.set("go", "ok")
        return run_id
    if not _wait_keys(store, ["world_size", "run_id"], timeout_s, sleep, clock, every):
        raise UsageError(f"bad launch: rank 0 did not answer within {timeout_s:g} s")
    theirs = _text(store, "world_size")
    if theirs != str(world):
        raise UsageError(f"bad launch: WORLD_SIZE={world} here but {theirs} on rank 0: every rank "
                         "must be started with the same world size")
    if not _wait_keys(store, ["go"], timeout_s, sleep, clock, every):
        raise UsageError(f"bad launch: rank 0 did not start the sweep within {timeout_s:g} s "
                         "(are all ranks of the launch running?)")
    go = _text(store, "go")
    if go != "ok":
        raise UsageError(go.removeprefix("abort:"))
    return _text(store, "run_id")


def _ranks(ranks: Sequence[int]) -> str:
    shown = ", ".join(map(str, ranks[:10])) + (f" and {len(ranks) - 10} more" if len(ranks) > 10 else "")
    return f"rank{'s' if len(ranks) != 1 else ''} {shown}"


# --- sending ------------------------------------------------------------------------------


class Publisher:
    """Sends one rank's run to the store as it grows. A store that stops answering (rank 0
    died, taking its store with it) ends the sending, never the rank's sweep: its own file
    still gets every measurement."""

    def __init__(self, store: Store, rank: int):
        self.store, self.rank = store, rank
        self.sent = 0
        self.problem = ""

    def _try(self, fn: Callable[[], object]) -> None:
        if self.problem:
            return
        try:
            fn()
        except Exception as exc:  # the store is gone: say so once, keep measuring
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.problem = f"rank 0's store stopped answering ({first})"

    def header(self, run: Run, path: Path) -> None:
        def send() -> None:
            self.store.set(f"header/{self.rank}", codec.encode_line(run.header()))
            self.store.set(f"path/{self.rank}", str(path))

        self._try(send)

    def add(self, m: Measurement) -> None:
        def send() -> None:
            self.store.set(f"m/{self.rank}/{self.sent}", codec.encode_line(m.to_dict()))
            self.store.add(f"count/{self.rank}", 1)  # after the key: readers see whole ones
            self.sent += 1

        self._try(send)

    def done(self, run: Run) -> None:
        doc = codec.RankDone(complete=run.complete, finished_at=run.finished_at,
                             measurements=len(run.measurements))
        self._try(lambda: self.store.set(f"done/{self.rank}", codec.encode_line(doc)))


class _PublishingWriter:
    """A RunWriter that also sends each measurement (the file first: it is the durable copy)."""

    def __init__(self, writer: RunWriter, publisher: Publisher):
        self._writer, self._publisher = writer, publisher

    def add(self, m: Measurement) -> None:
        self._writer.add(m)
        self._publisher.add(m)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


class Heartbeat:
    """A thread that counts ``hb/<rank>`` up every ``interval_s`` on a store client of its own,
    so that rank 0 can tell a slow rank from a dead one."""

    def __init__(self, make_store: Callable[[], Store], rank: int, interval_s: float = HEARTBEAT_S):
        self._make, self.rank, self.interval_s = make_store, rank, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-suite-heartbeat", daemon=True)

    def _loop(self) -> None:
        try:
            store = self._make()
            while True:
                store.add(f"hb/{self.rank}", 1)
                if self._stop.wait(self.interval_s):
                    return
        except Exception:  # the store went away: rank 0 will say this rank fell silent
            return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- gathering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Gathered:
    runs: tuple[Run, ...]  # one per rank that sent anything, rank 0's first
    ranks: tuple[RankStatus, ...]


def _status_of(run: Run) -> str:
    return "complete" if run.complete else "incomplete"


def gather(store: Store, world_size: int, own: Run, own_path: str, host: str,
           timeout_s: float, silent_after_s: float = SILENT_AFTER_S,
           stopping: Callable[[], bool] = lambda: False,
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> Gathered:
    """Rank 0: wait for every other rank to be done, silent (dead) or out of time, then read
    what each sent. Never raises for another rank's failure: a rank whose results cannot be
    read is ``lost``, with the reason."""
    others = list(range(1, world_size))
    start = clock()
    beats: dict[int, tuple[int, float]] = {r: (-1, start) for r in others}
    why: dict[int, str] = {}
    grace_end: float | None = None
    while True:
        pending = [r for r in others if r not in why and not store.check([f"done/{r}"])]
        now = clock()
        for r in pending:
            count = store.add(f"hb/{r}", 0)
            last, seen = beats[r]
            if count != last:
                beats[r] = (count, now)
            elif now - seen > silent_after_s:
                why[r] = f"no sign of life for {silent_after_s:g} s"
        pending = [r for r in pending if r not in why]
        if not pending:
            break
        if stopping():
            grace_end = now + STOP_GRACE_S if grace_end is None else grace_end
            if now >= grace_end:
                for r in pending:
                    why[r] = "no final word from it before rank 0 was stopped"
                break
        elif now - start > timeout_s:
            for r in pending:
                why[r] = f"still running after the gather timeout ({timeout_s:g} s)"
            break
        try:
            sleep(poll_s(world_size))
        except KeyboardInterrupt:  # stopped while waiting: a short grace, then what is there
            grace_end = clock()
            stopping = _always
    runs: list[Run] = [own]
    ranks = [RankStatus(0, host, _status_of(own), len(own.measurements), own_path)]
    for r in others:
        run, status = _read_rank(store, r, why.get(r, ""))
        if run is not None:
            runs.append(run)
        ranks.append(status)
    return Gathered(tuple(runs), tuple(ranks))


def _always() -> bool:
    return True


def _existing(path: str) -> str:
    """A rank's file as it is on disk, where rank 0 can see it (same host, shared folder): the
    journal of a rank that was killed before it finished."""
    journal = path + JOURNAL_SUFFIX
    if path and not Path(path).exists() and Path(journal).exists():
        return journal
    return path


def _read_rank(store: Store, r: int, silent: str) -> tuple[Run | None, RankStatus]:
    path = _existing(_text(store, f"path/{r}")) if store.check([f"path/{r}"]) else ""
    if not store.check([f"header/{r}"]):
        error = ""
        with contextlib.suppress(BenchSuiteError):
            error = (_done(store, r, f"rank {r}") or codec.RankDone()).error
        return None, RankStatus(r, "", "lost", 0, path, error or silent or "sent nothing")
    where = f"rank {r}'s results"
    try:
        header = codec.decode(codec.RunHeader, _text(store, f"header/{r}"), where)
        count = store.add(f"count/{r}", 0)
        body = [codec.decode(codec.MeasurementDoc, _text(store, f"m/{r}/{i}"), f"{where}: measurement {i}")
                for i in range(count) if store.check([f"m/{r}/{i}"])]
        said = _done(store, r, f"{where}: done")
        done = said or codec.RankDone()
        header = msgspec.structs.replace(header, finished_at=done.finished_at)
        run = run_from_doc(header, path, body, merge=True, complete=done.complete)  # rounds of a case
    except BenchSuiteError as exc:
        return None, RankStatus(r, "", "lost", 0, path, f"sent unreadable results: {exc}"[:300])
    host = _host_of(run)
    if said is None:
        return run, RankStatus(r, host, "lost", len(run.measurements), path, silent)
    return run, RankStatus(r, host, _status_of(run), len(run.measurements), path)


def _done(store: Store, r: int, where: str) -> codec.RankDone | None:
    """Rank ``r``'s last word (read leniently), or None if it has not said it."""
    if not store.check([f"done/{r}"]):
        return None
    return codec.lenient(codec.RankDone, parse_json(_text(store, f"done/{r}"), where))


def _host_of(run: Run) -> str:
    return LaunchRecord.of(run.config).host or ""


# --- one rank's whole run -------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM: the launcher is stopping this rank (torchrun does when another rank died)."""


class _StopSignal:
    """SIGTERM while ``armed`` raises :class:`Terminated` (once: a sweep then saves what it
    has, as on Ctrl-C); otherwise, and afterwards, it is only noted, so that saving and
    gathering are never cut short by it."""

    def __init__(self) -> None:
        self.received = False
        self.armed = True

    def __call__(self, signum: int, frame: Any) -> None:
        first = not self.received
        self.received = True
        if first and self.armed:
            raise Terminated()


@contextlib.contextmanager
def _sigterm_handled() -> Iterator[_StopSignal]:
    stop = _StopSignal()
    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass(frozen=True)
class RankOutcome:
    rank: int
    run: Run  # this rank's own run, as saved in its own file
    runset: RunSet | None  # rank 0: what it gathered
    interrupted: bool  # stopped before its sweep ended (Ctrl-C, SIGTERM)
    publish_problem: str = ""  # why some measurements may not have reached rank 0


def rank_path(gathered: Path, rank: int) -> Path:
    """A rank's own run file: ``<dir>/<run-id>/rank<R>.json`` beside the set ``<dir>/<run-id>.json``."""
    return gathered.with_suffix("") / f"rank{rank}.json"


def run_rank(
    ctx: RankContext,
    cases: Sequence[Case],
    out: str | Path | None,
    options: runner.RunOptions | None = None,
    machine: str | None = None,
    config: Mapping[str, Any] | None = None,
    progress: runner.Progress | None = None,
    measure_case: runner.MeasureCase | None = None,
    gather_timeout_s: float = 3600.0,
    join_timeout_s: float = 300.0,
    store_factory: Callable[[RankContext, float], Store] = connect_store,
    backend_for: Callable[[str], Backend] = get_backend,
    host: str | None = None,
    rounds: runner.Rounds | None = None,
) -> RankOutcome:
    """This rank's sweep, saved in its own file and sent to rank 0; on rank 0, the run set.

    ``machine`` names this rank's results folder (default: the host name). Bad launches raise
    ``UsageError`` before anything is measured.
    """
    from bench_suite.env import collect as env_mod

    options = options or runner.RunOptions()
    host = host or socket.gethostname()
    machine = env_mod.machine_name(machine)
    with _sigterm_handled() as stop:
        store = store_factory(ctx, join_timeout_s)
        run_id = join(store, ctx, ctx.run_id or runner.new_run_id(), join_timeout_s)
        gathered_path = runner.resolve_out(out, machine, run_id)
        own_path = rank_path(gathered_path, ctx.rank)
        given = (config or {}).get("distributed")
        cfg = {**(config or {}), **(rounds.config() if rounds is not None else {}), "run_set": run_id,
               "distributed": {**ctx.to_config(host), **(given if isinstance(given, Mapping) else {})}}
        publisher = Publisher(store, ctx.rank)
        try:
            writer = runner.start_run(own_path, cases, options, machine, cfg,
                                      run_id=f"{run_id}-rank{ctx.rank}")
        except BenchSuiteError as exc:  # rank 0 must not wait for a rank that cannot start
            doc = codec.encode_line(codec.RankDone(finished_at=runner.now_iso(), error=str(exc)[:300]))
            publisher._try(lambda: store.set(f"done/{ctx.rank}", doc))
            raise
        publisher.header(writer.run(), own_path)
        beat = (Heartbeat(lambda: store_factory(ctx, join_timeout_s), ctx.rank)
                if ctx.rank else contextlib.nullcontext())
        interrupted = False
        with beat:
            try:
                run = runner.finish_sweep(_PublishingWriter(writer, publisher),  # type: ignore[arg-type]
                                          cases, options, progress, backend_for, measure_case, rounds)
            except runner.RunInterrupted as saved:
                run, interrupted = saved.run, True
            finally:
                stop.armed = False
        publisher.done(run)
        if ctx.rank != 0:
            return RankOutcome(ctx.rank, run, None, interrupted or stop.received, publisher.problem)
        got = gather(store, ctx.world_size, run, str(own_path), host, gather_timeout_s,
                     stopping=lambda: interrupted or stop.received)
        rs = RunSet(run_id, run.created_at, runner.now_iso(), ctx.world_size, ctx.launcher,
                    got.ranks, got.runs, str(gathered_path))
        save_runset(rs, gathered_path)
        return RankOutcome(0, run, rs, interrupted or stop.received, publisher.problem)
