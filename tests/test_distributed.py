"""The ranks' protocol through an in-memory store: joining (and refusing bad launches),
sending each measurement, and rank 0 gathering what live, dead, silent or broken ranks sent;
then two whole ranks in one process. The real thing (torchrun) is in test_torchrun.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import bench_suite
from bench_suite.core.cases import Case
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import SamplingPlan
from bench_suite.measure import distributed, runner
from bench_suite.measure.distributed import Publisher, gather, join
from bench_suite.measure.launch import RankContext
from bench_suite.store.results import Measurement, Run
from bench_suite.store.runset import dedupe


class MemoryStore:
    """A thread-safe key-value store with TCPStore's methods."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.broken = False

    def _check_alive(self) -> None:
        if self.broken:
            raise RuntimeError("Connection reset by peer")

    def set(self, key: str, value: str | bytes) -> None:
        self._check_alive()
        with self.lock:
            self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key: str) -> bytes:
        with self.lock:
            return self.data[key]

    def add(self, key: str, amount: int) -> int:
        self._check_alive()
        with self.lock:
            value = int(self.data.get(key, b"0")) + amount
            self.data[key] = str(value).encode()
            return value

    def check(self, keys: list[str]) -> bool:
        with self.lock:
            return all(k in self.data for k in keys)


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def ctx(rank: int, world: int = 2) -> RankContext:
    return RankContext(rank, world, rank, world, 0, "127.0.0.1", 1, "torchrun")


def test_ranks_join_and_share_rank_0s_run_id() -> None:
    store = MemoryStore()
    got: dict[int, str] = {}
    t = threading.Thread(target=lambda: got.__setitem__(1, join(store, ctx(1), "ignored", 10)))
    t.start()
    got[0] = join(store, ctx(0), "run-0", 10)
    t.join()
    assert got == {0: "run-0", 1: "run-0"} and store.data["go"] == b"ok"


def test_a_rank_started_twice_is_refused() -> None:
    store = MemoryStore()
    store.add("join/1", 1)
    with pytest.raises(UsageError, match="two processes are rank 1"):
        join(store, ctx(1), "x", 1)


def test_a_missing_rank_is_a_bad_launch_not_a_hang() -> None:
    store, ft = MemoryStore(), FakeTime()
    with pytest.raises(UsageError, match=r"1 of WORLD_SIZE=3 ranks joined within 5 s \(missing: ranks 1, 2\)"):
        join(store, ctx(0, 3), "x", 5, ft.sleep, ft.clock)
    assert store.data["go"].startswith(b"abort:bad launch")
    # a rank that arrives late hears why, instead of waiting for ever
    with pytest.raises(UsageError, match="ranks joined within 5 s"):
        join(store, ctx(1, 3), "x", 5, ft.sleep, ft.clock)


def test_ranks_that_disagree_on_the_world_size() -> None:
    store = MemoryStore()
    store.set("world_size", "2")
    store.set("run_id", "r")
    with pytest.raises(UsageError, match="WORLD_SIZE=3 here but 2 on rank 0"):
        join(store, RankContext(1, 3, 1, 3, 0, "h", 1, "torchrun"), "x", 1)
    ft = FakeTime()
    store = MemoryStore()
    store.set("world/1", "3")
    store.add("join/1", 1)
    with pytest.raises(UsageError, match="rank 1 has WORLD_SIZE=3, rank 0 has 2"):
        join(store, ctx(0), "x", 5, ft.sleep, ft.clock)


def _m(i: int) -> Measurement:
    return Measurement(Case("hadamard", "numpy", "float32", (8, 8 + i), 1), "ok",
                       samples_s=(1e-6, 1.1e-6, 0.9e-6))


def _run(rank: int, n: int, complete: bool = True) -> Run:
    return Run(f"r-rank{rank}", "m", "2026-01-01", {"hostname": f"h{rank}"},
               {"distributed": {"rank": rank, "host": f"h{rank}", "local_rank": 0}},
               tuple(_m(i) for i in range(n)), complete=complete)


def _send(store: MemoryStore, rank: int, n: int, done: bool) -> None:
    pub = Publisher(store, rank)
    run = _run(rank, n, complete=done)
    pub.header(run, Path(f"/tmp/r/rank{rank}.json"))
    for m in run.measurements:
        pub.add(m)
    if done:
        pub.done(run)


