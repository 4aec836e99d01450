"""One rank per device: what torchrun or Slurm's srun said this process is, its device, its
share of the CPU cores, and ``--concurrent`` (one local rank per GPU, spawned).

The suite has no scheduler of its own. Launchers clusters already use start the processes and
say in environment variables which one each is:

* **torchrun** (``torch.distributed.run``): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``; its agent hosts the key-value store
  (``TORCHELASTIC_USE_AGENT_STORE=True``), so no rank starts one.
* **srun** (where torchrun's variables are absent): ``SLURM_PROCID`` (rank), the step's
  ``SLURM_STEP_NUM_TASKS`` (world size), ``SLURM_LOCALID``, ``SLURM_NODEID`` and
  ``SLURM_STEP_TASKS_PER_NODE`` (``2(x3),1``); the store's address is ``MASTER_ADDR`` or else
  the first host of ``SLURM_STEP_NODELIST``, its port ``MASTER_PORT`` or else one derived from
  ``SLURM_JOB_ID`` (every task of the step derives the same). A batch script that is not
  inside an ``srun`` step has no ``SLURM_STEP_*`` variables and runs as one process.
* **--concurrent**: ``bench-suite run --concurrent`` spawns one ``python -m bench_suite``
  per GPU with torchrun's variables plus ``BENCH_SUITE_LAUNCHER=concurrent`` and
  ``BENCH_SUITE_LOCAL_DEVICE`` (the GPU it owns). Children are spawned, never forked, so a
  CUDA context in the parent can never leak into them.

A variable that is missing or malformed, or that contradicts another, is a ``UsageError``:
one line and exit status 2, never a hang. The store, the start barrier and the gather are in
``distributed.py``. This module imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_suite.core.cases import ALL_CUDA, cuda_index, is_cuda_backend
from bench_suite.core.errors import UsageError
from bench_suite.env import system

LAUNCHER_ENV = "BENCH_SUITE_LAUNCHER"
LOCAL_DEVICE_ENV = "BENCH_SUITE_LOCAL_DEVICE"
RUN_ID_ENV = "BENCH_SUITE_RUN_ID"
#: Ports derived from SLURM_JOB_ID fall in [SLURM_PORT_BASE, SLURM_PORT_BASE + SLURM_PORT_SPAN).
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 20000
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_MAX_WORLD = 1 << 20


@dataclass(frozen=True)
class RankContext:
    """Who this process is in a launch of several."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int | None  # ranks on this host (None: the launcher did not say)
    node_rank: int | None
    master_addr: str
    master_port: int
    launcher: str  # torchrun | slurm | concurrent | env
    agent_store: bool = False  # torchrun's agent hosts the store: no rank starts one
    local_device: int | None = None  # the GPU this rank owns, when the launcher said
    cpu_bound: bool = False  # the launcher already bound this rank to its own cores
    restart: int = 0  # torchrun's restart count: keys of an earlier attempt are not reused
    run_id: str | None = None  # given by the launcher (--concurrent)

    def to_config(self, host: str) -> dict[str, Any]:
        """What a run records about its place in the launch (``config["distributed"]``)."""
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "local_world_size": self.local_world_size, "node_rank": self.node_rank,
                "launcher": self.launcher, "host": host}


def _opt_int(env: Mapping[str, str], name: str, low: int = 0, high: int = _MAX_WORLD) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    if not re.fullmatch(r"\d{1,13}", text) or not low <= int(text) <= high:
        raise UsageError(f"bad launch: {name}={text[:40]!r} is not a whole number in {low}..{high}")
    return int(text)


def _int(env: Mapping[str, str], name: str, low: int = 0, high: int = _MAX_WORLD, why: str = "") -> int:
    value = _opt_int(env, name, low, high)
    if value is None:
        raise UsageError(f"bad launch: {name} is not set{why}")
    return value


def from_environment(env: Mapping[str, str] | None = None) -> RankContext | None:
    """The launch this process is part of, or None for a plain single-process run.

    Raises ``UsageError`` for a launch that cannot work: a missing, malformed or contradictory
    variable (RANK beyond WORLD_SIZE, LOCAL_RANK beyond LOCAL_WORLD_SIZE, no store address).
    """
    env = os.environ if env is None else env
    given = [v for v in _TORCHRUN_VARS if env.get(v, "").strip()]
    if given:
        return _torchrun(env, given)
    if env.get("SLURM_STEP_NUM_TASKS", "").strip():
        return _slurm(env)
    return None


