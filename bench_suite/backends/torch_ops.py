"""torch's layer, training step, batched matmul, host-device copies and random fill.

Written the way a user writes them: ``F.linear`` and an activation; autograd for the layer's
backward (the graph built once, outside the timed region, and each call the backward alone,
as ``matmul_backward``); ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``, ``F.mse_loss``,
``loss.backward()`` and ``torch.optim.SGD`` for the training step; ``Tensor.copy_`` between a
numpy array's memory (pageable) or page-locked memory and the GPU; ``torch.randn`` on the
device, or on the host and then ``.to(device)``.

``torch`` is passed in by ``torch_backend`` (which imports it lazily), so this module never
imports it, and tests hand it a fake ``torch`` whose CUDA device runs on a fake clock.

Layering: used by ``torch_backend.py`` only; imports ``ops``, ``cases`` and ``base``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench_suite.backends.base import Availability, Phase, Prepared
from bench_suite.core import ops
from bench_suite.core.cases import LINK_OPS, Case, is_cuda_backend

OPS = frozenset({"linear", "linear_backward", "mlp_step", "bmm", "h2d", "d2h", "create"})
_NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


def availability(backend_name: str, case: Case) -> Availability | None:
    """Why this torch backend cannot run the case, or None when nothing op-specific stands in
    the way."""
    cuda = is_cuda_backend(backend_name)
    if case.op in LINK_OPS and not cuda:
        return Availability.no("torch-cpu tensors live in host memory: h2d and d2h need torch-cuda")
    if case.op == "create" and case.variant == "host" and not cuda:
        return Availability.no("on the CPU the device is the host: create on=host needs torch-cuda")
    return None


def host_bytes(case: Case) -> int:
    """Host memory a CUDA case of this op holds (its host buffer and the float64 masters)."""
    if case.op in LINK_OPS or (case.op == "create" and case.variant == "host"):
        n = int(np.prod(case.shape))
        return n * (ops.ITEMSIZE[case.dtype] + 2 * 8)
    return 0


def torch_dtype(torch: Any, name: str) -> Any:
    """The torch dtype of a suite dtype ("tf32": float32 tensors; TF32 matmuls are the
    backend's switch to set around the case)."""
    return getattr(torch, "float32" if name == "tf32" else name)


def prepare(torch: Any, device: Any, case: Case, inputs: dict[str, np.ndarray],
            synchronize: Callable[[], None]) -> Prepared:
    dt = torch_dtype(torch, case.dtype)
    if case.op == "h2d":
        return _h2d(torch, device, dt, case, inputs, synchronize)
    if case.op == "d2h":
        return _d2h(torch, device, dt, case, inputs, synchronize)
    if case.op == "create":
        return _create(torch, device, dt, case, synchronize)
    x = {k: torch.from_numpy(v).to(device=device, dtype=dt).contiguous() for k, v in inputs.items()}
    host = {k: t.to("cpu", torch.float64).numpy() for k, t in x.items()}
    if case.op == "mlp_step":
        return _mlp_step(torch, device, dt, case, x, host, synchronize)
    if case.op == "linear_backward":
        return _linear_backward(torch, case, x, host, synchronize)
    grad = case.grad_mode == "grad"
    if case.op == "linear":
        xx, w, bias = x["X"], x["W"], x["bias"]
        if grad:  # recording the graph: outputs are allocated each call, as in training
            for t in (xx, w, bias):
                t.requires_grad_(True)
            act = activation(torch, case.variant)
            linear = torch.nn.functional.linear

            def call() -> object:
                return act(linear(xx, w, bias))
        else:  # F.linear is addmm; poisoned output, activation in place
            wt = w.t()
            y = torch.full(ops.output_shapes(case)["Y"], float("nan"), device=device, dtype=dt)
            act_ = activation_in_place(torch, case.variant)
            addmm = torch.addmm

            def call() -> object:
                addmm(bias, xx, wt, out=y)
                return act_(y)
        return Prepared(call, _results(torch, call, "Y", synchronize), host, _releaser(x),
                        *_read_poison(torch, ("Y",)))
    if case.op == "bmm":
        a, b = x["A"], x["B"]
        bmm = torch.bmm
        if grad:
            a.requires_grad_(True)
            b.requires_grad_(True)

            def call() -> object:
                return bmm(a, b)
        else:
            c = torch.full(ops.output_shapes(case)["C"], float("nan"), device=device, dtype=dt)

            def call() -> object:
                return bmm(a, b, out=c)
        return Prepared(call, _results(torch, call, "C", synchronize), host, _releaser(x),
                        *_read_poison(torch, ("C",)))
    raise AssertionError(case.op)  # pragma: no cover - Case validates op names


def activation(torch: Any, name: str) -> Callable[[Any], Any]:
    """The activation as a user calls it (``F.relu``, ``F.gelu``, ...)."""
    f = torch.nn.functional
    table: dict[str, Callable[[Any], Any]] = {
        "relu": f.relu, "gelu": f.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
        "identity": _identity,
    }
    return table[name]


def activation_in_place(torch: Any, name: str) -> Callable[[Any], Any]:
    table: dict[str, Callable[[Any], Any]] = {
        "relu": torch.relu_, "gelu": torch.ops.aten.gelu_, "tanh": torch.tanh_,
        "sigmoid": torch.sigmoid_, "identity": _identity,
    }
    return table[name]


def _identity(t: Any) -> Any:
    return t


def _results(torch: Any, call: Callable[[], object], name: str,
             synchronize: Callable[[], None]) -> Callable[[], dict[str, np.ndarray]]:
    def run_once() -> dict[str, np.ndarray]:
        r = call()
        synchronize()
        return {name: r.detach().to("cpu", torch.float64).numpy()}

    return run_once


def _read_poison(torch: Any, names: tuple[str, ...]) -> tuple[Callable[[Any], dict[str, np.ndarray]],
                                                              Callable[[Any], None]]:
    """How to read a call's outputs (one tensor, or a tuple of them named ``names``) and
    fill them with NaN: what a CUDA graph's replay is checked with (``measure.gpu.graphs``)."""
    def tensors(r: Any) -> tuple[Any, ...]:
        return tuple(r) if isinstance(r, (tuple, list)) else (r,)

    def read(r: Any) -> dict[str, np.ndarray]:
        return {k: t.detach().to("cpu", torch.float64).numpy()
                for k, t in zip(names, tensors(r), strict=True)}

    def poison(r: Any) -> None:
        for t in tensors(r):
            t.detach().fill_(float("nan"))

    return read, poison


def _releaser(*holders: dict[str, Any] | list[Any]) -> Callable[[], None]:
    def release() -> None:
        for h in holders:
            h.clear()

    return release


def _linear_backward(torch: Any, case: Case, x: dict[str, Any], host: dict[str, np.ndarray],
                     synchronize: Callable[[], None]) -> Prepared:
    xx, w, bias, dy = x["X"], x["W"], x["bias"], x["dY"]
    for t in (xx, w, bias):
        t.requires_grad_(True)
    z = torch.nn.functional.linear(xx, w, bias)  # the graph, built once
    y = activation(torch, case.variant)(z)
    # the pre-activation the backward runs through, for the reference (ReLU's mask at z ≈ 0)
    host["Z"] = z.detach().to("cpu", torch.float64).numpy()
    autograd_grad = torch.autograd.grad
    wrt = (xx, w, bias)

    def call() -> object:
        return autograd_grad(y, wrt, dy, retain_graph=True)

    def run_once() -> dict[str, np.ndarray]:
        r = call()
        synchronize()
        return {k: v.detach().to("cpu", torch.float64).numpy()
                for k, v in zip(("dX", "dW", "dbias"), r, strict=True)}

    graph = [z, y]
    return Prepared(call, run_once, host, _releaser(x, graph), *_read_poison(torch, ("dX", "dW", "dbias")))


def _mlp_step(torch: Any, device: Any, dt: Any, case: Case, x: dict[str, Any],
              host: dict[str, np.ndarray], synchronize: Callable[[], None]) -> Prepared:
    """One training step as a user writes it: ``nn.Sequential``, ``F.mse_loss``, autograd and
    ``torch.optim.SGD`` (its default implementation for the device).

    SGD changes the weights in place; ``reset`` copies the masters back before every timed
    call, outside the timed region, so every call trains the same step on the same weights.
    """
    nn = torch.nn
    b, w = case.shape
    layers = [nn.utils.skip_init(nn.Linear, w, w, device=device, dtype=dt) for _ in range(3)]
    model = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
    params = [p for layer in layers for p in (layer.weight, layer.bias)]
    with torch.no_grad():
        for p, name in zip(params, ops.MLP_PARAMS, strict=True):
            p.copy_(x[name])
    masters = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=ops.LEARNING_RATE)
    xx, t = x["X"], x["T"]
    mse = nn.functional.mse_loss
    state: dict[str, Any] = {}

    def forward() -> Any:
        return mse(model(xx), t, reduction="sum") / b  # Σ (Y - T)² / b

    def call() -> object:
        loss = forward()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def reset() -> None:
        with torch.no_grad():
            for p, m in zip(params, masters, strict=True):
                p.copy_(m)

    def after_forward() -> None:
        reset()
        opt.zero_grad(set_to_none=True)
        state["loss"] = forward()

    def backward() -> object:
        return state.pop("loss").backward()

    def after_backward() -> None:
        after_forward()
        backward()

    def update() -> object:
        opt.step()
        return opt.zero_grad(set_to_none=True)

    def run_once() -> dict[str, np.ndarray]:
        # Z1 and Z2 as the step's forward made them (hooks, outside any timed call): their
        # signs are the ReLU masks the backward used, which the reference then follows.
        seen: list[Any] = []
        hooks = [layers[i].register_forward_hook(
            lambda _m, _i, out: seen.append(out.detach().to("cpu", torch.float64).numpy()))
            for i in (0, 1)]
        try:
            reset()
            call()
            synchronize()
        finally:
            for h in hooks:
                h.remove()
        out = {name: p.detach().to("cpu", torch.float64).numpy()
               for name, p in zip(ops.MLP_PARAMS, params, strict=True)}
        return {**out, "Z1": seen[0], "Z2": seen[1]}

    def release() -> None:
        x.clear()
        params.clear()
        masters.clear()
        layers.clear()
        state.clear()

    phases = {"forward": Phase(forward), "backward": Phase(backward, after_forward),
              "update": Phase(update, after_backward)}
    return Prepared(call, run_once, host, release, reset=reset, phases=phases)


