"""Hand-built runs for the report tests: every time is chosen so the tables' numbers can be
computed by hand (and are, in tests/test_report_tables.py).

Two machines: ``laptop`` (4 cores, numpy and torch-cpu at 1 thread and all) and ``gpubox``
(the same plus torch-cuda). Unless given, a cell's samples are five equal times, so its
median is exactly that time, its confidence interval has zero width and it is not noisy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench_suite.core.cases import Case, is_backward, is_cuda_backend
from bench_suite.store.results import Measurement, Run

CORES = 4
#: A machine name, GPU name and reason that try every markup trick we know.
HOSTILE = ('<script>alert(1)</script><img src=x onerror=alert(2)> | **bold** _it_ `code` '
           '[link](javascript:alert(3)) ![img](http://evil.example/x.png) &lt; $\\frac{1}{0}$ '
           '$\\bogus{$ <!-- c --> # h')


def meas(op: str, backend: str, n: int, t: float | None, threads: int | None = 1,
         grad: str = "no_grad", dtype: str = "float32", samples: Sequence[float] | None = None,
         status: str = "ok", reason: str = "", device_name: str = "",
         extra: dict[str, Any] | None = None) -> Measurement:
    shape = (n, n, n) if op.startswith("matmul") else (n, n)
    if is_backward(op):
        grad = "grad"
    case = Case(op, backend, dtype, shape, threads, grad)
    cuda = is_cuda_backend(backend)
    ok = status == "ok"
    return Measurement(
        case=case,
        status=status,
        reason=reason,
        samples_s=tuple(samples) if samples is not None else ((t,) * 5 if ok and t else ()),
        number=1 if ok else 0,
        stop="converged" if ok else "",
        threads=None if cuda else (threads or CORES),
        device_name=device_name or ("Fake GPU" if cuda else "Fake CPU"),
        extra=extra or {},
    )


def run(machine: str, measurements: Sequence[Measurement], run_id: str = "",
        gpu: str = "", argv: Sequence[str] = ("run", "--preset", "quick"), cpu: str = "Fake CPU") -> Run:
    env: dict[str, Any] = {"cpu": {"model": cpu, "usable_cores": CORES},
                           "memory": {"total_bytes": 16 * 2**30},
                           "packages": {"numpy": "2.0", "torch": "2.5"},
                           "torch": {"gpus": [{"name": gpu}] if gpu else []}}
    return Run(run_id or f"run-{machine}", machine, "2026-01-01T00:00:00+00:00", env,
               {"argv": list(argv)}, tuple(measurements), "2026-01-01T00:01:00+00:00", True)


def laptop_measurements() -> list[Measurement]:
    """numpy and torch-cpu; the times (seconds) are what the tests check against."""
    m = meas
    return [
        # matmul forward, n=64: numpy 1 thread 4e-4, all 1e-4; torch 2e-4 / 1e-4 (grad 1.1x)
        m("matmul", "numpy", 64, 4e-4),
        m("matmul", "numpy", 64, 1e-4, threads=None),
        m("matmul", "torch-cpu", 64, 2e-4),
        m("matmul", "torch-cpu", 64, 2.2e-4, grad="grad"),
        m("matmul", "torch-cpu", 64, 1e-4, threads=None),
        m("matmul", "torch-cpu", 64, 1.25e-4, threads=None, grad="grad"),
        # matmul n=128: numpy noisy at all threads (median 1e-3, IQR/median = 1)
        m("matmul", "numpy", 128, 3.2e-3),
        m("matmul", "numpy", 128, None, threads=None, samples=[0.5e-3, 1e-3, 1e-3, 2e-3, 3e-3]),
        m("matmul", "torch-cpu", 128, 1.6e-3),
        # candidate CI [0.9, 1.1] x 0.8e-3 (five samples: the interval is min..max)
        m("matmul", "torch-cpu", 128, None, threads=None,
          samples=[0.72e-3, 0.8e-3, 0.8e-3, 0.8e-3, 0.88e-3]),
        # hadamard n=64
        m("hadamard", "numpy", 64, 2e-5),
        m("hadamard", "numpy", 64, 2e-5, threads=None),
        m("hadamard", "torch-cpu", 64, 1e-5),
        m("hadamard", "torch-cpu", 64, 5e-6, threads=None),
        # backward passes: numpy hand-derived, torch autograd
        m("matmul_backward", "numpy", 64, 8.8e-4),
        m("matmul_backward", "torch-cpu", 64, 5e-4),
        m("matmul_backward", "numpy", 64, 2.5e-4, threads=None),
        m("matmul_backward", "torch-cpu", 64, 2e-4, threads=None),
        m("hadamard_backward", "numpy", 64, 5e-5),
        m("hadamard_backward", "torch-cpu", 64, 3e-5),
        # problems
        m("hadamard", "torch-cpu", 128, None, status="failed",
          reason="wrong result: rel_error 0.5 > tolerance 1e-4"),
    ]


def gpubox_measurements(gpu_name: str = "Fake GPU") -> list[Measurement]:
    m = meas
    return [
        m("matmul", "numpy", 64, 3e-4),
        m("matmul", "numpy", 64, 1e-4, threads=None),
        m("matmul", "torch-cpu", 64, 1.5e-4),
        m("matmul", "torch-cpu", 64, 5e-5, threads=None),
        m("matmul", "torch-cuda", 64, 1e-5, threads=None, device_name=gpu_name),
        m("matmul", "torch-cuda", 64, 2e-5, threads=None, grad="grad", device_name=gpu_name),
        m("matmul_backward", "numpy", 64, 2e-4, threads=None),
        m("matmul_backward", "torch-cuda", 64, 2.5e-5, threads=None, device_name=gpu_name),
        m("hadamard", "torch-cuda", 64, None, threads=None, status="skipped",
          reason="not enough GPU memory", device_name=gpu_name),
    ]


def two_runs() -> list[Run]:
    return [run("laptop", laptop_measurements()),
            run("gpubox", gpubox_measurements(), gpu="Fake GPU")]


def hostile_runs() -> list[Run]:
    """Runs whose machine name, GPU name and reasons are markup."""
    laptop = [meas("matmul", "numpy", 64, 4e-4), meas("matmul", "torch-cpu", 64, 2e-4),
              meas("matmul", "numpy", 64, 1e-4, threads=None),
              meas("matmul", "torch-cpu", 64, 1e-4, threads=None),
              meas("matmul_backward", "numpy", 64, 8e-4),
              meas("matmul_backward", "torch-cpu", 64, 5e-4),
              meas("hadamard", "torch-cpu", 64, None, status="failed", reason=HOSTILE)]
    gpu = [meas("matmul", "torch-cuda", 64, 1e-5, threads=None, device_name=HOSTILE),
           meas("matmul", "numpy", 64, 1e-4, threads=None),
           meas("hadamard", "torch-cuda", 64, None, threads=None, status="skipped",
                reason=HOSTILE + "\n## injected heading\n| a | b |")]
    return [run(HOSTILE, laptop, run_id="r1" + HOSTILE, gpu=HOSTILE,
                argv=["run", "--machine", HOSTILE]),
            run("_" + HOSTILE, gpu, run_id="r2", gpu=HOSTILE)]