def _torchrun(env: Mapping[str, str], given: list[str]) -> RankContext:
    why = f" ({', '.join(given)} {'is' if len(given) == 1 else 'are'} set: launch with torchrun, " \
          "which sets RANK, WORLD_SIZE and LOCAL_RANK, or unset them)"
    world = _int(env, "WORLD_SIZE", low=1, why=why)
    rank = _int(env, "RANK", why=why)
    local_rank = _int(env, "LOCAL_RANK", why=why)
    local_world = _opt_int(env, "LOCAL_WORLD_SIZE", low=1)
    if rank >= world:
        raise UsageError(f"bad launch: RANK={rank} is not below WORLD_SIZE={world}")
    if local_world is not None and local_rank >= local_world:
        raise UsageError(f"bad launch: LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_world}")
    if local_world is not None and local_world > world:
        raise UsageError(f"bad launch: LOCAL_WORLD_SIZE={local_world} exceeds WORLD_SIZE={world}")
    addr, port = _store_address(env, world, None)
    launcher = env.get(LAUNCHER_ENV, "").strip() or (
        "torchrun" if env.get("TORCHELASTIC_RUN_ID") else "env")
    device = _opt_int(env, LOCAL_DEVICE_ENV, high=4095)
    restart = _opt_int(env, "TORCHELASTIC_RESTART_COUNT") or 0
    return RankContext(
        rank, world, local_rank, local_world, _opt_int(env, "GROUP_RANK"), addr, port,
        launcher, agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
        local_device=device, restart=restart,
        run_id=_run_id(env.get(RUN_ID_ENV)),
    )


def _slurm(env: Mapping[str, str]) -> RankContext:
    why = " (inside an srun step, which sets it)"
    world = _int(env, "SLURM_STEP_NUM_TASKS", low=1, why=why)
    rank = _int(env, "SLURM_PROCID", why=why)
    local_rank = _int(env, "SLURM_LOCALID", why=why)
    node = _opt_int(env, "SLURM_NODEID")
    if rank >= world:
        raise UsageError(f"bad launch: SLURM_PROCID={rank} is not below SLURM_STEP_NUM_TASKS={world}")
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
    local_world = tasks_on_node(per_node, node or 0) if per_node else None
    if local_world is not None and local_rank >= local_world:
        raise UsageError(f"bad launch: SLURM_LOCALID={local_rank} but {local_world} tasks on this "
                         f"node (SLURM_STEP_TASKS_PER_NODE={per_node!r})")
    addr, port = _store_address(env, world, "slurm")
    bind = env.get("SLURM_CPU_BIND_TYPE", "").strip().lower()
    return RankContext(
        rank, world, local_rank, local_world, node, addr, port, "slurm",
        local_device=_opt_int(env, LOCAL_DEVICE_ENV, high=4095),
        cpu_bound=bool(bind) and not bind.startswith("none"),
        run_id=_run_id(env.get(RUN_ID_ENV)),
    )


def _store_address(env: Mapping[str, str], world: int, slurm: str | None) -> tuple[str, int]:
    addr = env.get("MASTER_ADDR", "").strip()
    if not addr and slurm:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
        addr = first_host(nodes) if nodes.strip() else ""
    if not addr:
        hint = " and SLURM_STEP_NODELIST is empty" if slurm else ""
        raise UsageError(f"bad launch: MASTER_ADDR is not set{hint}: rank 0's host is needed to "
                         "gather the results")
    if not re.fullmatch(r"[A-Za-z0-9._:\[\]-]{1,255}", addr):
        raise UsageError(f"bad launch: MASTER_ADDR={addr[:60]!r} is not a host name or address")
    if env.get("MASTER_PORT", "").strip() or not slurm:
        port = _int(env, "MASTER_PORT", low=1, high=65535,
                    why=" (torchrun sets it; with srun, export it or leave it to SLURM_JOB_ID)")
        return addr, port
    job = _int(env, "SLURM_JOB_ID", high=1 << 40, why=": set MASTER_PORT, the port rank 0 listens on")
    return addr, SLURM_PORT_BASE + job % SLURM_PORT_SPAN


