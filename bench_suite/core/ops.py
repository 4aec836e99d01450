"""What each op computes: input and output shapes, work counts, inputs and the reference.

Every backend implements the same ops; this module is the single definition they are held
to. Work counts follow DESIGN.md ("Work counts"): FLOPs are the arithmetic the op needs and
bytes are the least traffic it must cause (each operand read once, each result written once),
so achieved rates are lower bounds that a roofline can be drawn against.

The reference is float64 NumPy on the *same* inputs the backend holds (after rounding to the
case's dtype), so the only difference it measures is the backend's arithmetic.

The newer ops, in the same terms (B x I input X, O x I weights W; a multiply-add is two FLOPs):

| op | computes | FLOPs | bytes, at least |
| --- | --- | --- | --- |
| linear | Y = act(X·Wᵀ + b) | 2BIO + BO + BO | (BI + OI + O + BO)·s |
| linear_backward | dX, dW, db from dY through act at saved Z | 4BIO + 2BO | (2BI + 2OI + O + 2BO)·s |
| mlp_step | 3 w x w layers, batch b: forward, loss, backward, SGD | 16bw² + 14bw + 6w² + 6w | (2bw + 6w² + 6w)·s |
| bmm | b products (m x k)·(k x n) | 2bmkn | b(mk + kn + mn)·s |
| h2d, d2h | copy N elements across the host-device link | 0 | N·s |
| create | fill a new array of N standard-normal numbers | 0 | N·s (written) |

The training step's loss is the squared error summed over features and averaged over the
batch, ``sum((Y - T)**2) / b``: its gradient 2(Y - T)/b stays well above float16's smallest
normal number at any batch (a mean over every element would underflow, and need loss
scaling). Its learning rate, :data:`LEARNING_RATE`, moves each weight by a sizeable fraction
of itself in one step, so that checking the updated weights checks the gradients too.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from bench_suite.core.cases import Case, is_backward, op_family

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
#: Rows of a large linear layer checked against the float64 reference (each row of Y depends
#: on its row of X alone); every element is still checked to be finite.
_SAMPLED_ROWS = 256

#: The SGD learning rate of ``mlp_step``. With the inputs of :func:`make_inputs` one step
#: moves the weights by 15-100% of their size: the updated weights then show a wrong gradient.
LEARNING_RATE = 0.1
#: ``create``: the result is a sample of N(0, 1); it passes when the Kolmogorov-Smirnov
#: distance D between (a seeded subsample of at most ``_KS_SAMPLE``) it and the float64 normal
#: distribution is under ``KS_SIGMAS / sqrt(N) + KS_ROUNDING``. A correct generator exceeds
#: that with probability at most 2·exp(-2·KS_SIGMAS²) ≈ 1e-9; a uniform one, a constant or a
#: quarter of the array left unwritten (from 64 x 64 on) come nowhere near it. KS_ROUNDING
#: allows for bfloat16's coarse steps.
KS_SIGMAS = 3.3
KS_ROUNDING = 0.005
_KS_SAMPLE = 1 << 16

#: Ops whose results are not compared element by element but as a distribution.
RANDOM_OPS: tuple[str, ...] = ("create",)


def tolerance(case: Case) -> float:
    """Largest accepted error of the case's check (by dtype; ``create``: a KS distance)."""
    if case.op in RANDOM_OPS:
        return KS_SIGMAS / math.sqrt(min(_count(case.shape), _KS_SAMPLE)) + KS_ROUNDING
    return TOLERANCE[case.dtype]


def input_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    if case.op in _NEWER:
        return _new_input_shapes(case)
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
    if case.op in _NEWER:
        return _new_output_shapes(case)
    ins = input_shapes(case)
    if is_backward(case.op):
        return {"dA": ins["A"], "dB": ins["B"]}
    return {"C": (case.m, case.n)}


def flops(case: Case) -> int:
    """Floating-point operations of one call (a multiply-add counts as two)."""
    if case.op in _NEWER:
        return _new_flops(case)
    if op_family(case.op) == "matmul":
        m, k, n = case.shape
        return (4 if is_backward(case.op) else 2) * m * k * n
    m, n = case.shape
    return (2 if is_backward(case.op) else 1) * m * n


