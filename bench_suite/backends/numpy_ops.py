"""NumPy's layer, training step, batched matmul and random fill, written by hand.

numpy has no autograd: ``linear_backward`` and ``mlp_step`` compute their gradients from the
chain rule, and ``mlp_step`` updates its weights as a hand-written SGD would. Every buffer is
allocated in :func:`prepare`; the timed calls write into them (``out=``), so nothing is
allocated inside the timed region except by ``create``, whose allocation is the op. numpy
arrays live in host memory: ``h2d`` and ``d2h`` are not numpy's (they are skipped with the
reason).

Layering: used by ``numpy_backend.py`` only; imports ``ops``, ``cases`` and ``base``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bench_suite.backends.base import Availability, Phase, Prepared
from bench_suite.core import ops
from bench_suite.core.cases import LINK_OPS, Case

DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}
OPS = frozenset({"linear", "linear_backward", "mlp_step", "bmm", "h2d", "d2h", "create"})
_SQRT1_2 = 1 / math.sqrt(2.0)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def availability(case: Case) -> Availability | None:
    """Why numpy cannot run this case, or None when nothing op-specific stands in the way."""
    if case.op in LINK_OPS:
        return Availability.no("numpy arrays cannot live on a GPU: h2d and d2h need torch-cuda")
    if case.op == "create" and case.variant == "host":
        return Availability.no("on the CPU the device is the host: create on=host needs torch-cuda")
    return None


def prepare(case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
    dt = DTYPES[case.dtype]
    x = {k: np.ascontiguousarray(v, dtype=dt) for k, v in inputs.items()}
    host = {k: v.astype(np.float64) for k, v in x.items()}
    if case.op == "linear":
        return _linear(case, x, host, dt)
    if case.op == "linear_backward":
        return _linear_backward(case, x, host, dt)
    if case.op == "mlp_step":
        return _mlp_step(case, x, host, dt)
    if case.op == "bmm":
        a, b = x["A"], x["B"]
        c = np.full(ops.output_shapes(case)["C"], np.nan, dtype=dt)

        def call() -> object:
            return np.matmul(a, b, out=c)

        return Prepared(call, _results(call, {"C": c}), host)
    if case.op == "create":
        return _create(case, dt)
    raise AssertionError(case.op)  # pragma: no cover - availability refuses the rest


def _results(call: Callable[[], object], out: dict[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
    def run_once() -> dict[str, np.ndarray]:
        call()
        return {k: v.astype(np.float64) for k, v in out.items()}

    return run_once


def _nothing() -> None:
    return None


def activation_in_place(name: str, z: np.ndarray) -> Callable[[], None]:
    """``z = act(z)`` without allocating (GELU through one scratch buffer made here)."""
    if name == "relu":
        def relu() -> None:
            np.maximum(z, 0, out=z)

        return relu
    if name == "tanh":
        def tanh() -> None:
            np.tanh(z, out=z)

        return tanh
    if name == "sigmoid":
        from scipy.special import expit

        def sigmoid() -> None:
            expit(z, out=z)

        return sigmoid
    if name == "identity":
        return _nothing
    if name == "gelu":  # 0.5·z·(1 + erf(z/√2))
        from scipy.special import erf

        t = np.empty_like(z)

        def gelu() -> None:
            np.multiply(z, _SQRT1_2, out=t)
            erf(t, out=t)
            np.add(t, 1, out=t)
            np.multiply(z, t, out=z)
            np.multiply(z, 0.5, out=z)

        return gelu
    raise ValueError(f"unknown activation {name!r}")


def _linear(case: Case, x: dict[str, np.ndarray], host: dict[str, np.ndarray], dt: type) -> Prepared:
    xx, wt, bias = x["X"], x["W"].T, x["bias"]  # Wᵀ as a view: BLAS reads it transposed
    # poisoned with NaN: an element the op fails to write fails verification
    y = np.full(ops.output_shapes(case)["Y"], np.nan, dtype=dt)
    act = activation_in_place(case.variant, y)

    def call() -> object:
        np.matmul(xx, wt, out=y)
        np.add(y, bias, out=y)
        act()
        return y

    return Prepared(call, _results(call, {"Y": y}), host)


def _linear_backward(case: Case, x: dict[str, np.ndarray], host: dict[str, np.ndarray],
                     dt: type) -> Prepared:
    xx, w, dy = x["X"], x["W"], x["dY"]
    # The forward, once, outside the timed region: what autograd would have saved.
    z = (xx @ w.T + x["bias"]).astype(dt)
    y = z.copy()
    activation_in_place(case.variant, y)()
    host["Z"] = z.astype(np.float64)
    outs = {k: np.full(s, np.nan, dtype=dt) for k, s in ops.output_shapes(case).items()}
    dx, dw, db = outs["dX"], outs["dW"], outs["dbias"]
    dz = dy if case.variant == "identity" else np.empty_like(dy)
    grad = _activation_grad(case.variant, z, y, dy, dz)

    def call() -> object:
        grad()  # dZ = dY∘act'(Z)
        np.matmul(dz, w, out=dx)  # dX = dZ·W
        np.matmul(dz.T, xx, out=dw)  # dW = dZᵀ·X
        return np.sum(dz, axis=0, out=db)  # db = Σ_rows dZ

    return Prepared(call, _results(call, outs), host)


def _activation_grad(name: str, z: np.ndarray, y: np.ndarray, dy: np.ndarray,
                     dz: np.ndarray) -> Callable[[], None]:
    """``dz = dy∘act'(z)`` by hand, from the saved z (or y = act(z), as autograd saves it)."""
    if name == "identity":
        return _nothing  # dz is dy
    if name == "relu":
        mask = np.empty(z.shape, dtype=bool)

        def relu() -> None:
            np.greater(z, 0, out=mask)
            np.multiply(dy, mask, out=dz)

        return relu
    if name == "tanh":  # 1 - y²
        def tanh() -> None:
            np.multiply(y, y, out=dz)
            np.subtract(1, dz, out=dz)
            np.multiply(dz, dy, out=dz)

        return tanh
    if name == "sigmoid":  # y(1 - y)
        def sigmoid() -> None:
            np.subtract(1, y, out=dz)
            np.multiply(dz, y, out=dz)
            np.multiply(dz, dy, out=dz)

        return sigmoid
    if name == "gelu":  # Φ(z) + z·φ(z)
        from scipy.special import erf

        t, u = np.empty_like(z), np.empty_like(z)

        def gelu() -> None:
            np.multiply(z, _SQRT1_2, out=t)
            erf(t, out=t)
            np.add(t, 1, out=t)
            np.multiply(t, 0.5, out=t)
            np.multiply(z, z, out=u)
            np.multiply(u, -0.5, out=u)
            np.exp(u, out=u)
            np.multiply(u, _INV_SQRT_2PI, out=u)
            np.multiply(u, z, out=u)
            np.add(t, u, out=t)
            np.multiply(dy, t, out=dz)

        return gelu
    raise ValueError(f"unknown activation {name!r}")