def _run_id(text: str | None) -> str | None:
    if not text:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", text):
        raise UsageError(f"bad launch: {RUN_ID_ENV}={text[:40]!r} is not a run id")
    return text


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: ``gpu[003-010,012],cpu1`` -> ``gpu003``."""
    text = nodelist.strip()
    depth = 0
    for i, ch in enumerate(text):  # the first top-level item
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            text = text[:i]
            break
    while "[" in text:
        start = text.index("[")
        end = text.find("]", start)
        if end < 0:
            raise UsageError(f"bad launch: malformed Slurm node list {nodelist[:80]!r}")
        first = re.split(r"[,-]", text[start + 1:end], maxsplit=1)[0]
        text = text[:start] + first + text[end + 1:]
    if not text:
        raise UsageError(f"bad launch: empty Slurm node list {nodelist[:80]!r}")
    return text


def tasks_on_node(spec: str, node: int) -> int:
    """Tasks on node ``node`` from Slurm's ``SLURM_STEP_TASKS_PER_NODE`` (``2(x3),1``)."""
    counts: list[int] = []
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\d{1,6})(?:\(x(\d{1,6})\))?\s*", item)
        if m is None:
            raise UsageError(f"bad launch: malformed SLURM_STEP_TASKS_PER_NODE {spec[:60]!r}")
        counts += [int(m[1])] * int(m[2] or 1)
    if not 0 <= node < len(counts):
        raise UsageError(f"bad launch: SLURM_NODEID={node} but SLURM_STEP_TASKS_PER_NODE={spec!r} "
                         f"lists {len(counts)} nodes")
    return counts[node]


# --- the rank's device ----------------------------------------------------------------------


def local_cuda_index(ctx: RankContext, visible: int) -> int:
    """The GPU a rank owns: the launcher's choice; else ``LOCAL_RANK``'s; else, where the
    launcher left each task exactly one visible GPU (srun ``--gpus-per-task=1``), that one."""
    if ctx.local_device is not None:
        index = ctx.local_device
    elif ctx.local_rank < visible:
        index = ctx.local_rank
    elif visible == 1:
        index = 0
    else:
        raise UsageError(
            f"bad launch: LOCAL_RANK={ctx.local_rank} but {visible} GPU{'s' if visible != 1 else ''} "
            "visible on this node: start at most one rank per GPU (--nproc-per-node)")
    if index >= max(visible, 1):
        raise UsageError(f"bad launch: GPU {index} asked for, {visible} visible")
    return index


def localize_backends(names: Sequence[str], ctx: RankContext,
                      visible: Callable[[], int]) -> tuple[str, ...]:
    """A rank's backends: every CUDA one (``torch-cuda``, ``torch-cuda:all``) becomes the rank's
    own GPU, ``torch-cuda:<index>``; CPU backends stay (the rank runs them on its own cores).

    An explicit ``torch-cuda:N`` is refused under torchrun or srun (each rank has one GPU,
    chosen by LOCAL_RANK) unless the launcher named the device (``--concurrent``).
    """
    out: list[str] = []
    count: int | None = None
    for name in names:
        if name != ALL_CUDA and not is_cuda_backend(name):
            out.append(name)
            continue
        if ctx.local_device is None and name not in (ALL_CUDA, "torch-cuda"):
            raise UsageError(f"under {ctx.launcher} each rank benchmarks its own GPU (LOCAL_RANK's): "
                             f"use --backends torch-cuda, not {name}")
        if count is None:
            count = visible()
        if count == 0 and ctx.local_device is None:
            out.append("torch-cuda")  # recorded as skipped ("no CUDA"), as without a launcher
            continue
        out.append(f"torch-cuda:{local_cuda_index(ctx, count)}")
    return tuple(dict.fromkeys(out))


# --- the rank's share of the CPU ------------------------------------------------------------


def core_groups(cpus: Sequence[int], root: str = system.CPU_ROOT) -> list[list[int]]:
    """``cpus`` grouped by physical core (hyperthread siblings together), in CPU order, so that
    a share never splits a core between two ranks."""
    seen: dict[int, list[int]] = {}
    groups: list[list[int]] = []
    allowed = set(cpus)
    for cpu in sorted(cpus):
        if cpu in seen:
            continue
        siblings = sorted((system.core_siblings(cpu, root) & allowed) | {cpu})
        group = [c for c in siblings if c not in seen]
        for c in group:
            seen[c] = group
        groups.append(group)
    return groups


