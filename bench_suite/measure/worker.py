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

Every message is a ``store.codec`` schema (``MeasureRequest``, ``EnvRequest``,
``ImportRequest``, ``GateAnswer``; replies ``HelloReply``, ``MeasurementReply``,
``EnvReply``): a malformed request stops the worker with one line saying what is wrong, which
the parent records as the case's failure. End of input ends the worker. Anything that kills
it (a segfault, an abort, a fatal CUDA error, a hang ended by the parent's timeout) leaves no
reply, and the parent records the case in flight as failed with the reason. JSON both ways:
nothing is pickled. ``--hello`` prints the hello on stdout and exits: how ``bench-suite ab``
checks an interpreter before a run.

The parent side is ``isolation.py``: one worker per round of a sweep (``run --rounds``), per
side and round (``ab``), or per case (``--isolate``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
from typing import Any

from bench_suite.store import codec
from bench_suite.store.codec import PROTOCOL


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
    from bench_suite.core.errors import BenchSuiteError, ResultsFileError
    from bench_suite.measure import interference
    from bench_suite.measure.runner import RunOptions, run_case

    req = codec.decode(codec.MeasureRequest, request, "worker request")
    try:
        case = Case.from_dict(req.case)
    except BenchSuiteError as exc:
        raise ResultsFileError(f"worker request: case: {exc}") from None
    options = RunOptions.from_request(req)
    interference.SIBLING_PIDS.update(req.siblings)
    m = run_case(case, get_backend(case.backend), options, round_index=req.round, gate=gate)
    return {"protocol": PROTOCOL, "measurement": m.to_dict()}


def env_request(request: Any) -> dict[str, Any]:
    from bench_suite.env import collect as env

    req = codec.decode(codec.EnvRequest, request, "worker request")
    return {"protocol": PROTOCOL, "env": env.collect(req.machine)}


def import_request(request: Any) -> dict[str, Any]:
    import importlib.util

    from bench_suite.backends import get_backend

    names = list(codec.decode(codec.ImportRequest, request, "worker request").backends)
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
        answer = codec.decode(codec.GateAnswer, line, "gate answer").gate if line.strip() else "stop"
        return True if answer == "go" else (None if answer == "free" else False)

    return gate


def serve(result_fd: int, timeout_s: float | None = None) -> int:
    out = os.fdopen(result_fd, "w", encoding="utf-8")

    def reply(doc: dict[str, Any]) -> None:
        # strict (NaN refused): a reply the parent could not parse strictly is no reply
        out.write(codec.encode_line(doc))
        out.flush()

    reply(hello())
    for line in sys.stdin:
        if not line.strip():
            continue
        envelope = codec.decode(codec.Envelope, line, "worker request")  # which command
        timeout = envelope.timeout_s if envelope.timeout_s is not None else timeout_s
        if timeout is not None and timeout > 2:
            # a hang prints the Python stack to the log shortly before the parent's timeout
            faulthandler.dump_traceback_later(max(timeout - 2, 0.9 * timeout))
        if envelope.cmd == "env":
            reply(env_request(line))
        elif envelope.cmd == "import":
            reply(import_request(line))
        elif envelope.cmd is None:
            request = codec.decode(codec.MeasureRequest, line, "worker request")
            reply(measure_request(request, _lockstep_gate(reply) if request.lockstep else None))
        else:
            raise codec.ResultsFileError(f"worker request: unknown command {envelope.cmd!r}")
        faulthandler.cancel_dump_traceback_later()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--hello"]:
        print(codec.encode_line(hello()), end="")
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
