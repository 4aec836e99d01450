"""Launches: torchrun's and srun's variables read (and refused, one line, when wrong), each
rank's GPU and share of the cores, and ``torch-cuda:all`` on a fake node."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_suite import backends
from bench_suite.core.cases import ALL_CUDA, Sweep, parse_backends
from bench_suite.core.errors import UsageError
from bench_suite.frontends import cli
from bench_suite.measure import launch
from bench_suite.measure.launch import RankContext, from_environment

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "GROUP_RANK": "0", "MASTER_ADDR": "node1", "MASTER_PORT": "29500",
            "TORCHELASTIC_RUN_ID": "abc", "TORCHELASTIC_USE_AGENT_STORE": "True"}
SRUN = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NODELIST": "gpu[007-008]",
        "SLURM_JOB_ID": "123456", "SLURM_NTASKS": "8"}


def test_no_launcher_is_a_plain_run() -> None:
    assert from_environment({}) is None
    # a batch script (sbatch) outside any srun step: one process, not a rank
    assert from_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "1"}) is None


def test_torchrun_variables() -> None:
    ctx = from_environment(TORCHRUN)
    assert ctx == RankContext(1, 4, 1, 2, 0, "node1", 29500, "torchrun", agent_store=True)
    assert ctx.to_config("node1")["launcher"] == "torchrun"


def test_srun_variables() -> None:
    ctx = from_environment(SRUN)
    assert ctx is not None
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size, ctx.node_rank) == (5, 8, 1, 4, 1)
    assert ctx.master_addr == "gpu007" and ctx.launcher == "slurm" and not ctx.agent_store
    assert ctx.master_port == launch.SLURM_PORT_BASE + 123456 % launch.SLURM_PORT_SPAN
    explicit = from_environment({**SRUN, "MASTER_ADDR": "head", "MASTER_PORT": "1234",
                                 "SLURM_CPU_BIND_TYPE": "mask_cpu:"})
    assert explicit is not None and (explicit.master_addr, explicit.master_port) == ("head", 1234)
    assert explicit.cpu_bound and not from_environment({**SRUN, "SLURM_CPU_BIND_TYPE": "none"}).cpu_bound  # type: ignore[union-attr]


@pytest.mark.parametrize(("env", "message"), [
    ({"LOCAL_RANK": "0"}, "WORLD_SIZE is not set (LOCAL_RANK is set: launch with torchrun"),
    ({**TORCHRUN, "RANK": "x"}, "RANK='x' is not a whole number"),
    ({**TORCHRUN, "RANK": "4"}, "RANK=4 is not below WORLD_SIZE=4"),
    ({**TORCHRUN, "WORLD_SIZE": "0"}, "WORLD_SIZE='0' is not a whole number in 1.."),
    ({**TORCHRUN, "LOCAL_RANK": "2"}, "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "5"}, "LOCAL_WORLD_SIZE=5 exceeds WORLD_SIZE=4"),
    ({k: v for k, v in TORCHRUN.items() if k != "MASTER_ADDR"}, "MASTER_ADDR is not set"),
    ({**TORCHRUN, "MASTER_PORT": "70000"}, "MASTER_PORT='70000' is not a whole number in 1..65535"),
    ({**TORCHRUN, "MASTER_ADDR": "a b"}, "is not a host name"),
    ({**SRUN, "SLURM_PROCID": "8"}, "SLURM_PROCID=8 is not below SLURM_STEP_NUM_TASKS=8"),
    ({**SRUN, "SLURM_LOCALID": "4"}, "SLURM_LOCALID=4 but 4 tasks on this node"),
    ({**SRUN, "SLURM_STEP_TASKS_PER_NODE": "4x2"}, "malformed SLURM_STEP_TASKS_PER_NODE"),
    ({k: v for k, v in SRUN.items() if k != "SLURM_JOB_ID"}, "SLURM_JOB_ID is not set: set MASTER_PORT"),
    ({k: v for k, v in SRUN.items() if k != "SLURM_PROCID"}, "SLURM_PROCID is not set (inside an srun step"),
])
def test_bad_launches_are_one_usage_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=r"^bad launch: ") as info:
        from_environment(env)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_bad_launch_through_the_cli_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RANK", "0")
    assert cli.main(["run", "--backends", "numpy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench-suite: error: bad launch: WORLD_SIZE is not set") and err.count("\n") == 1


@pytest.mark.parametrize(("spec", "node", "count"), [("4", 0, 4), ("2(x3),1", 2, 2), ("2(x3),1", 3, 1)])
def test_tasks_per_node(spec: str, node: int, count: int) -> None:
    assert launch.tasks_on_node(spec, node) == count


@pytest.mark.parametrize(("nodes", "first"), [
    ("node1", "node1"), ("gpu[003-010,012],cpu1", "gpu003"), ("a1,b[1-2]", "a1"),
    ("rack[2-3]-n[07,09]", "rack2-n07"),
])
def test_first_host_of_a_slurm_node_list(nodes: str, first: str) -> None:
    assert launch.first_host(nodes) == first


def _topology(root: Path, siblings: dict[int, str]) -> str:
    for cpu, text in siblings.items():
        d = root / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "core_cpus_list").write_text(text + "\n")
    return str(root)


def test_cpu_shares_are_disjoint_whole_cores(tmp_path: Path) -> None:
    # 4 cores with hyperthreads: cpu N and N+4 are siblings
    root = _topology(tmp_path, {c: f"{c % 4},{c % 4 + 4}" for c in range(8)})
    shares = [launch.cpu_share(range(8), r, 2, root) for r in range(2)]
    assert shares == [[0, 1, 4, 5], [2, 3, 6, 7]]
    quarters = [launch.cpu_share(range(8), r, 4, root) for r in range(4)]
    assert quarters == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert launch.cpu_share([0, 1], 2, 3, str(tmp_path / "none")) == [0]  # more ranks than cores
    assert launch.cpu_share([0, 1, 2], 0, 1, str(tmp_path / "none")) == [0, 1, 2]


def test_assign_cpu_share_respects_the_launcher() -> None:
    bound = RankContext(0, 2, 0, 2, 0, "h", 1, "slurm", cpu_bound=True)
    assert launch.assign_cpu_share(bound)["why"] == "bound by the launcher"
    alone = RankContext(0, 2, 0, 1, 0, "h", 1, "torchrun")
    assert launch.assign_cpu_share(alone)["pinned"] is False


def _ctx(local_rank: int = 0, device: int | None = None, launcher: str = "torchrun") -> RankContext:
    return RankContext(local_rank, 8, local_rank, 8, 0, "h", 1, launcher, local_device=device)


def test_each_rank_benchmarks_its_own_gpu() -> None:
    four = lambda: 4  # noqa: E731
    assert launch.localize_backends(("numpy", "torch-cuda"), _ctx(3), four) == ("numpy", "torch-cuda:3")
    assert launch.localize_backends((ALL_CUDA,), _ctx(2), four) == ("torch-cuda:2",)
    # srun --gpus-per-task=1: each task sees one GPU, index 0
    assert launch.localize_backends(("torch-cuda",), _ctx(5), lambda: 1) == ("torch-cuda:0",)
    # no GPU on this rank: the cases are recorded as skipped, as without a launcher
    assert launch.localize_backends(("torch-cuda",), _ctx(5), lambda: 0) == ("torch-cuda",)
    # --concurrent names the device; explicit names all become it
    assert launch.localize_backends(("torch-cuda:0", "torch-cuda:2"), _ctx(1, device=2, launcher="concurrent"),
                                    four) == ("torch-cuda:2",)
    with pytest.raises(UsageError, match="LOCAL_RANK=5 but 4 GPUs visible"):
        launch.localize_backends(("torch-cuda",), _ctx(5), four)
    with pytest.raises(UsageError, match="use --backends torch-cuda, not torch-cuda:1"):
        launch.localize_backends(("torch-cuda:1",), _ctx(0), four)


def test_torch_cuda_all_expands_to_every_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 3)
    names = backends.expand_devices(parse_backends("numpy,torch-cuda:all", allow_all=True))
    assert names == ("numpy", "torch-cuda:0", "torch-cuda:1", "torch-cuda:2")
    cases = Sweep(ops=("matmul",), backends=names, sizes=(64,), threads=(1,)).expand()
    # each device has its own cases (CUDA cases run once, at "all" threads)
    assert [c.id for c in cases if c.backend != "numpy"] == [
        f"matmul/torch-cuda:{i}/float32/n=64/threads=all{g}" for i in range(3) for g in ("", "/grad")]
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 0)
    assert backends.expand_devices((ALL_CUDA,)) == ("torch-cuda",)  # skipped with the reason
    with pytest.raises(UsageError, match="name the devices"):
        parse_backends(ALL_CUDA)  # only where the caller expands it
    with pytest.raises(UsageError, match="name the devices"):
        Sweep(backends=(ALL_CUDA,)).expand()


def test_cli_list_with_torch_cuda_all(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 2)
    assert cli.main(["list", "--backends", "torch-cuda:all", "--ops", "matmul", "--sizes", "64",
                     "--grad-modes", "no_grad", "--ids"]) == 0
    assert capsys.readouterr().out.split() == ["matmul/torch-cuda:0/float32/n=64/threads=all",
                                               "matmul/torch-cuda:1/float32/n=64/threads=all"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--concurrent"], "name them with --backends"),
    (["--concurrent", "--backends", "numpy,torch-cuda:all"], "drop numpy from --backends"),
])
def test_concurrent_refuses_what_it_cannot_do(argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 2)
    assert cli.main(["run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_concurrent_without_gpus(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 0)
    assert cli.main(["run", "--concurrent", "--backends", "torch-cuda:all"]) == 2
    assert "no GPU is visible" in capsys.readouterr().err


def test_child_environment_of_concurrent() -> None:
    env = launch.child_env(1, [0, 2], 4321, "run-1", {"TORCHELASTIC_RUN_ID": "x", "PATH": "/bin"})
    assert env["RANK"] == env["LOCAL_RANK"] == "1" and env["WORLD_SIZE"] == "2"
    assert env[launch.LOCAL_DEVICE_ENV] == "2" and env[launch.RUN_ID_ENV] == "run-1"
    assert "TORCHELASTIC_RUN_ID" not in env
    ctx = from_environment(env)
    assert ctx is not None and ctx.launcher == "concurrent" and ctx.local_device == 2
    assert ctx.run_id == "run-1" and ctx.master_addr == "127.0.0.1" and not ctx.agent_store