def cpu_share(cpus: Sequence[int], local_rank: int, local_world_size: int,
              root: str = system.CPU_ROOT) -> list[int]:
    """The CPUs of local rank ``local_rank`` of ``local_world_size``: a contiguous block of
    whole physical cores, disjoint from every other rank's. With fewer cores than ranks each
    rank gets one core, shared round-robin (said in the run's config)."""
    groups = core_groups(cpus, root)
    n = len(groups)
    if local_world_size <= 1 or n == 0:
        return sorted(cpus)
    if n < local_world_size:
        return sorted(groups[local_rank % n])
    lo, hi = local_rank * n // local_world_size, (local_rank + 1) * n // local_world_size
    return sorted(c for g in groups[lo:hi] for c in g)


def pin_process(cpus: Sequence[int]) -> None:
    """Bind every thread of this process to ``cpus`` (threads a BLAS already started too:
    ``sched_setaffinity`` on a pid binds only that thread)."""
    want = set(cpus)
    tids = system.thread_ids()
    if tids is None:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.sched_setaffinity(tid, want)


def assign_cpu_share(ctx: RankContext) -> dict[str, Any]:
    """Pin this rank to its share of the cores it may use; what was done, for the run's config.

    Nothing is changed where the launcher already bound the rank (Slurm ``--cpu-bind``), where
    it is the host's only rank, or where the launcher did not say how many ranks share the host.
    """
    try:
        before = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return {"pinned": False, "why": "no CPU affinity on this platform"}
    if ctx.cpu_bound:
        return {"pinned": False, "cpus": before, "why": "bound by the launcher"}
    if not ctx.local_world_size or ctx.local_world_size <= 1:
        return {"pinned": False, "cpus": before, "why": "the host's only rank"}
    share = cpu_share(before, ctx.local_rank, ctx.local_world_size)
    pin_process(share)
    out: dict[str, Any] = {"pinned": True, "cpus": share, "of": len(before)}
    if len(core_groups(before)) < ctx.local_world_size:
        out["shared"] = f"{ctx.local_world_size} ranks on {len(before)} CPUs: cores are shared"
    return out


# --- --concurrent: one local rank per GPU ---------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ConcurrentResult:
    exit_codes: tuple[int, ...]  # per rank, as returned by Popen (negative: killed by a signal)

    @property
    def failed(self) -> list[int]:
        return [r for r, rc in enumerate(self.exit_codes) if rc not in (0, 1)]


def child_env(rank: int, devices: Sequence[int], port: int, run_id: str,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of local rank ``rank`` started by ``--concurrent``: torchrun's variables,
    its GPU, the shared run id, and the import path of this bench_suite."""
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith(("TORCHELASTIC_", "SLURM_STEP_"))]:
        del env[key]  # a launch inside a launch: the children answer to this one only
    env.update({
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(len(devices)),
        "LOCAL_WORLD_SIZE": str(len(devices)), "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port), LAUNCHER_ENV: "concurrent",
        LOCAL_DEVICE_ENV: str(devices[rank]), RUN_ID_ENV: run_id,
    })
    root = Path(__file__).resolve().parents[2]  # the folder that holds bench_suite/
    if root.name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env


def run_concurrent(argv: Sequence[str], devices: Sequence[int], run_id: str,
                   python: str | None = None) -> ConcurrentResult:
    """Start ``python -m bench_suite <argv>`` once per device, all at once, and wait for them.

    Each child is a rank (torchrun's variables): it benchmarks its GPU, writes its own run
    file, and rank 0 gathers the others' through the store, as under torchrun. A child that
    dies does not stop the others. Ctrl-C reaches the children too (same process group); they
    save what they have, and the parent waits for them before it returns.
    """
    if not devices:
        raise UsageError("--concurrent: no GPU to run on")
    port = free_port()
    procs = [subprocess.Popen([python or sys.executable, "-m", "bench_suite", *argv],
                              env=child_env(r, devices, port, run_id), stdin=subprocess.DEVNULL)
             for r in range(len(devices))]
    codes: list[int] = []
    try:
        for p in procs:
            codes.append(p.wait())
    except BaseException:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise
    return ConcurrentResult(tuple(codes))


def cuda_devices(backends: Sequence[str]) -> list[int]:
    """The GPU indices named by CUDA backends, in order."""
    return list(dict.fromkeys(cuda_index(b) for b in backends if is_cuda_backend(b)))
