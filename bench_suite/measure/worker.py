"""The worker process: measures the cases it is sent, one at a time, in a fresh interpreter.

    python -m bench_suite.measure.worker --serve --result-fd FD
    python -m bench_suite.measure.worker --hello

``--serve`` reads one JSON request per line on stdin and writes one JSON reply per line on
the file descriptor ``FD`` (a pipe from the parent; stdout and stderr stay free for whatever
the libraries print, and the parent keeps them as the worker's log). The first line written
is a *hello* (protocol, version, process id), so the parent knows the interpreter can import
this package before it sends any work. Requests:

* a measurement: ``{"protocol", "case", "seed", "timing", "gpu", "round"}``; reply
  ``{"protocol", "measurement"}``. With ``"lockstep": true`` the worker takes turns with
  another (``ab``): after warming up, and after every sample, it writes ``{"protocol",
  "gate": k}`` and waits for ``{"protocol", "gate": "go" | "stop" | "free"}`` (free: go on
  alone). ``"siblings"``: process ids of the other side's workers, which are not "other
  processes" on a shared GPU;
* ``{"protocol", "cmd": "env", "machine"}``: the environment of this process (its
  interpreter, packages, torch and GPUs as it sees them); reply ``{"protocol", "env"}``;
* ``{"protocol", "cmd": "import", "backends"}``: import what those backends need (torch:
  seconds), so that a round's workers can do it at once, before any of them measures;
  reply ``{"protocol", "imported"}``.

End of input ends the worker. Anything that kills it (a segfault, an abort, a fatal CUDA
error, a hang ended by the parent's timeout) leaves no reply, and the parent records the case
in flight as failed with the reason. JSON both ways: nothing is pickled. ``--hello`` prints
the hello on stdout and exits: how ``bench-suite ab`` checks an interpreter before a run.

The parent side is ``isolation.py``: one worker per round of a sweep (``run --rounds``), per
side and round (``ab``), or per case (``--isolate``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
from typing import Any

#: Version of the messages exchanged with the parent. Optional fields may be added without
#: a bump; the parent checks the hello's protocol before it sends anything.
PROTOCOL = 1


def _die_with_parent(parent_pid: int | None) -> None:
    """Linux: the kernel kills this worker if the run that started it dies (SIGKILL, crash),
    so no orphan keeps a core or a GPU busy."""
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def hello() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("bench-suite")
    except PackageNotFoundError:
        package = None
    return {"protocol": PROTOCOL, "hello": {"pid": os.getpid(), "python": sys.executable,
                                            "version": package,
                                            # the bench_suite package this worker runs
                                            "module": os.path.dirname(os.path.dirname(__file__))}}


def measure_request(request: Any, gate: Any = None) -> dict[str, Any]:
    """Measure the case a request names; the measurement as a JSON-ready document.
    ``gate``: the turn-taking of a lockstep request (``timing.Gate``)."""
    from bench_suite.backends import get_backend
    from bench_suite.core.cases import Case
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.measure import interference
    from bench_suite.measure.gpu.options import TimingMode
    from bench_suite.measure.runner import RunOptions, run_case

    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
        raise ValueError(f"not a worker request of protocol {PROTOCOL}")
    case = Case.from_dict(request["case"])
    options = RunOptions(seed=int(request["seed"]), timing=SamplingPlan(**request["timing"]),
                         gpu=TimingMode.from_config(request.get("gpu")))
    siblings = request.get("siblings")
    if isinstance(siblings, list):
        interference.SIBLING_PIDS.update(p for p in siblings if isinstance(p, int))
    m = run_case(case, get_backend(case.backend), options, round_index=int(request.get("round", 0)),
                 gate=gate)
    return {"protocol": PROTOCOL, "measurement": m.to_dict()}


def env_request(request: dict[str, Any]) -> dict[str, Any]:
    from bench_suite.env import collect as env

    machine = request.get("machine")
    return {"protocol": PROTOCOL, "env": env.collect(machine if isinstance(machine, str) else None)}


def import_request(request: dict[str, Any]) -> dict[str, Any]:
    import importlib.util

    from bench_suite.backends import get_backend

    names = request.get("backends")
    names = [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
    for name in names:
        get_backend(name)
    if any(n != "numpy" for n in names) and importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401
    return {"protocol": PROTOCOL, "imported": names}


def _lockstep_gate(reply: Any) -> Any:
    """Ask the parent before each sample (see ``timing.Gate``)."""
    asked = 0

    def gate() -> bool | None:
        nonlocal asked
        reply({"protocol": PROTOCOL, "gate": asked})
        asked += 1
        line = sys.stdin.readline()
        answer = json.loads(line).get("gate") if line.strip() else "stop"
        return True if answer == "go" else (None if answer == "free" else False)

    return gate


def serve(result_fd: int, timeout_s: float | None = None) -> int:
    out = os.fdopen(result_fd, "w", encoding="utf-8")

    def reply(doc: dict[str, Any]) -> None:
        # allow_nan=False: a reply the parent could not parse strictly is no reply
        out.write(json.dumps(doc, allow_nan=False) + "\n")
        out.flush()

    reply(hello())
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
            raise ValueError(f"not a worker request of protocol {PROTOCOL}")
        timeout = request.get("timeout_s", timeout_s)
        if isinstance(timeout, (int, float)) and timeout > 2:
            # a hang prints the Python stack to the log shortly before the parent's timeout
            faulthandler.dump_traceback_later(max(timeout - 2, 0.9 * timeout))
        if request.get("cmd") == "env":
            reply(env_request(request))
        elif request.get("cmd") == "import":
            reply(import_request(request))
        else:
            gate = _lockstep_gate(reply) if request.get("lockstep") else None
            reply(measure_request(request, gate))
        faulthandler.cancel_dump_traceback_later()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--hello"]:
        print(json.dumps(hello()))
        return 0
    if len(argv) != 3 or argv[0] != "--serve" or argv[1] != "--result-fd" or not argv[2].isdigit():
        print("usage: python -m bench_suite.measure.worker --serve --result-fd FD | --hello", file=sys.stderr)
        return 2
    parent = os.environ.get("BENCH_SUITE_PARENT_PID", "")
    _die_with_parent(int(parent) if parent.isdigit() else None)
    faulthandler.enable()  # a crash prints the Python stack to the log the parent keeps
    return serve(int(argv[2]))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: some GPU runtimes crash while unloading, after the results
    # are safely written, and that must not turn a measured case into a failed one.
    os._exit(code)
