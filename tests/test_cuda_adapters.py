"""The real CUDA adapters of ``torch_backend`` (``_CudaDevice``, ``_CudaEvent``, the case
stream, TF32, the memory pre-check) and the CUDA-graph path of ``measure.gpu``, run over a
fake ``torch.cuda`` on the real CPU torch (``tests/fake_torch.py``): real tensors, real
autograd and real verification, CUDA's streams and capture rules emulated."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

pytest.importorskip("torch")

from bench_suite.backends import get_backend, torch_backend
from bench_suite.backends.torch_backend import TorchCudaBackend, _CudaDevice, _CudaEvent
from bench_suite.core import ops
from bench_suite.core.cases import OPS, Case, fixed_grad_mode, is_backward, square_shape
from bench_suite.core.timing import EventTimer, SamplingPlan
from bench_suite.env import collect as env
from bench_suite.measure import gpu as measure_gpu
from bench_suite.measure import harness
from bench_suite.measure.gpu.options import TimingMode
from bench_suite.measure.runner import RunOptions, run_case
from tests.fake_torch import CAPTURE_ERROR, FakeCuda, FakeTorch

FAST = SamplingPlan(time_budget_s=0.03, min_samples=3, min_block_s=1e-4, warmup_s=0.0)
GRAPHS = RunOptions(timing=FAST, gpu=TimingMode(cuda_graphs=True, nvml=False, warmup_gpu_s=0.002))
PLAIN = RunOptions(timing=FAST, gpu=TimingMode(nvml=False, warmup_gpu_s=0.002))
SHAPES = {"matmul": (12, 20, 8), "elementwise": (12, 8)}


def _case(op: str, dtype: str = "float32", grad: str = "no_grad", backend: str = "torch-cuda") -> Case:
    if op in ("matmul", "matmul_backward", "hadamard", "hadamard_backward"):
        shape = SHAPES["matmul" if op.startswith("matmul") else "elementwise"]
    else:  # the newer ops: small square shapes of their own kind
        shape = square_shape(op, 8)
    grad = fixed_grad_mode(op) or grad
    return Case(op, backend, dtype, shape, None, grad)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTorch:
    torch = FakeTorch(FakeCuda(devices=2))
    monkeypatch.setattr(torch_backend, "_torch", lambda: torch)
    monkeypatch.setattr(torch_backend, "torch_installed", lambda: True)
    monkeypatch.setattr(measure_gpu, "_torch", lambda: torch)
    return torch


# --- _CudaDevice and _CudaEvent -----------------------------------------------------------


def test_events_record_on_the_current_stream_of_their_own_card(fake: FakeTorch) -> None:
    cuda = fake.cuda
    assert cuda.current_device == 0
    start, end = _CudaEvent(1), _CudaEvent(1)  # torch-cuda:1 while card 0 is current
    assert start._event.device == 1 and cuda.current_device == 0
    start.record()
    end.record()
    assert start._event.stream is cuda.defaults[1] and end._event.stream is cuda.defaults[1]
    end.synchronize()
    assert start.elapsed_time(end) >= 0.0
    dev = _CudaDevice(1)
    before = cuda.syncs
    dev.synchronize()
    assert cuda.syncs == before + 1 and isinstance(dev.event(), _CudaEvent)


def test_a_case_runs_on_its_cards_own_non_default_stream(fake: FakeTorch) -> None:
    cuda = fake.cuda
    backend = TorchCudaBackend("torch-cuda:1")
    stream = backend.stream()
    assert stream is backend.stream() and stream.device == 1 and stream is not cuda.defaults[1]
    timer = backend.timer(lambda: 0)
    assert isinstance(timer, EventTimer) and isinstance(timer.device, _CudaDevice)
    with backend.threads(None) as applied:
        assert applied is None and cuda.current_stream(1) is stream
        timer.time_block(lambda: None, 3)
    assert cuda.current_stream(1) is cuda.defaults[1]  # restored after the case
    assert [s for what, s in cuda.log if what == "event"] == [stream, stream]


def test_inputs_and_the_forward_graph_are_made_on_the_case_stream(fake: FakeTorch) -> None:
    backend = TorchCudaBackend()
    case = _case("matmul_backward")
    prepared = backend.prepare(case, ops.make_inputs(case, 0))
    made = [(what, s) for what, s in fake.cuda.log if what in ("from_numpy", "full", "matmul", "mul")]
    assert made and all(s is backend.stream() for _what, s in made)
    assert ("matmul", backend.stream()) in made  # the forward C = A @ B whose backward is timed
    prepared.release()


# --- CUDA graphs of every op, backward included -------------------------------------------


#: Ops whose graphs are replayed and checked; a training step (state restored between calls),
#: copies and random fills are timed without graphs, with the reason recorded.
UNGRAPHED = ("mlp_step", "h2d", "d2h", "create")
#: The fake records what a captured graph replays op by op (matmul, mul, autograd.grad); linear
#: (addmm and an in-place activation) and bmm are graphed on a real GPU only (gpu-marked
#: tests); their outputs' read and poison are tested below on CPU tensors.
NOT_IN_FAKE = ("linear", "bmm")
GRID = [(op, grad) for op, grad in itertools.product(OPS, ("no_grad", "grad"))
        if not (is_backward(op) and grad == "no_grad") and op not in UNGRAPHED + NOT_IN_FAKE]


@pytest.mark.parametrize("names", [("Y",), ("dX", "dW", "dbias")])
def test_newer_ops_expose_their_outputs_for_the_replay_check(names: tuple[str, ...]) -> None:
    import torch

    from bench_suite.backends.torch_ops import _read_poison

    read, poison = _read_poison(torch, names)
    out = tuple(torch.ones(2, 3) for _ in names)
    result = out if len(names) > 1 else out[0]
    assert set(read(result)) == set(names)
    poison(result)
    assert all(torch.isnan(t).all() for t in out)


@pytest.mark.parametrize("op", UNGRAPHED)
def test_ops_whose_replays_cannot_be_checked_are_not_graphed(fake: FakeTorch, op: str) -> None:
    m = run_case(_case(op), TorchCudaBackend(), GRAPHS)
    assert m.status == "ok", m.reason
    assert "skipped" in m.extra["cuda_graph"] and "calls_per_graph" not in m.extra["cuda_graph"]


@pytest.mark.parametrize(("op", "grad"), GRID)
def test_graphs_capture_and_replay_on_the_case_stream_and_are_checked(fake: FakeTorch, op: str,
                                                                      grad: str) -> None:
    backend = TorchCudaBackend()
    case = _case(op, grad=grad)
    m = run_case(case, backend, GRAPHS)
    assert m.status == "ok", m.reason
    g = m.extra["cuda_graph"]
    assert g["replay_checked"] is True and g["replay_rel_error"] <= ops.TOLERANCE["float32"]
    stream = backend.stream()
    cuda = fake.cuda
    assert cuda.capture_streams == [stream]
    # every event and every replay was on the case stream, the default stream never used
    timed = [s for what, s in cuda.log if what in ("event", "replay")]
    assert timed and all(s is stream for s in timed)
    assert cuda.current_stream(0) is cuda.defaults[0]
    assert m.extra["launch"]["launch_bound"] is not None


def test_a_backward_whose_forward_is_on_another_stream_fails_its_capture(
        fake: FakeTorch, monkeypatch: pytest.MonkeyPatch) -> None:
    """What went wrong before: the forward graph built on the default stream, the capture on
    a side stream. Recorded as failed, with the reason, and the stream restored."""
    import contextlib

    backend = TorchCudaBackend()
    monkeypatch.setattr(TorchCudaBackend, "_case_context", lambda self: contextlib.nullcontext())
    m = run_case(_case("matmul_backward"), backend, GRAPHS)
    assert m.status == "failed"
    assert m.reason.startswith("GraphCaptureError: CUDA graph capture failed: RuntimeError: " + CAPTURE_ERROR)
    assert "then RuntimeError: CUDA error: operation failed due to a previous error" in m.reason
    cuda = fake.cuda
    assert cuda.current_stream(0) is cuda.defaults[0] and not cuda.is_current_stream_capturing()
    # the same case, on its own stream, is fine on the same backend afterwards
    monkeypatch.undo()
    monkeypatch.setattr(torch_backend, "_torch", lambda: fake)
    monkeypatch.setattr(torch_backend, "torch_installed", lambda: True)
    monkeypatch.setattr(measure_gpu, "_torch", lambda: fake)
    assert run_case(_case("matmul_backward"), TorchCudaBackend(), GRAPHS).status == "ok"


@pytest.mark.parametrize("op", ["matmul", "hadamard_backward"])
def test_a_graph_whose_replay_writes_nothing_is_a_wrong_result(fake: FakeTorch, op: str) -> None:
    fake.cuda.empty_replays = True  # an empty graph: the first call was right, replays do nothing
    m = run_case(_case(op), TorchCudaBackend(), GRAPHS)
    assert m.status == "failed"
    assert m.reason.startswith("CUDA graph replay gave a wrong result: relative error inf > tolerance")
    assert m.rel_error is None and m.tolerance == ops.TOLERANCE["float32"]


def test_plain_event_timing_runs_on_the_case_stream_too(fake: FakeTorch) -> None:
    backend = TorchCudaBackend()
    m = run_case(_case("hadamard"), backend, PLAIN)
    assert m.status == "ok", m.reason
    assert "cuda_graph" not in m.extra and m.extra["warmup"]["gpu_s"] > 0
    events = [s for what, s in fake.cuda.log if what == "event"]
    assert events and all(s is backend.stream() for s in events)


# --- TF32 ---------------------------------------------------------------------------------


def _precision() -> str:
    import torch

    return str(torch.backends.cuda.matmul.fp32_precision)


def test_tf32_is_set_for_the_case_alone_and_restored(fake: FakeTorch) -> None:
    before = _precision()
    case = _case("matmul", "tf32")
    backend = TorchCudaBackend()
    assert backend.availability(case).ok
    with harness.ready(case, 0, backend) as ready:
        assert _precision() == "tf32"
        assert env.torch_info()["tf32_matmul"] is True  # and reading it does not crash
        assert ready.prepared.inputs["A"].dtype.name == "float64"
        assert ready.tolerance == ops.TOLERANCE["tf32"]
    assert _precision() == before
    m = run_case(case, backend, GRAPHS)
    assert m.status == "ok", m.reason
    assert _precision() == before


def test_tf32_is_restored_when_preparing_fails(fake: FakeTorch, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _precision()

    def broken(self: Any, case: Case, inputs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(TorchCudaBackend, "_prepare", broken)
    m = run_case(_case("matmul", "tf32"), TorchCudaBackend(), PLAIN)
    assert m.status == "failed" and m.reason == "out of memory: RuntimeError: CUDA out of memory"
    assert _precision() == before


def test_tf32_needs_tensor_cores_and_a_gpu(fake: FakeTorch) -> None:
    fake.cuda.capability = (7, 0)
    avail = TorchCudaBackend().availability(_case("matmul", "tf32"))
    assert not avail.ok
    assert avail.reason == "NVIDIA H200 (sm_70) has no TF32 tensor cores (Ampere, sm_80, and later have)"
    for name in ("numpy", "torch-cpu"):
        why = get_backend(name).availability(_case("matmul", "tf32", backend=name))
        assert not why.ok and why.reason == (f"tf32 is float32 on CUDA tensor cores; {name} has no "
                                             "TF32 math (use float32)")


# --- the memory pre-check counts everything a case holds ----------------------------------


def test_cuda_memory_precheck_counts_retained_outputs_and_host_copies(
        fake: FakeTorch, monkeypatch: pytest.MonkeyPatch) -> None:
    big = Case("matmul_backward", "torch-cuda", "float32", (8192, 8192, 8192))
    n2 = 8192 * 8192
    # A, B, dC, dA, dB and the retained forward output C
    assert torch_backend.cuda_case_bytes(big) == 6 * n2 * 4
    assert torch_backend.cuda_case_bytes(_case("matmul", grad="grad")) == (12 * 20 + 20 * 8 + 2 * 12 * 8) * 4
    # float64 masters and device copies of A, B, dC; float64 outputs and their reference
    assert torch_backend.cuda_host_bytes(big) == 8 * (2 * 3 * n2 + 2 * 2 * n2)
    fake.cuda.free = int(6 * n2 * 4 / 0.8) - 1  # inputs and outputs would fit, C would not
    assert ops.footprint_bytes(big) <= 0.8 * fake.cuda.free
    avail = TorchCudaBackend().availability(big)
    assert not avail.ok and avail.reason.startswith("needs 1.50 GiB, cuda:0 has")
    fake.cuda.free = 64 << 30
    monkeypatch.setattr(torch_backend, "host_available_bytes", lambda: 2 << 30)
    avail = TorchCudaBackend().availability(big)
    assert not avail.ok and avail.reason == "needs 5.00 GiB, the host has 2.00 GiB free"
