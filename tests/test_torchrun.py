"""Real launches on the CPU: ``torchrun --standalone --nproc-per-node 2`` (numpy, one thread
per rank, tiny sizes), a rank killed mid-run, bad launches, and ``--concurrent`` on a fake
GPU node. Each starts real processes, so they take a few seconds (marked ``slow``; CI runs them)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bench_suite
from tests import fake_gpu_node, rank_faults

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--backends", "numpy", "--threads", "1", "--time-budget", "0.03", "--min-samples", "3",
         "--target", "0.5", "--quiet"]
TIMEOUT = 180


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_", "TORCHELASTIC_", "SLURM_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["BENCH_SUITE_MACHINE"] = "node"
    env.update(extra)
    return env


def torchrun(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return subprocess.run([*launcher, "--standalone", "--nproc-per-node", "2", "-m", "bench_suite", "run",
                           *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT)


def run_set(folder: Path) -> dict[str, Any]:
    (path,) = folder.glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == "bench-suite/run-set"
    return doc


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("torchrun")
    # two rounds: each rank measures each round in a fresh worker, on its own cores
    proc = torchrun([*SWEEP, "--ops", "matmul,hadamard", "--sizes", "16,32", "--rounds", "2",
                     "--out", "res/", "--report", "rep"], tmp)
    return tmp, proc


def test_two_ranks_give_one_result_set(launched: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    tmp, proc = launched
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = run_set(tmp / "res")
    assert doc["world_size"] == 2 and doc["launcher"] == "torchrun"
    assert [(r["rank"], r["status"], r["measurements"]) for r in doc["ranks"]] == [
        (0, "complete", 4), (1, "complete", 4)]
    df = bench_suite.load_results([tmp / "res"])  # the set and the ranks' own files: read once
    assert len(df) == 8 and (df["status"] == "ok").all()
    assert sorted(df["rank"].unique()) == [0, 1] and sorted(df["device_index"].unique()) == [0, 1]
    assert df["host"].nunique() == 1 and df["host"].iloc[0] == socket.gethostname()
    # the rounds of each case, sent one by one, merged as in a run file
    assert {len(m["rounds"]) for r in doc["runs"] for m in r["measurements"]} == {2}
    shares = [r["config"]["distributed"]["cpu_share"] for r in doc["runs"]]
    if len(os.sched_getaffinity(0)) >= 2:  # each rank pinned to its own cores
        assert all(s["pinned"] for s in shares)
        assert not set(shares[0]["cpus"]) & set(shares[1]["cpus"])
    assert "saved a run set of 2 of 2 ranks (8 measurements)" in proc.stdout


def test_the_report_has_a_fleet_section(launched: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    tmp, _proc = launched
    summary = (tmp / "rep" / "summary.md").read_text()
    assert "### Fleet" in summary and f"{socket.gethostname()} cpu#1" in summary
    assert (tmp / "rep" / "figures" / "fleet.png").exists()


def test_a_killed_rank_leaves_the_others_results_and_a_message(tmp_path: Path) -> None:
    # one round, in the rank's own process: the fault kills the rank, not a round's worker
    proc = torchrun([*SWEEP, "--ops", "matmul", "--sizes", "16,24,37", "--rounds", "1", "--out", "res/"],
                    tmp_path,
                    BENCH_SUITE_BACKEND_PLUGINS=rank_faults.PLUGIN,
                    **{rank_faults.RANK_ENV: "1", rank_faults.SIZE_ENV: "37",
                       rank_faults.AFTER_ENV: str(tmp_path / "res" / "*" / "rank0.json*")})
    assert proc.returncode != 0  # torchrun reports the dead rank
    doc = run_set(tmp_path / "res")
    ranks = {r["rank"]: r for r in doc["ranks"]}
    assert ranks[0]["measurements"] >= 1
    assert ranks[1]["status"] == "lost" and ranks[1]["measurements"] == 2  # sent before it died
    assert ranks[1]["path"].endswith("rank1.json.journal")  # its own durable copy
    df = bench_suite.load_results([tmp_path / "res" / f"{doc['run_id']}.json"])
    assert set(df["rank"]) == {0, 1} and (df["status"] == "ok").all()
    assert f"missing: rank 1 on {socket.gethostname()}: lost after 2 measurements" in proc.stderr


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, world: int, port: int, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = _env(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    return subprocess.run([sys.executable, "-m", "bench_suite", "run", *SWEEP, "--ops", "hadamard",
                           "--sizes", "8", "--join-timeout", "1", *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_a_world_size_that_does_not_match_is_one_line_not_a_hang(tmp_path: Path) -> None:
    proc = _rank(0, 2, _port(), tmp_path)  # rank 1 never comes
    assert proc.returncode == 2
    assert proc.stderr == ("bench-suite: error: bad launch: 1 of WORLD_SIZE=2 ranks joined within 1 s "
                           "(missing: rank 1): check WORLD_SIZE, --nnodes and --nproc-per-node "
                           "(or srun's task count)\n")


def test_no_rank_0_is_one_line_not_a_hang(tmp_path: Path) -> None:
    port = _port()
    proc = _rank(1, 2, port, tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"bench-suite: error: bad launch: cannot reach the rendezvous store at "
                                  f"127.0.0.1:{port} within 1 s")


def test_concurrent_runs_one_process_per_gpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench_suite", "run", "--concurrent", "--backends", "torch-cuda:all",
         "--ops", "matmul", "--sizes", "16", "--grad-modes", "no_grad", "--time-budget", "0.03",
         "--min-samples", "3", "--target", "0.5", "--rounds", "1", "--quiet", "--out", "res/"],
        cwd=tmp_path, env=_env(BENCH_SUITE_BACKEND_PLUGINS=fake_gpu_node.PLUGIN),
        capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = run_set(tmp_path / "res")
    assert doc["launcher"] == "concurrent" and [r["status"] for r in doc["ranks"]] == ["complete"] * 2
    df = bench_suite.load_results([tmp_path / "res"])
    assert sorted(df["case_id"]) == ["matmul/torch-cuda:0/float32/n=16/threads=all",
                                     "matmul/torch-cuda:1/float32/n=16/threads=all"]
    assert sorted(df["device_index"]) == [0, 1] and (df["device_name"] == fake_gpu_node.H100).all()
    assert "concurrent: 2 processes, one per GPU (0, 1)" in proc.stderr
