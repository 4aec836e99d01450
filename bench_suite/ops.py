"""What each op computes: input and output shapes, work counts, inputs and the reference.

Every backend implements the same ops; this module is the single definition they are held
to. Work counts follow DESIGN.md ("Work counts"): FLOPs are the arithmetic the op needs and
bytes are the least traffic it must cause (each operand read once, each result written once),
so achieved rates are lower bounds that a roofline can be drawn against.

The reference is float64 NumPy on the *same* inputs the backend holds (after rounding to the
case's dtype), so the only difference it measures is the backend's arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bench_suite.cases import Case, is_backward, op_family

#: Bytes per element of each dtype (numpy has no bfloat16, so this is not np.dtype(...).itemsize).
ITEMSIZE: dict[str, int] = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "tf32": 4}

#: Largest accepted relative error ``‖out - ref‖_F / ‖ref‖_F`` by dtype. The low-precision
#: bounds allow rounding of the output plus accumulation error over long dot products.
#: tf32 rounds matmul operands to a 10-bit mantissa (about 3e-4 relative error on random data)
#: and accumulates in float32.
TOLERANCE: dict[str, float] = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2,
                               "tf32": 2e-3}

#: Above this many multiply-adds (m*k*n), a matmul result is checked by projection onto random
#: vectors (Freivalds) rather than by a full float64 product: O(n^2) instead of O(n^3). Every
#: round verifies its case afresh in its own process, and at n=1024 the float64 product took
#: longer than the round's timing itself.
FULL_REFERENCE_MAX_MKN = 512**3
_PROJECTIONS = 4


def input_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    if op_family(case.op) == "matmul":
        m, k, n = case.shape
        shapes = {"A": (m, k), "B": (k, n)}
    else:
        m, n = case.shape
        shapes = {"A": (m, n), "B": (m, n)}
    if is_backward(case.op):
        shapes["dC"] = (case.m, case.n)
    return shapes


def output_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    ins = input_shapes(case)
    if is_backward(case.op):
        return {"dA": ins["A"], "dB": ins["B"]}
    return {"C": (case.m, case.n)}


def flops(case: Case) -> int:
    """Floating-point operations of one call (a multiply-add counts as two)."""
    if op_family(case.op) == "matmul":
        m, k, n = case.shape
        return (4 if is_backward(case.op) else 2) * m * k * n
    m, n = case.shape
    return (2 if is_backward(case.op) else 1) * m * n


def bytes_moved(case: Case) -> int:
    """Least bytes one call must read and write: every input once, every output once."""
    elements = sum(_count(s) for s in input_shapes(case).values())
    elements += sum(_count(s) for s in output_shapes(case).values())
    return elements * ITEMSIZE[case.dtype]


def footprint_bytes(case: Case) -> int:
    """Device bytes the case holds: inputs and outputs (the same count as bytes_moved)."""
    return bytes_moved(case)


def arithmetic_intensity(case: Case) -> float:
    return flops(case) / bytes_moved(case)


def _count(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def make_inputs(case: Case, seed: int) -> dict[str, np.ndarray]:
    """Seeded float64 inputs: standard normal, never zeros or ones (they hide wrong indexing
    and can take fast paths real data does not). The same seed and case give the same data."""
    # The seed is mixed with the op and shape (not the backend), so every backend sees the
    # same matrices for the same case and their results can be compared one to one.
    key = [seed, *case.shape, sum(map(ord, case.op))]
    rng = np.random.default_rng(key)
    return {name: rng.standard_normal(shape) for name, shape in input_shapes(case).items()}


def reference(case: Case, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float64 result of the op on ``inputs`` (already rounded to the case's dtype)."""
    a, b = inputs["A"], inputs["B"]
    if case.op == "matmul":
        return {"C": a @ b}
    if case.op == "hadamard":
        return {"C": a * b}
    dc = inputs["dC"]
    if case.op == "matmul_backward":
        return {"dA": dc @ b.T, "dB": a.T @ dc}
    if case.op == "hadamard_backward":
        return {"dA": dc * b, "dB": dc * a}
    raise AssertionError(f"no reference for {case.op}")  # pragma: no cover - Case validates


def _matmul_terms(case: Case, inputs: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    a, b = inputs["A"], inputs["B"]
    if case.op == "matmul":
        return {"C": (a, b)}
    dc = inputs["dC"]
    return {"dA": (dc, b.T), "dB": (a.T, dc)}


def relative_error(
    case: Case, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], seed: int = 0
) -> tuple[float, str]:
    """Largest ``‖out - ref‖_F / ‖ref‖_F`` over the outputs, and the method used.

    Large products are checked by projection: ``‖(out - X·Y)·V‖ / ‖X·(Y·V)‖`` for a few random
    columns V estimates the same relative error at O(n^2) cost, and a wrong result escapes it
    only with negligible probability.
    """
    missing = set(output_shapes(case)) - set(outputs)
    if missing:
        raise ValueError(f"outputs lack {sorted(missing)}")
    worst = 0.0
    if op_family(case.op) == "matmul" and case.m * case.shape[1] * case.n > FULL_REFERENCE_MAX_MKN:
        method = "projection"
        rng = np.random.default_rng(seed)
        for name, (x, y) in _matmul_terms(case, inputs).items():
            v = rng.standard_normal((y.shape[1], _PROJECTIONS))
            ref = x @ (y @ v)
            worst = max(worst, _rel(outputs[name] @ v, ref))
    else:
        method = "full"
        for name, ref in reference(case, inputs).items():
            worst = max(worst, _rel(outputs[name], ref))
    return worst, method


def _rel(out: np.ndarray, ref: np.ndarray) -> float:
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    if not np.all(np.isfinite(out)):
        return float("inf")
    denom = float(np.linalg.norm(ref))
    diff = float(np.linalg.norm(out - ref))
    return diff / denom if denom > 0 else diff
