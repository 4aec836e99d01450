"""The layer, the training step, batched matmul and data movement: their case ids and sweeps,
work counts, references and checks, the reset that keeps a training step from drifting, its
timed phases, the copies on a fake CUDA device, and the link peak they are held to."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bench_suite.analysis import roofline
from bench_suite.backends import get_backend, torch_backend
from bench_suite.backends.base import Phase, Prepared
from bench_suite.backends.numpy_backend import NumpyBackend
from bench_suite.backends.torch_backend import TorchCudaBackend
from bench_suite.core import cases, ops
from bench_suite.core.cases import Case, Sweep, parse_case_id
from bench_suite.core.errors import UsageError
from bench_suite.core.timing import SamplingPlan
from bench_suite.env import collect as env
from bench_suite.measure import phases
from bench_suite.measure.gpu.options import TimingMode, time_case
from bench_suite.measure.runner import RunOptions, run_case
from bench_suite.store.results import Run, to_frame
from tests.fake_torch_copies import FakeTorch
from tests.fakes import FakeClock

FAST = RunOptions(seed=3, timing=SamplingPlan(time_budget_s=0.03, min_samples=3, warmup_s=0,
                                              min_block_s=1e-4))

# --- case ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("case, case_id", [
    (Case("linear", "torch-cpu", "float32", (256, 256, 256), 1),
     "linear/torch-cpu/float32/n=256/threads=1"),
    (Case("linear", "torch-cpu", "float32", (64, 128, 32), None, "grad", "gelu"),
     "linear/torch-cpu/float32/b=64,i=128,o=32/threads=all/act=gelu/grad"),
    (Case("linear_backward", "numpy", "float16", (8, 8, 8), 2, variant="tanh"),
     "linear_backward/numpy/float16/n=8/threads=2/act=tanh"),
    (Case("mlp_step", "numpy", "float64", (128, 128)), "mlp_step/numpy/float64/n=128/threads=all"),
    (Case("mlp_step", "torch-cuda", "bfloat16", (32, 512)),
     "mlp_step/torch-cuda/bfloat16/b=32,w=512/threads=all"),
    (Case("bmm", "numpy", "float32", (16, 256, 256, 256), 1), "bmm/numpy/float32/b=16,n=256/threads=1"),
    (Case("bmm", "torch-cuda", "float16", (12, 1024, 64, 1024), grad_mode="grad"),
     "bmm/torch-cuda/float16/b=12,m=1024,k=64,n=1024/threads=all/grad"),
    (Case("h2d", "torch-cuda", "float32", (1024, 1024)), "h2d/torch-cuda/float32/n=1024/threads=all"),
    (Case("d2h", "torch-cuda:1", "float32", (64, 32), variant="pinned"),
     "d2h/torch-cuda:1/float32/m=64,n=32/threads=all/mem=pinned"),
    (Case("create", "torch-cuda", "float32", (4096, 4096), variant="host"),
     "create/torch-cuda/float32/n=4096/threads=all/on=host"),
])
def test_ids_name_the_variant_only_when_it_is_not_the_default(case: Case, case_id: str) -> None:
    assert case.id == case_id
    assert parse_case_id(case_id) == case
    assert Case.from_dict(case.to_dict()) == case


def test_defaults_are_stored_and_the_building_blocks_are_unchanged() -> None:
    assert Case("linear", "numpy", "float32", (4, 4, 4)).variant == "relu"
    assert Case("h2d", "torch-cuda", "float32", (4, 4)).variant == "pageable"
    assert Case("create", "numpy", "float32", (4, 4)).variant == "device"
    assert Case("linear", "numpy", "float32", (4, 4, 4), variant="relu") == \
        Case("linear", "numpy", "float32", (4, 4, 4))
    mm = Case("matmul", "numpy", "float32", (8, 8, 8), 1)
    assert mm.variant == "" and "variant" not in mm.to_dict()  # saved files read as before
    # the training step always records the graph, copies and fills never
    assert Case("mlp_step", "numpy", "float32", (8, 8)).grad_mode == "grad"
    assert Case("h2d", "torch-cuda", "float32", (8, 8), grad_mode="grad").grad_mode == "no_grad"


@pytest.mark.parametrize("kwargs, message", [
    ({"op": "linear", "shape": (4, 4), "variant": ""}, "linear needs 3 dimensions"),
    ({"op": "bmm", "shape": (4, 4, 4)}, "bmm needs 4 dimensions"),
    ({"op": "linear", "shape": (4, 4, 4), "variant": "swish"}, "unknown activation 'swish'"),
    ({"op": "matmul", "shape": (4, 4, 4), "variant": "gelu"}, "matmul has no variants"),
    ({"op": "h2d", "shape": (4, 4), "variant": "relu"}, "unknown host memory 'relu'"),
    ({"op": "linear", "shape": (4, 4, 4), "backend": "numpy", "grad_mode": "grad"},
     "numpy has no autograd"),
])
def test_invalid_new_cases_are_user_errors(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"backend": "torch-cpu", "dtype": "float32"}
    with pytest.raises(UsageError, match=message):
        Case(**{**base, **kwargs})


@pytest.mark.parametrize("bad", ["linear/numpy/float32/n=8/threads=1/mem=pinned",
                                 "matmul/numpy/float32/n=8/threads=1/act=gelu",
                                 "bmm/numpy/float32/m=1,k=2,n=3/threads=1",
                                 "mlp_step/numpy/float32/b=8/threads=1"])
def test_malformed_new_ids_are_user_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_case_id(bad)


def test_frame_dimensions_of_the_new_ops() -> None:
    b = Case("bmm", "numpy", "float32", (12, 1024, 64, 512))
    assert (b.batch, b.m, b.k, b.n) == (12, 1024, 64, 512)
    lin = Case("linear", "numpy", "float32", (32, 64, 128))  # X 32x64, W 128x64: m=b, k=i, n=o
    assert (lin.m, lin.k, lin.n, lin.batch) == (32, 64, 128, None)
    mlp = Case("mlp_step", "numpy", "float32", (32, 64))
    assert (mlp.m, mlp.k, mlp.n) == (32, None, 64)


# --- sweeps ---------------------------------------------------------------------------------


def test_sizes_give_each_op_its_shape() -> None:
    sizes = cases.parse_sizes("16,8x4x2,4x8x16x32,8x4")
    assert sizes == (16, (8, 4, 2), (4, 8, 16, 32), (8, 4))
    got = {(c.op, c.shape) for c in Sweep(ops=("linear", "bmm", "mlp_step", "h2d"),
                                          backends=("numpy",), sizes=sizes, threads=(1,)).expand()}
    assert got == {("linear", (16, 16, 16)), ("linear", (8, 4, 2)),
                   ("bmm", (cases.BMM_BATCH, 16, 16, 16)), ("bmm", (4, 8, 16, 32)),
                   ("mlp_step", (16, 16)), ("mlp_step", (8, 4)),
                   ("h2d", (16, 16)), ("h2d", (8, 4))}


def test_variant_axes_expand_where_they_apply() -> None:
    sweep = Sweep(ops=("linear", "h2d", "create"), backends=("numpy", "torch-cuda"), sizes=(8,),
                  threads=(1,), grad_modes=("no_grad",), activations=("relu", "gelu"))
    ids = [c.id for c in sweep.expand()]
    assert ids == [
        "linear/numpy/float32/n=8/threads=1", "linear/numpy/float32/n=8/threads=1/act=gelu",
        "linear/torch-cuda/float32/n=8/threads=all",
        "linear/torch-cuda/float32/n=8/threads=all/act=gelu",
        # a copy is one case on a CPU backend (skipped with the reason), both memories on CUDA
        "h2d/numpy/float32/n=8/threads=all", "h2d/torch-cuda/float32/n=8/threads=all",
        "h2d/torch-cuda/float32/n=8/threads=all/mem=pinned",
        "create/numpy/float32/n=8/threads=1", "create/torch-cuda/float32/n=8/threads=all",
        "create/torch-cuda/float32/n=8/threads=all/on=host",
    ]
    with pytest.raises(UsageError, match="unknown activation 'elu'"):
        Sweep(ops=("linear",), activations=("elu",)).expand()


def test_ops_filter_keeps_each_parts_own_axes() -> None:
    quick = cases.get_preset("quick").sweep
    only = quick.with_filters(ops=("mlp_step", "matmul"))
    ids = {c.id for c in only.expand()}
    assert "mlp_step/numpy/float32/n=256/threads=all" in ids  # the part's size and threads
    assert not any(i.startswith("mlp_step") and "threads=1" in i for i in ids)
    assert "matmul/numpy/float32/n=1024/threads=1" in ids  # the building blocks' grid
    assert {c.op for c in only.expand()} == {"matmul", "mlp_step"}
    # other filters replace the axis in every part
    small = quick.with_filters(ops=("linear",), sizes=(32,), threads=(1,))
    assert [c.id for c in small.expand() if c.backend == "numpy"] == ["linear/numpy/float32/n=32/threads=1"]
    # an op no part has goes to the first sweep
    assert {c.op for c in Sweep(ops=("matmul",)).with_filters(ops=("bmm",)).expand()} == {"bmm"}


def test_presets_hold_real_transformer_shapes_and_a_range_of_bmm_batches() -> None:
    default = cases.get_preset("default").sweep.expand()
    full = cases.get_preset("full").sweep.expand()
    shapes = {(c.op, c.shape, c.variant) for c in full}
    assert ("matmul", (4096, 4096, 16384), "") in shapes  # 4096 tokens x d_model 4096 x d_ff 16384
    assert ("linear", (4096, 4096, 16384), "gelu") in shapes
    assert ("bmm", (32, 4096, 128, 4096), "") in shapes  # 32 heads: Q·Kᵀ
    assert ("bmm", (12, 1024, 64, 1024), "") in {(c.op, c.shape, c.variant) for c in default}
    bmm = sorted({c.shape for c in default if c.op == "bmm"})
    assert max(s[0] for s in bmm) >= 1024 and min(s[0] for s in bmm) <= 4  # many small, few large
    # the training step stays small enough for its float64 reference
    assert max(c.shape[1] for c in full if c.op == "mlp_step") <= 2048
    # the copies and the layer share the building blocks' sizes (the break-even needs them)
    mm = {c.shape[0] for c in default if c.op == "matmul" and len(set(c.shape)) == 1}
    assert mm <= {c.shape[0] for c in default if c.op == "h2d"}
    assert mm <= {c.shape[0] for c in default if c.op == "linear" and len(set(c.shape)) == 1}


def test_quick_grows_by_well_under_fifteen_seconds() -> None:
    """Per-case budgets of the newer ops' cases that run on a CPU machine (copies skip at
    once there): the training step times its phases too, about a second budget more."""
    preset = cases.get_preset("quick")
    timed = [c for c in preset.sweep.expand() if c.op in cases.NEW_OPS
             and c.op not in cases.LINK_OPS and not cases.is_cuda_backend(c.backend)]
    budget = sum(preset.time_budget_s * (2 if c.op == "mlp_step" else 1) for c in timed)
    assert budget <= 8.0
    assert {c.op for c in timed} == set(cases.NEW_OPS) - set(cases.LINK_OPS)


# --- work counts ----------------------------------------------------------------------------


def test_work_counts_of_the_new_ops() -> None:
    b, i, o = 2, 3, 5
    lin = Case("linear", "numpy", "float32", (b, i, o))
    assert ops.flops(lin) == 2 * b * i * o + b * o + b * o
    assert ops.bytes_moved(lin) == (b * i + o * i + o + b * o) * 4
    lb = Case("linear_backward", "numpy", "float64", (b, i, o))
    assert ops.flops(lb) == 4 * b * i * o + 2 * b * o
    assert ops.bytes_moved(lb) == (2 * b * i + 2 * o * i + o + 2 * b * o) * 8
    bw, w = 3, 4
    mlp = Case("mlp_step", "numpy", "float16", (bw, w))
    assert ops.flops(mlp) == 16 * bw * w * w + 14 * bw * w + 6 * w * w + 6 * w
    assert ops.bytes_moved(mlp) == (2 * bw * w + 6 * w * w + 6 * w) * 2
    bmm = Case("bmm", "numpy", "float32", (7, 2, 3, 5))
    assert ops.flops(bmm) == 2 * 7 * 2 * 3 * 5
    assert ops.bytes_moved(bmm) == 7 * (2 * 3 + 3 * 5 + 2 * 5) * 4
    for op in ("h2d", "d2h", "create"):
        c = Case(op, "torch-cuda", "bfloat16", (6, 7))
        assert ops.flops(c) == 0 and ops.bytes_moved(c) == 6 * 7 * 2
        assert ops.arithmetic_intensity(c) == 0
    assert ops.arithmetic_intensity(Case("bmm", "numpy", "float32", (16, 64, 64, 64))) == \
        pytest.approx(2 * 64**3 / (3 * 64 * 64 * 4))


# --- references and checks -------------------------------------------------------------------


@pytest.mark.parametrize("name", cases.ACTIVATIONS)
def test_activation_gradients_match_finite_differences(name: str) -> None:
    z = np.linspace(-3, 3, 601) + 1e-3  # off ReLU's kink
    h = 1e-6
    numeric = (ops.activation(name, z + h) - ops.activation(name, z - h)) / (2 * h)
    assert np.allclose(ops.activation_grad(name, z), numeric, atol=1e-7)


@pytest.mark.parametrize("name", cases.ACTIVATIONS)
def test_the_float64_layer_and_its_gradients_agree_with_torch(name: str) -> None:
    torch = pytest.importorskip("torch")
    case = Case("linear_backward", "numpy", "float64", (6, 5, 4), variant=name)
    x = ops.make_inputs(case, 0)
    t = {k: torch.from_numpy(v).requires_grad_(k != "dY") for k, v in x.items()}
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "tanh": torch.tanh,
           "sigmoid": torch.sigmoid, "identity": lambda v: v}[name]
    y = act(torch.nn.functional.linear(t["X"], t["W"], t["bias"]))
    fwd = ops.reference(Case("linear", "numpy", "float64", (6, 5, 4), variant=name), x)
    assert np.allclose(fwd["Y"], y.detach().numpy(), rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(y, (t["X"], t["W"], t["bias"]), t["dY"])
    ref = ops.reference(case, x)
    for name_, g in zip(("dX", "dW", "dbias"), grads, strict=True):
        assert np.allclose(ref[name_], g.numpy(), rtol=1e-12, atol=1e-12)


def test_the_float64_training_step_agrees_with_torch_autograd_and_sgd() -> None:
    torch = pytest.importorskip("torch")
    case = Case("mlp_step", "numpy", "float64", (7, 5))
    x = ops.make_inputs(case, 0)
    params = [torch.from_numpy(x[p].copy()).requires_grad_(True) for p in ops.MLP_PARAMS]
    w1, b1, w2, b2, w3, b3 = params
    f = torch.nn.functional
    y = f.linear(f.relu(f.linear(f.relu(f.linear(torch.from_numpy(x["X"]), w1, b1)), w2, b2)), w3, b3)
    loss = f.mse_loss(y, torch.from_numpy(x["T"]), reduction="sum") / 7
    loss.backward()
    torch.optim.SGD(params, lr=ops.LEARNING_RATE).step()
    ref = ops.mlp_reference(x)
    for name, p in zip(ops.MLP_PARAMS, params, strict=True):
        assert np.allclose(ref[name], p.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert not np.allclose(ref[name], x[name], rtol=0.05)  # the step moved every parameter


def test_a_wrong_gradient_fails_the_training_step_even_in_bfloat16() -> None:
    case = Case("mlp_step", "torch-cpu", "bfloat16", (32, 16))
    x = ops.make_inputs(case, 0)
    good = ops.mlp_reference(x)
    assert ops.relative_error(case, x, good)[0] == 0.0
    wrong = dict(good, b1=x["b1"] - ops.LEARNING_RATE * 0.9 * (x["b1"] - good["b1"]) / ops.LEARNING_RATE)
    assert ops.relative_error(case, x, wrong)[0] > ops.tolerance(case)  # 10% off in one bias
    not_moved = dict(good, W2=x["W2"])
    assert ops.relative_error(case, x, not_moved)[0] >= 1.0
    bad_forward = dict(good, Z1=good["Z1"] * 1.1)
    assert ops.relative_error(case, x, bad_forward)[0] > ops.tolerance(case)


def test_the_layers_backward_checks_the_saved_preactivation_and_every_gradient() -> None:
    case = Case("linear_backward", "numpy", "float32", (12, 10, 8), variant="relu")
    x = ops.make_inputs(case, 0)
    x["Z"] = x["X"] @ x["W"].T + x["bias"]
    ref = ops.reference(case, x)
    assert ops.relative_error(case, x, ref) == (0.0, "full")
    assert ops.relative_error(case, dict(x, Z=x["Z"] + 0.1), ref)[0] > 1e-2
    assert ops.relative_error(case, x, dict(ref, dbias=ref["dbias"] * 0))[0] == pytest.approx(1.0)


def test_large_layers_are_checked_in_quadratic_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "FULL_REFERENCE_MAX_MKN", 10)
    lin = Case("linear", "numpy", "float64", (40, 12, 8), variant="gelu")
    x = ops.make_inputs(lin, 0)
    y = ops.reference(lin, x)["Y"]
    assert ops.relative_error(lin, x, {"Y": y}) == (0.0, "rows")
    bad = y.copy()
    bad[:, 3] += 1.0  # a wrong column is in every sampled row
    assert ops.relative_error(lin, x, {"Y": bad})[0] > 1e-2
    nan = y.copy()
    nan[17, 2] = np.nan  # in a row the sample may miss: still caught
    assert ops.relative_error(lin, x, {"Y": nan})[0] == math.inf
    lb = Case("linear_backward", "numpy", "float64", (40, 12, 8), variant="tanh")
    xb = ops.make_inputs(lb, 0)
    xb["Z"] = xb["X"] @ xb["W"].T + xb["bias"]
    ref = ops.reference(lb, xb)
    err, method = ops.relative_error(lb, xb, ref)
    assert method == "projection" and err < 1e-12
    wrong = dict(ref, dW=ref["dW"].copy())
    wrong["dW"][5, 7] += 1.0
    assert ops.relative_error(lb, xb, wrong)[0] > 1e-3
    bm = Case("bmm", "numpy", "float64", (3, 4, 5, 6))
    xm = ops.make_inputs(bm, 0)
    c = ops.reference(bm, xm)["C"]
    assert ops.relative_error(bm, xm, {"C": c})[1] == "projection"
    c2 = c.copy()
    c2[2, 1, 1] += 1.0
    assert ops.relative_error(bm, xm, {"C": c2})[0] > 1e-3


def test_a_random_fill_is_checked_as_a_normal_sample() -> None:
    case = Case("create", "numpy", "float32", (128, 128))
    tol = ops.tolerance(case)
    rng = np.random.default_rng(5)
    assert ops.relative_error(case, {}, {"R": rng.standard_normal((128, 128))})[0] < tol
    assert ops.relative_error(case, {}, {"R": rng.random((128, 128))})[0] > tol  # uniform
    assert ops.relative_error(case, {}, {"R": np.full((128, 128), 0.3)})[0] > tol  # constant
    quarter = rng.standard_normal((128, 128))
    quarter[:32] = 0.0  # a quarter never written
    assert ops.relative_error(case, {}, {"R": quarter})[0] > tol
    quarter[:32] = np.nan
    assert ops.relative_error(case, {}, {"R": quarter})[0] == math.inf


# --- the backends ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
def test_copies_are_skipped_on_the_cpu_with_the_reason(backend: str) -> None:
    for op in ("h2d", "d2h"):
        m = run_case(Case(op, backend, "float32", (8, 8)), get_backend(backend), FAST)
        assert m.status == "skipped"
        if backend == "numpy":
            assert m.reason.startswith("numpy arrays cannot live on a GPU")
        else:
            assert "host memory" in m.reason and "torch-cuda" in m.reason
    host = Case("create", backend, "float32", (8, 8), variant="host")
    assert "the device is the host" in get_backend(backend).availability(host).reason


@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
def test_the_training_step_does_the_same_work_on_the_same_weights_every_call(backend: str) -> None:
    b = get_backend(backend)
    case = Case("mlp_step", backend, "float32", (16, 8), 1)
    p = b.prepare(case, ops.make_inputs(case, 0))
    with b.threads(1):
        first = p.run_once()
        for _ in range(5):  # each call trains on: unrestored, the weights would drift away
            p.call()
        assert p.reset is not None
        p.reset()
        again = p.run_once()
    for name in ops.MLP_PARAMS:
        assert np.array_equal(first[name], again[name])


def test_the_reset_runs_before_every_timed_call_outside_the_timed_region() -> None:
    clock = FakeClock()
    log: list[str] = []

    def call() -> None:
        log.append("call")
        clock.advance(1_000)

    def reset() -> None:
        log.append("reset")
        clock.advance(1_000_000)  # far slower than the call: it must not be in the time

    prepared = Prepared(call, lambda: {}, {}, reset=reset)
    backend = NumpyBackend()
    config = SamplingPlan(time_budget_s=0.05, min_samples=5, warmup_s=0, min_block_s=1e-5)
    timing, extra = time_case(Case("mlp_step", "numpy", "float32", (4, 4)), backend, prepared,
                              config, clock, TimingMode(nvml=False, cuda_graphs=True))
    assert all(s == pytest.approx(1e-6) for s in timing.samples_s)
    assert log[:4] == ["reset", "call", "reset", "call"]
    assert log.count("reset") == log.count("call")
    assert "skipped" in extra["cuda_graph"] and "restored" in extra["reset"]


def test_phases_are_timed_on_their_own_with_their_setup_untimed() -> None:
    clock = FakeClock()

    def work(ns: float) -> Any:
        return lambda: clock.advance(ns)

    prepared = Prepared(work(10_000), lambda: {}, {}, reset=work(50_000),
                        phases={"forward": Phase(work(3_000)),
                                "backward": Phase(work(5_000), work(80_000)),
                                "update": Phase(work(2_000), work(90_000))})
    config = SamplingPlan(time_budget_s=0.03, min_samples=5, warmup_s=0, min_block_s=1e-5)
    out = phases.time_phases(prepared, NumpyBackend(), config, clock)
    assert list(out) == ["forward", "backward", "update"]
    for name, ns in (("forward", 3_000), ("backward", 5_000), ("update", 2_000)):
        assert out[name]["samples_s"] and all(s == pytest.approx(ns * 1e-9) for s in out[name]["samples_s"])
    assert phases.time_phases(Prepared(work(1), lambda: {}, {}), NumpyBackend(), config, clock) == {}


@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
def test_a_training_step_run_records_its_phases_and_the_frame_reads_them(backend: str) -> None:
    case = Case("mlp_step", backend, "float32", (16, 16), 1)
    m = run_case(case, get_backend(backend), FAST)
    assert m.status == "ok", m.reason
    assert set(m.extra["phases"]) == {"forward", "backward", "update"}
    run = Run("r", "box", "2026-01-01", {}, {}, (m,))
    row = to_frame([run]).iloc[0]
    for p in ("forward", "backward", "update"):
        assert row[f"phase_{p}_s"] > 0
    assert row["variant"] == ""


# --- the copies and the fill on a fake CUDA device ---------------------------------------------


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeTorch:
    fake = FakeTorch(pageable_gbps=10.0, pinned_gbps=25.0)
    monkeypatch.setattr(torch_backend, "_torch", lambda: fake)
    monkeypatch.setattr(torch_backend, "torch_installed", lambda: True)
    return fake


# The GPU warm-up runs until 0.2 s of (here: fake) GPU work by default: with a fake clock that
# advances microseconds per real call of milliseconds, that is minutes of real time.
CUDA_FAST = RunOptions(timing=SamplingPlan(time_budget_s=0.01, min_samples=5, warmup_s=0.001),
                       gpu=TimingMode(nvml=False, warmup_gpu_s=0.001))


@pytest.mark.parametrize("op", ["h2d", "d2h"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_copies_run_verified_and_timed_on_a_fake_cuda_device(fake_cuda: FakeTorch, op: str,
                                                             dtype: str) -> None:
    rates = {}
    for memory in ("pageable", "pinned"):
        case = Case(op, "torch-cuda", dtype, (256, 128), variant=memory)
        m = run_case(case, TorchCudaBackend(), CUDA_FAST, clock=fake_cuda.clock)
        assert m.status == "ok", m.reason
        assert m.rel_error == 0.0 and m.check == "full"  # a copy is exact
        assert m.device_name == "Fake H100"
        rates[memory] = m.bytes / m.summary.median / 1e9
        way = ("cpu", "cuda:0") if op == "h2d" else ("cuda:0", "cpu")
        timed = [c for c in fake_cuda.copies if c[:2] == way and c[3] == m.bytes]
        assert timed and all(c[2] == (memory == "pinned") for c in timed[-3:])
    # pinned memory is copied at the link's DMA rate; pageable waits, and is slower
    assert rates["pinned"] == pytest.approx(25.0, rel=0.02)
    assert 8.0 < rates["pageable"] < 10.0


def test_create_on_the_device_against_on_the_host_and_copied(fake_cuda: FakeTorch) -> None:
    times = {}
    for where in ("device", "host"):
        case = Case("create", "torch-cuda", "float32", (256, 256), variant=where)
        m = run_case(case, TorchCudaBackend(), CUDA_FAST, clock=fake_cuda.clock)
        assert m.status == "ok", m.reason
        assert m.check == "ks" and m.rel_error is not None and m.rel_error < m.tolerance
        times[where] = m.summary.median
    assert times["host"] > 10 * times["device"]


def test_an_unwritten_copy_fails_verification(fake_cuda: FakeTorch, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_torch_copies import FakeTensor

    real = FakeTensor.copy_

    def half(self: FakeTensor, src: FakeTensor, non_blocking: bool = False) -> FakeTensor:
        if self.device != src.device:  # across the link, only the first half arrives
            n = self.data.shape[0] // 2
            self.data[:n] = src.data[:n]
            return self
        return real(self, src, non_blocking)

    monkeypatch.setattr(FakeTensor, "copy_", half)
    m = run_case(Case("h2d", "torch-cuda", "float32", (16, 16)), TorchCudaBackend(), CUDA_FAST,
                 clock=fake_cuda.clock)
    assert m.status == "failed" and "relative error inf" in m.reason


# --- the link and its peak --------------------------------------------------------------------


def test_pcie_and_nvlink_c2c_peaks() -> None:
    g4 = roofline.link_peak({"kind": "pcie", "generation": 4, "width": 16, "source": "nvml"})
    assert g4 is not None and g4.gbps == pytest.approx(31.5, abs=0.05) and g4.source == "link"
    g5 = roofline.link_peak({"kind": "pcie", "generation": 5, "width": 16, "source": "sysfs",
                             "current_generation": 1, "current_width": 16})
    assert g5 is not None and g5.gbps == pytest.approx(63.0, abs=0.05)
    assert "trains down" in g5.note
    assert roofline.link_peak({"kind": "pcie", "generation": 3, "width": 8})
    assert roofline.link_peak({"kind": "pcie", "generation": 9, "width": 16}) is None
    assert roofline.link_peak({}) is None
    c2c = roofline.link_peak({"kind": "nvlink-c2c", "source": "nvml"})
    assert c2c is not None and c2c.gbps == pytest.approx(450.0)


class _FakeNvml:
    """pynvml with one card on a PCIe link (or NVLink-C2C)."""

    def __init__(self, c2c: bool = False, fail: bool = False):
        self.c2c, self.fail = c2c, fail
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetHandleByPciBusId(self, bus: bytes) -> str:
        return "handle"

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return "handle"

    def nvmlDeviceGetC2cModeInfoV(self, handle: str) -> Any:
        return SimpleNamespace(isC2cEnabled=int(self.c2c))

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: str) -> int:
        return 5

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: str) -> int:
        return 16

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: str) -> int:
        return 2

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: str) -> int:
        return 16


def test_link_info_from_nvml_from_sysfs_and_from_the_name(tmp_path: Path) -> None:
    nvml = _FakeNvml()
    assert env.link_info(0, "0000:3b:00.0", "NVIDIA H100", nvml=nvml) == {
        "kind": "pcie", "generation": 5, "width": 16, "current_generation": 2,
        "current_width": 16, "source": "nvml"}
    assert nvml.shutdowns == 1
    assert env.link_info(0, None, "", nvml=_FakeNvml(c2c=True))["kind"] == "nvlink-c2c"
    card = tmp_path / "0000:3b:00.0"
    card.mkdir()
    for name, text in (("max_link_speed", "16.0 GT/s PCIe\n"), ("max_link_width", "16\n"),
                       ("current_link_speed", "2.5 GT/s PCIe\n"), ("current_link_width", "8\n")):
        (card / name).write_text(text)
    got = env.link_info(0, "0000:3B:00.0", "", nvml=_FakeNvml(fail=True), sysfs=str(tmp_path))
    assert got == {"kind": "pcie", "generation": 4, "width": 16, "current_generation": 1,
                   "current_width": 8, "source": "sysfs"}
    assert env.link_info(0, None, "NVIDIA GH200 480GB", nvml=_FakeNvml(fail=True))["kind"] == "nvlink-c2c"
    assert env.link_info(0, "0000:99:00.0", "", nvml=_FakeNvml(fail=True), sysfs=str(tmp_path)) == {}


def test_copies_are_held_to_the_link_in_the_frame(fake_cuda: FakeTorch) -> None:
    ms = [run_case(Case(op, "torch-cuda", "float32", (256, 256), variant="pinned"),
                   TorchCudaBackend(), CUDA_FAST, clock=fake_cuda.clock) for op in ("h2d", "d2h")]
    ms.append(run_case(Case("create", "torch-cuda", "float32", (256, 256)), TorchCudaBackend(),
                       CUDA_FAST, clock=fake_cuda.clock))
    env_ = {"torch": {"gpus": [{"index": 0, "name": "Fake H100",
                                "link": {"kind": "pcie", "generation": 4, "width": 16,
                                         "source": "nvml"}}]}}
    run = Run("r", "gpubox", "2026-01-01", env_, {}, tuple(ms))
    peaks = roofline.peaks_for_runs([run])
    assert [p.source for p in peaks if p.source == "link"] == ["link"]
    df = roofline.add_roofline_columns(to_frame([run]), peaks)
    copies = df[df["op"].isin(["h2d", "d2h"])]
    assert copies["link_gbps"].tolist() == pytest.approx([31.51, 31.51], abs=0.01)
    assert copies["pct_of_link"].tolist() == pytest.approx([25 / 31.508 * 100] * 2, rel=0.02)
    assert (copies["link_source"] == "PCIe 4.0 x16").all()
    assert df[df["op"] == "create"]["pct_of_link"].isna().all()  # not a copy across the link