def bytes_moved(case: Case) -> int:
    """Least bytes one call must read and write: every input once, every output once."""
    if case.op in _NEWER:
        return _new_elements(case) * ITEMSIZE[case.dtype]
    elements = sum(_count(s) for s in input_shapes(case).values())
    elements += sum(_count(s) for s in output_shapes(case).values())
    return elements * ITEMSIZE[case.dtype]


def footprint_bytes(case: Case) -> int:
    """Device bytes the case holds: inputs and outputs (the same count as bytes_moved), and
    for the newer ops what they keep besides (saved activations, gradients, masters)."""
    if case.op in _NEWER:
        return _new_footprint_elements(case) * ITEMSIZE[case.dtype]
    return bytes_moved(case)


def arithmetic_intensity(case: Case) -> float:
    return flops(case) / bytes_moved(case)


def _count(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


#: Inputs kept for reuse in one process, at most this many bytes (least recently used first
#: out). Several cases share them (numpy and torch, 1 thread and all, both grad modes), and a
#: round measures them all in one process: drawing millions of normals anew took longer than
#: timing most cases.
INPUT_CACHE_BYTES = 256 << 20
_input_cache: OrderedDict[tuple[object, ...], dict[str, np.ndarray]] = OrderedDict()


def make_inputs(case: Case, seed: int) -> dict[str, np.ndarray]:
    """Seeded float64 inputs: standard normal, never zeros or ones (they hide wrong indexing
    and can take fast paths real data does not). The same seed and case give the same data;
    each call gets its own copy (a training step updates its weights in place)."""
    # The seed is mixed with the op and shape (not the backend), so every backend sees the
    # same matrices for the same case and their results can be compared one to one.
    cache_key = (seed, case.op, case.shape, case.variant)
    cached = _input_cache.get(cache_key)
    if cached is None:
        key = [seed, *case.shape, sum(map(ord, case.op))]
        rng = np.random.default_rng(key)
        cached = {name: rng.standard_normal(shape) for name, shape in input_shapes(case).items()}
        # Weights scaled by 1/sqrt(fan-in), as layers are initialised, so activations stay O(1)
        # through the layers in every dtype (and tanh, sigmoid and GELU are not saturated).
        for name, scale in _input_scales(case).items():
            cached[name] *= scale
        for v in cached.values():
            v.setflags(write=False)
        size = sum(v.nbytes for v in cached.values())
        if size <= INPUT_CACHE_BYTES:
            _input_cache[cache_key] = cached
            while sum(a.nbytes for d in _input_cache.values() for a in d.values()) > INPUT_CACHE_BYTES:
                _input_cache.popitem(last=False)
    else:
        _input_cache.move_to_end(cache_key)
    return {name: v.copy() for name, v in cached.items()}


def create_seed(case: Case) -> list[int]:
    """The seed of a ``create`` case's generator (it takes no inputs): from its shape."""
    return [*case.shape, sum(map(ord, case.op))]


def reference(case: Case, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float64 result of the op on ``inputs`` (already rounded to the case's dtype)."""
    if case.op in _NEWER:
        return _new_reference(case, inputs)
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
    if case.op in _NEWER:
        return _new_relative_error(case, inputs, outputs, seed)
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


# --- the layer, the training step, batched matmul and data movement -----------------------

_NEWER = frozenset({"linear", "linear_backward", "mlp_step", "bmm", "h2d", "d2h", "create"})
#: The parameters of ``mlp_step``, in the order a model lists them.
MLP_PARAMS: tuple[str, ...] = ("W1", "b1", "W2", "b2", "W3", "b3")
#: Biases are drawn smaller than the weights' rows so that their SGD update is a sizeable
#: fraction of them too (else the check of an updated bias would mostly see rounding).
_MLP_BIAS_SCALE = 0.1


def _new_input_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    op = case.op
    if op in ("linear", "linear_backward"):
        b, i, o = case.shape
        shapes = {"X": (b, i), "W": (o, i), "bias": (o,)}
        if op == "linear_backward":
            shapes["dY"] = (b, o)
        return shapes
    if op == "mlp_step":
        b, w = case.shape
        shapes = {"X": (b, w), "T": (b, w)}
        for layer in (1, 2, 3):
            shapes[f"W{layer}"] = (w, w)
            shapes[f"b{layer}"] = (w,)
        return shapes
    if op == "bmm":
        nb, m, k, n = case.shape
        return {"A": (nb, m, k), "B": (nb, k, n)}
    if op in ("h2d", "d2h"):
        return {"A": case.shape}
    return {}  # create: nothing goes in


def _new_output_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    op = case.op
    if op == "linear":
        b, _i, o = case.shape
        return {"Y": (b, o)}
    if op == "linear_backward":
        b, i, o = case.shape
        return {"dX": (b, i), "dW": (o, i), "dbias": (o,)}
    if op == "mlp_step":
        # the updated parameters, and the hidden pre-activations of the step's forward (their
        # signs are the ReLU masks the backward used: see _mlp_errors)
        b, w = case.shape
        ins = _new_input_shapes(case)
        return {**{p: ins[p] for p in MLP_PARAMS}, "Z1": (b, w), "Z2": (b, w)}
    if op == "bmm":
        nb, m, _k, n = case.shape
        return {"C": (nb, m, n)}
    name = {"h2d": "D", "d2h": "H", "create": "R"}[op]
    return {name: case.shape}


def _new_flops(case: Case) -> int:
    op = case.op
    if op == "linear":
        b, i, o = case.shape
        return 2 * b * i * o + 2 * b * o  # X·Wᵀ, + b, act
    if op == "linear_backward":
        b, i, o = case.shape
        return 4 * b * i * o + 2 * b * o  # dX = dZ·W, dW = dZᵀ·X; dZ = dY∘act'(Z), db = Σ dZ
    if op == "mlp_step":
        b, w = case.shape
        # forward: 3 matmuls 6bw², 3 bias adds, 2 ReLUs, loss (Y - T, square, sum) 3bw
        # backward: 5 matmuls 10bw² (no dX), dY 1bw, 2 ReLU masks, 3 bias sums
        # update: P -= lr·dP over 3w² + 3w parameters, a multiply-add each
        return 16 * b * w * w + 14 * b * w + 6 * w * w + 6 * w
    if op == "bmm":
        nb, m, k, n = case.shape
        return 2 * nb * m * k * n
    return 0  # copies and random fills do no arithmetic worth counting


def _new_elements(case: Case) -> int:
    op = case.op
    if op == "linear":
        b, i, o = case.shape
        return b * i + o * i + o + b * o
    if op == "linear_backward":
        b, i, o = case.shape
        return 2 * b * i + 2 * o * i + o + 2 * b * o  # read X, W, dY, Z; write dX, dW, db
    if op == "mlp_step":
        b, w = case.shape
        return 2 * b * w + 2 * (3 * w * w + 3 * w)  # read X, T, params; write params
    if op == "bmm":
        nb, m, k, n = case.shape
        return nb * (m * k + k * n + m * n)
    return _count(case.shape)  # h2d, d2h, create: the array, once


def _new_footprint_elements(case: Case) -> int:
    op = case.op
    if op == "linear_backward":
        b, i, o = case.shape
        return 2 * b * i + 2 * o * i + 2 * o + 3 * b * o  # + bias and Y kept by the graph
    if op == "mlp_step":
        b, w = case.shape
        params = 3 * w * w + 3 * w
        return 12 * b * w + 3 * params  # inputs, activations and their gradients; params,
        # their gradients and the masters they are restored from
    return _new_elements(case)


def _input_scales(case: Case) -> dict[str, float]:
    if case.op in ("linear", "linear_backward"):
        return {"W": 1 / math.sqrt(case.shape[1])}
    if case.op == "mlp_step":
        w = case.shape[1]
        return {**{f"W{k}": 1 / math.sqrt(w) for k in (1, 2, 3)},
                **{f"b{k}": _MLP_BIAS_SCALE for k in (1, 2, 3)}}
    return {}


def activation(name: str, z: np.ndarray) -> np.ndarray:
    """The activation ``name`` in float64 (the reference's)."""
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "gelu":
        from scipy.special import erf

        return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        from scipy.special import expit

        return expit(z)
    if name == "identity":
        return z
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(name: str, z: np.ndarray) -> np.ndarray:
    """d act / dz at ``z`` in float64; ReLU's is 0 at 0, as torch's."""
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "gelu":
        from scipy.special import erf

        return 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        from scipy.special import expit

        s = expit(z)
        return s * (1.0 - s)
    if name == "identity":
        return np.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")


def _new_reference(case: Case, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    op = case.op
    if op == "linear":
        return {"Y": activation(case.variant, inputs["X"] @ inputs["W"].T + inputs["bias"])}
    if op == "linear_backward":
        x, w = inputs["X"], inputs["W"]
        # The pre-activation the backward runs through: the one the backend saved when the
        # case gives it (its rounding decides ReLU's mask at z ≈ 0), else the float64 one.
        z = inputs["Z"] if "Z" in inputs else x @ w.T + inputs["bias"]
        dz = inputs["dY"] * activation_grad(case.variant, z)
        return {"dX": dz @ w, "dW": dz.T @ x, "dbias": dz.sum(axis=0)}
    if op == "mlp_step":
        return mlp_reference(inputs)
    if op == "bmm":
        return {"C": inputs["A"] @ inputs["B"]}
    if op in ("h2d", "d2h"):
        return {output_name(case): inputs["A"]}
    raise ValueError(f"{op} has no element-wise reference (its result is random)")


def output_name(case: Case) -> str:
    """The name of the single output of a copy or a fill (``D``, ``H``, ``R``)."""
    return {"h2d": "D", "d2h": "H", "create": "R"}[case.op]


def mlp_reference(inputs: Mapping[str, np.ndarray],
                  z1: np.ndarray | None = None, z2: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One training step in float64: the updated parameters and the hidden pre-activations.

    ``z1``/``z2``: pre-activations to take instead of computing them, so the ReLU masks (and
    the activations after them) are the ones a backend's step used."""
    x, t = inputs["X"], inputs["T"]
    w1, b1, w2, b2, w3, b3 = (inputs[p] for p in MLP_PARAMS)
    z1 = x @ w1.T + b1 if z1 is None else z1
    h1 = np.maximum(z1, 0.0)
    z2 = h1 @ w2.T + b2 if z2 is None else z2
    h2 = np.maximum(z2, 0.0)
    y = h2 @ w3.T + b3
    dy = 2.0 * (y - t) / x.shape[0]
    dz2 = (dy @ w3) * (z2 > 0)
    dz1 = (dz2 @ w2) * (z1 > 0)
    grads = {"W3": dy.T @ h2, "b3": dy.sum(axis=0), "W2": dz2.T @ h1, "b2": dz2.sum(axis=0),
             "W1": dz1.T @ x, "b1": dz1.sum(axis=0)}
    out = {p: inputs[p] - LEARNING_RATE * grads[p] for p in MLP_PARAMS}
    return {**out, "Z1": z1, "Z2": z2}


def _new_relative_error(case: Case, inputs: Mapping[str, np.ndarray],
                        outputs: Mapping[str, np.ndarray], seed: int) -> tuple[float, str]:
    op = case.op
    if op == "create":
        return _ks_error(outputs["R"], seed), "ks"
    if op == "mlp_step":
        return _mlp_error(inputs, outputs), "full"
    if op == "bmm" and _count(case.shape) > FULL_REFERENCE_MAX_MKN:
        rng = np.random.default_rng(seed)
        v = rng.standard_normal((case.n, _PROJECTIONS))
        return _rel(outputs["C"] @ v, inputs["A"] @ (inputs["B"] @ v)), "projection"
    if op == "linear" and _count(case.shape) > FULL_REFERENCE_MAX_MKN:
        return _linear_rows_error(case, inputs, outputs["Y"], seed), "rows"
    if op == "linear_backward" and "Z" in inputs and _count(case.shape) > FULL_REFERENCE_MAX_MKN:
        return _linear_backward_projection(case, inputs, outputs, seed), "projection"
    worst = 0.0
    if op == "linear_backward" and "Z" in inputs:  # the saved pre-activation is checked too
        worst = _rel(inputs["Z"], inputs["X"] @ inputs["W"].T + inputs["bias"])
    for name, ref in _new_reference(case, inputs).items():
        worst = max(worst, _rel(outputs[name], ref))
    return worst, "full"


def _mlp_error(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> float:
    """The training step, checked layer by layer and then as a whole.

    1. Each hidden pre-activation against float64 given the layer's actual input (Z1 from X,
       Z2 from ReLU of the backend's Z1): the forward.
    2. The updated parameters against the float64 step that goes through the backend's own
       Z1 and Z2 (so ReLU's masks agree where a rounded z is a hair from 0, which in float16
       would otherwise flip a few masks and swamp the comparison), each measured against the
       size of its update, ``‖out - ref‖ / ‖ref - before‖``: a wrong gradient cannot hide
       behind weights that barely moved.
    """
    z1, z2 = np.asarray(outputs["Z1"], np.float64), np.asarray(outputs["Z2"], np.float64)
    x = inputs["X"]
    worst = _rel(z1, x @ inputs["W1"].T + inputs["b1"])
    worst = max(worst, _rel(z2, np.maximum(z1, 0.0) @ inputs["W2"].T + inputs["b2"]))
    if not (np.all(np.isfinite(z1)) and np.all(np.isfinite(z2))):
        return math.inf
    ref = mlp_reference(inputs, z1, z2)
    for p in MLP_PARAMS:
        out = np.asarray(outputs[p], dtype=np.float64)
        if out.shape != ref[p].shape or not np.all(np.isfinite(out)):
            return math.inf
        step = float(np.linalg.norm(ref[p] - inputs[p]))
        diff = float(np.linalg.norm(out - ref[p]))
        worst = max(worst, diff / step if step > 0 else diff)
    return worst


def _linear_rows_error(case: Case, inputs: Mapping[str, np.ndarray], y: np.ndarray,
                       seed: int) -> float:
    """A large layer: rows of Y against float64 (each depends on its row of X alone), the
    first and last among them; every element must be finite."""
    y = np.asarray(y)
    if y.shape != (case.shape[0], case.shape[2]) or not np.all(np.isfinite(y)):
        return math.inf
    b = case.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.unique(np.concatenate([[0, b - 1], rng.choice(b, size=min(b, _SAMPLED_ROWS),
                                                            replace=False)]))
    ref = activation(case.variant, inputs["X"][rows] @ inputs["W"].T + inputs["bias"])
    return _rel(y[rows], ref)


def _linear_backward_projection(case: Case, inputs: Mapping[str, np.ndarray],
                                outputs: Mapping[str, np.ndarray], seed: int) -> float:
    """A large layer's backward, checked in O(n²) given the saved Z (as matmul's, Freivalds):
    Z by projection, dZ = dY∘act'(Z) exactly, then dX = dZ·W and dW = dZᵀ·X by projection
    and db = Σ dZ exactly."""
    rng = np.random.default_rng(seed)
    x, w, z = inputs["X"], inputs["W"], inputs["Z"]
    v_o = rng.standard_normal((w.shape[0], _PROJECTIONS))
    worst = _rel((z - inputs["bias"]) @ v_o, x @ (w.T @ v_o))
    dz = inputs["dY"] * activation_grad(case.variant, z)
    v_i = rng.standard_normal((w.shape[1], _PROJECTIONS))
    worst = max(worst, _rel(np.asarray(outputs["dX"], np.float64) @ v_i, dz @ (w @ v_i)))
    worst = max(worst, _rel(np.asarray(outputs["dW"], np.float64) @ v_i, dz.T @ (x @ v_i)))
    return max(worst, _rel(outputs["dbias"], dz.sum(axis=0)))


def _ks_error(sample: np.ndarray, seed: int) -> float:
    """Kolmogorov-Smirnov distance between the array (a seeded subsample of it) and N(0, 1);
    infinite when any element is not finite."""
    flat = np.asarray(sample, dtype=np.float64).ravel()
    if flat.size == 0 or not np.all(np.isfinite(flat)):
        return math.inf
    if flat.size > _KS_SAMPLE:
        flat = flat[np.random.default_rng(seed).choice(flat.size, _KS_SAMPLE, replace=False)]
    from scipy.special import ndtr

    x = np.sort(flat)
    cdf = ndtr(x)
    n = x.size
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(0, n) / n
    return float(max(above.max(), below.max()))