def _mlp_step(case: Case, x: dict[str, np.ndarray], host: dict[str, np.ndarray], dt: type) -> Prepared:
    """Forward, loss, backward and an SGD update of a 3-layer ReLU MLP, by hand.

    The update changes the weights in place, as SGD does; ``reset`` puts the masters back
    before every timed call, outside the timed region, so every call trains the same step.
    """
    b, w = case.shape
    xx, t = x["X"], x["T"]
    params = {p: x[p] for p in ops.MLP_PARAMS}
    masters = {p: v.copy() for p, v in params.items()}
    w1, b1, w2, b2, w3, b3 = (params[p] for p in ops.MLP_PARAMS)
    w1t, w2t, w3t = w1.T, w2.T, w3.T

    def buf() -> np.ndarray:
        return np.full((b, w), np.nan, dtype=dt)

    z1, h1, z2, h2, y, d, dz2, dz1 = (buf() for _ in range(8))
    m1, m2 = np.empty((b, w), dtype=bool), np.empty((b, w), dtype=bool)
    grads = {p: np.empty_like(v) for p, v in params.items()}
    g = grads
    lr = -ops.LEARNING_RATE

    def forward() -> object:
        np.matmul(xx, w1t, out=z1)
        np.add(z1, b1, out=z1)
        np.maximum(z1, 0, out=h1)
        np.matmul(h1, w2t, out=z2)
        np.add(z2, b2, out=z2)
        np.maximum(z2, 0, out=h2)
        np.matmul(h2, w3t, out=y)
        np.add(y, b3, out=y)
        np.subtract(y, t, out=d)
        return np.vdot(d, d) / b  # the loss: Σ (Y - T)² / b

    def backward() -> object:
        np.multiply(d, 2.0 / b, out=d)  # dY = 2(Y - T)/b
        np.matmul(d.T, h2, out=g["W3"])
        np.sum(d, axis=0, out=g["b3"])
        np.matmul(d, w3, out=dz2)  # dH2
        np.greater(z2, 0, out=m2)
        np.multiply(dz2, m2, out=dz2)  # dZ2
        np.matmul(dz2.T, h1, out=g["W2"])
        np.sum(dz2, axis=0, out=g["b2"])
        np.matmul(dz2, w2, out=dz1)  # dH1
        np.greater(z1, 0, out=m1)
        np.multiply(dz1, m1, out=dz1)  # dZ1
        np.matmul(dz1.T, xx, out=g["W1"])
        return np.sum(dz1, axis=0, out=g["b1"])

    def update() -> object:
        for p, v in params.items():
            np.multiply(g[p], lr, out=g[p])
            np.add(v, g[p], out=v)  # P -= lr·dP
        return None

    def call() -> object:
        forward()
        backward()
        return update()

    def reset() -> None:
        for p, v in params.items():
            np.copyto(v, masters[p])

    def after_forward() -> None:
        reset()
        forward()

    def after_backward() -> None:
        after_forward()
        backward()

    def run_once() -> dict[str, np.ndarray]:
        reset()
        call()
        out = {p: v.astype(np.float64) for p, v in params.items()}
        return {**out, "Z1": z1.astype(np.float64), "Z2": z2.astype(np.float64)}

    phases = {"forward": Phase(forward), "backward": Phase(backward, after_forward),
              "update": Phase(update, after_backward)}
    return Prepared(call, run_once, host, reset=reset, phases=phases)


def _create(case: Case, dt: type) -> Prepared:
    """A new array of standard-normal numbers from numpy's Generator (float32 and float64
    natively; float16 made in float32 and converted, as a numpy user would)."""
    rng = np.random.default_rng(ops.create_seed(case))
    shape = case.shape
    if dt is np.float16:
        def call() -> np.ndarray:
            return rng.standard_normal(shape, dtype=np.float32).astype(np.float16)
    else:
        def call() -> np.ndarray:
            return rng.standard_normal(shape, dtype=dt)

    def run_once() -> dict[str, np.ndarray]:
        return {"R": call().astype(np.float64)}

    return Prepared(call, run_once, {})