def _host_array(torch: Any, case: Case, values: np.ndarray, pinned: bool) -> Any:
    """A host tensor holding ``values`` in the case's dtype: a numpy array's own (pageable)
    memory where numpy has the dtype, else torch's pageable memory; or page-locked memory."""
    np_dt = _NUMPY_DTYPES.get(case.dtype)
    dt = torch_dtype(torch, case.dtype)
    if np_dt is not None:
        pageable = torch.from_numpy(np.ascontiguousarray(values, dtype=np_dt))
    else:
        pageable = torch.from_numpy(np.ascontiguousarray(values)).to(dtype=dt)
    if not pinned:
        return pageable
    locked = torch.empty(case.shape, dtype=dt, pin_memory=True)
    locked.copy_(pageable)
    return locked


def _h2d(torch: Any, device: Any, dt: Any, case: Case, inputs: dict[str, np.ndarray],
         synchronize: Callable[[], None]) -> Prepared:
    """numpy array -> GPU tensor: a copy into a GPU buffer made beforehand (so the time is the
    transfer's, not the allocator's); from pinned memory it is asynchronous (DMA), and the
    timer waits for it."""
    pinned = case.variant == "pinned"
    src = _host_array(torch, case, inputs["A"], pinned)
    dst = torch.full(case.shape, float("nan"), device=device, dtype=dt)

    def call() -> object:
        return dst.copy_(src, non_blocking=pinned)

    def run_once() -> dict[str, np.ndarray]:
        call()
        synchronize()
        return {"D": dst.to("cpu", torch.float64).numpy()}

    bufs = [src, dst]
    return Prepared(call, run_once, {"A": src.to(dtype=torch.float64).numpy()}, _releaser(bufs))