def test_gather_takes_what_each_rank_sent_and_names_the_silent() -> None:
    store, ft = MemoryStore(), FakeTime()
    _send(store, 1, 3, done=True)
    _send(store, 2, 2, done=False)  # died mid-run: two measurements sent, no heartbeat
    store.set("header/3", "{not json")  # a rank whose results cannot be read
    store.set("done/3", json.dumps({"complete": True}))
    got = gather(store, 5, _run(0, 1), "/tmp/r/rank0.json", "h0", timeout_s=600,
                 silent_after_s=30, sleep=ft.sleep, clock=ft.clock)
    assert [r.run_id for r in got.runs] == ["r-rank0", "r-rank1", "r-rank2"]
    status = {s.rank: (s.status, s.measurements, s.reason) for s in got.ranks}
    assert status[0] == ("complete", 1, "") and status[1] == ("complete", 3, "")
    assert status[2] == ("lost", 2, "no sign of life for 30 s")
    assert status[3][0] == "lost" and status[3][2].startswith("sent unreadable results")
    assert status[4] == ("lost", 0, "no sign of life for 30 s")
    assert 30 < ft.t < 32  # gave up as soon as the silence was long enough
    assert "lost after 2 measurements (no sign of life for 30 s); its own file: /tmp/r/rank2.json" in \
        got.ranks[2].describe()


def test_a_slow_but_live_rank_is_waited_for_up_to_the_gather_timeout() -> None:
    store, ft = MemoryStore(), FakeTime()
    _send(store, 1, 1, done=False)

    def sleep(s: float) -> None:
        ft.sleep(s)
        store.add("hb/1", 1)  # its heartbeat keeps beating

    got = gather(store, 2, _run(0, 1), "", "h0", timeout_s=100, silent_after_s=30, sleep=sleep, clock=ft.clock)
    assert got.ranks[1].status == "lost" and "gather timeout (100 s)" in got.ranks[1].reason
    assert 100 < ft.t < 101


def test_a_stopped_rank_0_waits_only_a_short_grace() -> None:
    store, ft = MemoryStore(), FakeTime()
    _send(store, 1, 2, done=False)
    got = gather(store, 2, _run(0, 1, complete=False), "", "h0", timeout_s=600,
                 stopping=lambda: True, sleep=ft.sleep, clock=ft.clock)
    assert ft.t <= distributed.STOP_GRACE_S + 0.1
    assert [s.status for s in got.ranks] == ["incomplete", "lost"] and len(got.runs[1].measurements) == 2


def test_a_dead_store_never_stops_a_ranks_sweep() -> None:
    store = MemoryStore()
    pub = Publisher(store, 1)
    pub.add(_m(0))
    store.broken = True
    pub.add(_m(1))
    pub.add(_m(2))
    assert pub.sent == 1 and "stopped answering (Connection reset by peer)" in pub.problem


FAST = runner.RunOptions(timing=SamplingPlan(time_budget_s=0.02, min_samples=3))
CASES = [Case("hadamard", "numpy", "float32", (16, 16), 1), Case("matmul", "numpy", "float32", (16, 16, 16), 1)]


def test_two_ranks_in_one_process(tmp_path: Path) -> None:
    store = MemoryStore()
    out = tmp_path / "results"
    outcomes: dict[int, Any] = {}

    def rank(r: int) -> None:
        outcomes[r] = distributed.run_rank(ctx(r), CASES, out, FAST, machine="node", host=f"h{r}",
                                           store_factory=lambda _c, _t: store)

    t = threading.Thread(target=rank, args=(1,))
    t.start()
    rank(0)
    t.join()
    rs = outcomes[0].runset
    assert rs is not None and not rs.missing and outcomes[1].runset is None
    assert [s.status for s in rs.ranks] == ["complete", "complete"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert files == [f"{rs.run_id}.json", f"{rs.run_id}/rank0.json", f"{rs.run_id}/rank1.json"]
    # the folder holds the set and both ranks' own files: each run is read once
    df = bench_suite.load_results([out])
    assert len(df) == 4 and sorted(df["rank"].dropna().unique()) == [0, 1]
    assert set(df["host"]) == {"h0", "h1"} and list(df["device_index"].unique()) == [0, 1]
    assert sorted(set(df["run_id"])) == [f"{rs.run_id}-rank0", f"{rs.run_id}-rank1"]
    only_set = bench_suite.load_results([out / f"{rs.run_id}.json"])
    assert len(only_set) == 4


def test_dedupe_keeps_the_fullest_copy_of_each_rank() -> None:
    partial, full, plain = _run(1, 1, complete=False), _run(1, 3), Run("x", "m", "", {}, {}, ())
    assert dedupe([partial, plain, full]) == [full, plain]
    assert dedupe([plain, plain]) == [plain, plain]  # runs outside a launch are left alone
