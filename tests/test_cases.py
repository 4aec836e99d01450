from __future__ import annotations

import pytest

from bench_suite.core import cases
from bench_suite.core.cases import Case, Sweep, parse_case_id
from bench_suite.core.errors import UsageError


def test_case_ids_are_stable_and_round_trip() -> None:
    c = Case("matmul", "torch-cuda", "float32", (4096, 4096, 4096))
    assert c.id == "matmul/torch-cuda/float32/n=4096/threads=all"
    assert parse_case_id(c.id) == c
    g = Case("hadamard", "torch-cpu", "bfloat16", (64, 128), threads=2, grad_mode="grad")
    assert g.id == "hadamard/torch-cpu/bfloat16/m=64,n=128/threads=2/grad"
    assert parse_case_id(g.id) == g
    r = Case("matmul", "numpy", "float64", (8, 16, 32), threads=1)
    assert r.id == "matmul/numpy/float64/m=8,k=16,n=32/threads=1"
    assert (r.m, r.k, r.n) == (8, 16, 32)
    assert parse_case_id(r.id) == r


def test_backward_ops_always_record_the_graph_and_their_id_says_nothing_extra() -> None:
    c = Case("matmul_backward", "numpy", "float32", (8, 8, 8))
    assert c.grad_mode == "grad"
    assert not c.id.endswith("/grad")
    assert parse_case_id(c.id) == c


def test_cases_are_hashable_and_ordered() -> None:
    a = Case("matmul", "numpy", "float32", (8, 8, 8), 1)
    b = Case("matmul", "numpy", "float32", (8, 8, 8), 1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert sorted([b, a]) == [a, b]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"op": "conv"}, "unknown op"),
        ({"backend": "jax"}, "unknown backend"),
        ({"dtype": "int8"}, "unknown dtype"),
        ({"shape": (0, 4, 4)}, "dimensions"),
        ({"shape": (4, 4)}, "needs 3 dimensions"),
        ({"threads": 0}, "threads"),
        ({"grad_mode": "maybe"}, "grad mode"),
        ({"backend": "numpy", "grad_mode": "grad"}, "numpy has no autograd"),
    ],
)
def test_invalid_cases_are_user_errors(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"op": "matmul", "backend": "torch-cpu", "dtype": "float32", "shape": (4, 4, 4)}
    base.update(kwargs)
    with pytest.raises(UsageError, match=message):
        Case(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "matmul/numpy", "matmul/numpy/float32/n=x/threads=1",
                                 "conv/numpy/float32/n=8/threads=1",
                                 "hadamard/numpy/float32/m=1,k=2,n=3/threads=1"])
def test_malformed_ids_are_user_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_case_id(bad)


def test_sweep_expansion_puts_both_products_of_the_same_matrices_side_by_side() -> None:
    sweep = Sweep(ops=("matmul", "hadamard"), backends=("numpy",), sizes=(64,), threads=(1,))
    got = {c.id for c in sweep.expand()}
    assert got == {"matmul/numpy/float32/n=64/threads=1", "hadamard/numpy/float32/n=64/threads=1"}


def test_sweep_grad_axis_applies_to_torch_forward_ops_only() -> None:
    sweep = Sweep(backends=("numpy", "torch-cpu"), sizes=(32,), threads=(1,))
    ids = [c.id for c in sweep.expand()]
    assert "matmul/torch-cpu/float32/n=32/threads=1/grad" in ids
    assert "matmul/numpy/float32/n=32/threads=1/grad" not in ids
    assert not any(i.startswith("matmul_backward") and i.endswith("/grad") for i in ids)
    assert len(ids) == len(set(ids))


def test_cuda_cases_run_once_at_all_threads() -> None:
    sweep = Sweep(ops=("matmul",), backends=("torch-cuda", "torch-cuda:1"), sizes=(32,), threads=(1, 2, None),
                  grad_modes=("no_grad",))
    assert [c.id for c in sweep.expand()] == [
        "matmul/torch-cuda/float32/n=32/threads=all",
        "matmul/torch-cuda:1/float32/n=32/threads=all",
    ]


def test_explicit_shapes_apply_to_the_ops_of_their_arity() -> None:
    sizes = cases.parse_sizes("16,8x4x2,8x4")
    assert sizes == (16, (8, 4, 2), (8, 4))
    got = Sweep(ops=("matmul", "hadamard"), backends=("numpy",), sizes=sizes, threads=(1,)).expand()
    shapes = {(c.op, c.shape) for c in got}
    assert shapes == {("matmul", (16, 16, 16)), ("matmul", (8, 4, 2)), ("hadamard", (16, 16)),
                      ("hadamard", (8, 4))}


def test_thread_scaling_axis_is_powers_of_two_below_the_cores_then_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cases, "cpu_count", lambda: 12)
    got = Sweep(ops=("matmul",), backends=("numpy",), sizes=(8,), threads="scaling").expand()
    assert [c.threads for c in got] == [1, 2, 4, 8, None]


def test_explicit_thread_count_equal_to_all_is_not_run_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cases, "cpu_count", lambda: 2)
    got = Sweep(ops=("matmul",), backends=("numpy",), sizes=(8,), threads=(1, 2, None)).expand()
    assert [c.threads_label for c in got] == ["1", "all"]


def test_presets_expand_and_quick_is_small() -> None:
    for name in cases.PRESETS:
        assert cases.get_preset(name).sweep.expand()
    quick = cases.get_preset("quick").sweep.expand()
    cpu = [c for c in quick if c.backend != "torch-cuda"]
    assert len([c for c in cpu if c.op in cases.BUILDING_BLOCKS]) <= 48
    # the newer ops add a dozen timed cases on a CPU (their copies skip there at once)
    assert len([c for c in cpu if c.op in cases.NEW_OPS and c.op not in cases.LINK_OPS]) <= 12
    with pytest.raises(UsageError, match="unknown preset"):
        cases.get_preset("huge")


@pytest.mark.parametrize(
    "fn, text",
    [
        (cases.parse_sizes, "0"), (cases.parse_sizes, "-4"), (cases.parse_sizes, "1,,2"),
        (cases.parse_sizes, "8x"), (cases.parse_sizes, "1x2x3x4x5"), (cases.parse_sizes, "99999999"),
        (cases.parse_threads, "0"), (cases.parse_threads, "two"), (cases.parse_threads, ""),
        (cases.parse_backends, "cuda"), (cases.parse_backends, "torch-cuda:x"),
    ],
)
def test_malformed_lists_are_user_errors(fn: object, text: str) -> None:
    with pytest.raises(UsageError):
        fn(text)  # type: ignore[operator]


def test_names_are_checked_against_what_is_valid() -> None:
    assert cases.parse_names("matmul,hadamard", cases.OPS, "op") == ("matmul", "hadamard")
    with pytest.raises(UsageError, match="valid: matmul"):
        cases.parse_names("matmul,gemm", cases.OPS, "op")
