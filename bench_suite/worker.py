"""The worker of ``--isolate``: measures one case in a fresh process and exits.

    python -m bench_suite.worker REQUEST_FILE RESULT_FILE

The request (JSON) names the case and the run's options; the measurement comes back as JSON
in ``RESULT_FILE``, written under a temporary name and renamed, so the parent reads a whole
result or none. JSON both ways: nothing is pickled. Anything that kills this process
(a segfault, an abort, a fatal CUDA error, a hang ended by the parent's timeout) leaves no
result, and the parent records the case as failed with the reason. See ``isolation.py``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

#: Version of the request/result documents exchanged with the parent.
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


def measure_request(request: Any) -> dict[str, Any]:
    """Measure the case a request names; the measurement as a JSON-ready document."""
    from bench_suite.backends import get_backend
    from bench_suite.cases import Case
    from bench_suite.gpu_options import TimingOptions
    from bench_suite.runner import RunOptions, run_case
    from bench_suite.timing import TimingConfig

    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
        raise ValueError(f"not a worker request of protocol {PROTOCOL}")
    case = Case.from_dict(request["case"])
    options = RunOptions(seed=int(request["seed"]), timing=TimingConfig(**request["timing"]),
                         gpu=TimingOptions.from_config(request.get("gpu")))
    m = run_case(case, get_backend(case.backend), options)
    return {"protocol": PROTOCOL, "measurement": m.to_dict()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m bench_suite.worker REQUEST_FILE RESULT_FILE", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if not isinstance(request, dict):
        raise ValueError("a worker request must be a JSON object")
    _die_with_parent(request.get("parent_pid"))
    # A crash prints the Python stack to the output the parent keeps; a hang prints it shortly
    # before the parent's timeout ends the worker.
    faulthandler.enable()
    timeout = request.get("timeout_s")
    if isinstance(timeout, (int, float)) and timeout > 2:
        faulthandler.dump_traceback_later(max(timeout - 2, 0.9 * timeout))
    # allow_nan=False: a result the parent could not parse strictly is no result
    text = json.dumps(measure_request(request), allow_nan=False)
    result_path = Path(argv[1])
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: some GPU runtimes crash while unloading, after the result is
    # safely written, and that must not turn a measured case into a failed one.
    os._exit(code)