def _d2h(torch: Any, device: Any, dt: Any, case: Case, inputs: dict[str, np.ndarray],
         synchronize: Callable[[], None]) -> Prepared:
    """GPU tensor -> numpy array (or page-locked memory): a copy into a host buffer made
    beforehand; into pinned memory it is asynchronous, and the timer waits for it."""
    pinned = case.variant == "pinned"
    src = torch.from_numpy(inputs["A"]).to(device=device, dtype=dt)
    dst = _host_array(torch, case, np.full(case.shape, np.nan), pinned)

    def call() -> object:
        return dst.copy_(src, non_blocking=pinned)

    def run_once() -> dict[str, np.ndarray]:
        call()
        synchronize()
        return {"H": dst.to(dtype=torch.float64).numpy()}

    bufs = [src, dst]
    return Prepared(call, run_once, {"A": src.to("cpu", torch.float64).numpy()}, _releaser(bufs))


def _create(torch: Any, device: Any, dt: Any, case: Case,
            synchronize: Callable[[], None]) -> Prepared:
    """``torch.randn`` where the array will be used (the device; torch-cpu: the host), or, for
    ``on=host``, on the host and then copied to the device (pageable memory, as ``.to()``)."""
    seed = int(np.random.SeedSequence(ops.create_seed(case)).generate_state(1)[0])
    shape = case.shape
    randn = torch.randn
    if case.variant == "host":
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def call() -> Any:
            return randn(shape, dtype=dt, generator=gen).to(device)
    else:
        gen = torch.Generator(device=device).manual_seed(seed)

        def call() -> Any:
            return randn(shape, dtype=dt, device=device, generator=gen)

    return Prepared(call, _results(torch, call, "R", synchronize), {})
