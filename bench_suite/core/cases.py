"""Cases and sweeps: what is timed, as plain hashable data.

A :class:`Case` is one op on one backend at one shape, dtype, thread count and grad mode:
the unit that is timed and the key every front end (CLI, asv, pytest-benchmark) and every
report shares, through its stable string id such as
``matmul/torch-cuda/float32/n=4096/threads=all``.

This module is imported by everything, so it stays light: no numpy, no torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bench_suite.core.errors import UsageError

# --- the axes ----------------------------------------------------------------------------

#: op -> (family, is_backward). "matmul" ops take (m, k, n); "elementwise" ops take (m, n);
#: the others take the dimensions :data:`OP_DIMS` names.
OP_INFO: dict[str, tuple[str, bool]] = {
    "matmul": ("matmul", False),
    "hadamard": ("elementwise", False),
    "matmul_backward": ("matmul", True),
    "hadamard_backward": ("elementwise", True),
    "linear": ("linear", False),
    "linear_backward": ("linear", True),
    "mlp_step": ("mlp", False),
    "bmm": ("bmm", False),
    "h2d": ("transfer", False),
    "d2h": ("transfer", False),
    "create": ("create", False),
}
OPS: tuple[str, ...] = tuple(OP_INFO)
#: The building blocks the suite started with (the presets give the newer ops grids of their own).
BUILDING_BLOCKS: tuple[str, ...] = ("matmul", "hadamard", "matmul_backward", "hadamard_backward")

#: op -> the names of its dimensions, in the order of ``Case.shape`` (and of explicit sizes
#: such as ``BxIxO``). ``linear``: X is b x i, W is o x i; ``mlp_step``: a batch of b rows of
#: width w through three w x w layers; ``bmm``: b products (m x k)·(k x n); ``h2d``, ``d2h``
#: and ``create``: one m x n array.
OP_DIMS: dict[str, tuple[str, ...]] = {
    "matmul": ("m", "k", "n"),
    "hadamard": ("m", "n"),
    "matmul_backward": ("m", "k", "n"),
    "hadamard_backward": ("m", "n"),
    "linear": ("b", "i", "o"),
    "linear_backward": ("b", "i", "o"),
    "mlp_step": ("b", "w"),
    "bmm": ("b", "m", "k", "n"),
    "h2d": ("m", "n"),
    "d2h": ("m", "n"),
    "create": ("m", "n"),
}
#: Matrices in one bmm case given as a single size ``n`` (``--sizes 256``: 16 products of 256 x 256).
BMM_BATCH = 16

#: The rate each op is judged by: GFLOP/s where arithmetic dominates, GB/s where memory (or the
#: host-device link) does.
OP_RATE: dict[str, str] = {
    "matmul": "gflops", "hadamard": "gbps", "matmul_backward": "gflops",
    "hadamard_backward": "gbps", "linear": "gflops", "linear_backward": "gflops",
    "mlp_step": "gflops", "bmm": "gflops", "h2d": "gbps", "d2h": "gbps", "create": "gbps",
}
#: Ops that copy across the host-device link (held to the link's peak; CUDA only).
LINK_OPS: tuple[str, ...] = ("h2d", "d2h")

#: Activations a ``linear`` case may name (ReLU unless it names another). ``gelu`` is the exact
#: (erf) form, torch's default.
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "tanh", "sigmoid", "identity")
#: Host memory of an ``h2d``/``d2h`` copy: pageable (what numpy allocates) or page-locked.
HOST_MEMORY: tuple[str, ...] = ("pageable", "pinned")
#: Where ``create`` fills its array: on the backend's own device, or on the host and then
#: copied over (CUDA only: on the CPU the device is the host).
CREATE_ON: tuple[str, ...] = ("device", "host")


@dataclass(frozen=True)
class VariantAxis:
    """A per-op axis beyond backend, dtype, shape, threads and grad mode.

    ``name`` is the asv parameter and the frame's column title; ``field`` the ``Sweep`` field
    (and, with dashes, the command-line filter); ``key`` what a case id says when the value is
    not ``default`` (``/act=gelu``): the default adds nothing, so ids of the default stay short.
    """

    name: str
    field: str
    key: str
    values: tuple[str, ...]
    default: str
    title: str


VARIANT_AXES: dict[str, VariantAxis] = {
    "activation": VariantAxis("activation", "activations", "act", ACTIVATIONS, "relu",
                              "activation"),
    "host_memory": VariantAxis("host_memory", "host_memory", "mem", HOST_MEMORY, "pageable",
                               "host memory"),
    "create_on": VariantAxis("create_on", "create_on", "on", CREATE_ON, "device", "created on"),
}
#: op -> the name of its variant axis (ops not listed have none).
OP_VARIANT: dict[str, str] = {
    "linear": "activation", "linear_backward": "activation", "h2d": "host_memory",
    "d2h": "host_memory", "create": "create_on",
}
BACKENDS: tuple[str, ...] = ("numpy", "torch-cpu", "torch-cuda")
#: "tf32": float32 storage, float32 matmuls on TF32 tensor cores (CUDA only; set for the case
#: alone and restored after). Element-wise ops have no TF32 path: they compute in float32.
DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16", "tf32")
#: "no_grad": plain forward; "grad": forward that records the autograd graph (torch only).
#: Backward ops always run with grad; their mode is recorded as "grad".
GRAD_MODES: tuple[str, ...] = ("no_grad", "grad")

#: Largest accepted dimension: 2**20 squared float64 is 8 TiB, beyond any device we know.
MAX_DIM = 1 << 20

_CUDA_RE = re.compile(r"^torch-cuda(?::(\d{1,3}))?$")
#: ``--backends torch-cuda:all``: one backend per visible GPU (``backends.expand_devices``).
ALL_CUDA = "torch-cuda:all"


def op_family(op: str) -> str:
    return OP_INFO[op][0]


def is_backward(op: str) -> bool:
    return OP_INFO[op][1]


def op_ndim(op: str) -> int:
    return len(OP_DIMS[op])


def variant_axis(op: str) -> VariantAxis | None:
    """The op's variant axis (activation, host memory, where created), or None."""
    name = OP_VARIANT.get(op)
    return VARIANT_AXES[name] if name else None


def fixed_grad_mode(op: str) -> str | None:
    """The one grad mode an op runs in, or None when it has both.

    Backward ops and the training step always record the graph ("grad"); copies and
    ``create`` have nothing to differentiate ("no_grad"); the other forward ops have both.
    """
    if is_backward(op) or op == "mlp_step":
        return "grad"
    if op_family(op) in ("transfer", "create"):
        return "no_grad"
    return None


def square_shape(op: str, n: int) -> tuple[int, ...]:
    """The shape ``--sizes n`` means for ``op``: n in every dimension, but bmm keeps a fixed
    batch of :data:`BMM_BATCH` n x n products."""
    if op == "bmm":
        return (BMM_BATCH, n, n, n)
    return (n,) * op_ndim(op)


def is_cuda_backend(backend: str) -> bool:
    return _CUDA_RE.match(backend) is not None


def cuda_index(backend: str) -> int:
    """Device index of a ``torch-cuda[:N]`` backend name (0 when no index is given)."""
    match = _CUDA_RE.match(backend)
    if match is None:
        raise UsageError(f"{backend!r} is not a CUDA backend")
    return int(match.group(1) or 0)


def validate_backend(name: str) -> str:
    if name in BACKENDS or is_cuda_backend(name):
        return name
    if name == ALL_CUDA:
        raise UsageError(f"{ALL_CUDA} is expanded by the command line into one backend per visible "
                         "GPU; here, name the devices (torch-cuda:0,torch-cuda:1,...)")
    raise UsageError(
        f"unknown backend {name!r}; valid: {', '.join(BACKENDS)} (or torch-cuda:N for card N)"
    )


def cpu_count() -> int:
    """Cores this process may run on (what ``threads=all`` means)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# --- Case ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Case:
    """One timed unit. Frozen and hashable; ``id`` is stable across machines and versions."""

    op: str
    backend: str
    dtype: str
    shape: tuple[int, ...]
    threads: int | None = None  # None: every core this process may use ("all")
    grad_mode: str = "no_grad"
    #: The value of the op's variant axis (``VARIANT_AXES``); "" means its default, and is
    #: stored as the default. Ops without a variant axis keep "".
    variant: str = ""

    def __post_init__(self) -> None:
        if self.op not in OP_INFO:
            raise UsageError(f"unknown op {self.op!r}; valid: {', '.join(OPS)}")
        validate_backend(self.backend)
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        want = op_ndim(self.op)
        if len(self.shape) != want or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM
            for d in self.shape
        ):
            raise UsageError(
                f"{self.op} needs {want} dimensions, each 1..{MAX_DIM}; got {self.shape!r}"
            )
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool)
            or not 0 < self.threads <= 4096
        ):
            raise UsageError(f"threads must be a positive count or 'all'; got {self.threads!r}")
        if self.grad_mode not in GRAD_MODES:
            raise UsageError(
                f"unknown grad mode {self.grad_mode!r}; valid: {', '.join(GRAD_MODES)}"
            )
        fixed = fixed_grad_mode(self.op)
        if fixed is not None and self.grad_mode != fixed:
            object.__setattr__(self, "grad_mode", fixed)
        if self.backend == "numpy" and fixed is None and self.grad_mode == "grad":
            raise UsageError("numpy has no autograd: its forward ops run with grad_mode no_grad")
        axis = variant_axis(self.op)
        if axis is None:
            if self.variant:
                raise UsageError(f"{self.op} has no variants; got {self.variant!r}")
        elif not self.variant:
            object.__setattr__(self, "variant", axis.default)
        elif self.variant not in axis.values:
            raise UsageError(
                f"unknown {axis.title} {self.variant!r} for {self.op}; valid: {', '.join(axis.values)}"
            )

    # Dimensions, named as in the op's definition: C[m, n] = A[m, k] @ B[k, n]. For linear,
    # Y[b, o] = X[b, i]·W[o, i]ᵀ reads as m=b, k=i, n=o; for bmm they are each product's; for
    # mlp_step m=b (batch) and n=w (width).
    @property
    def m(self) -> int:
        return self.shape[1] if self.op == "bmm" else self.shape[0]

    @property
    def k(self) -> int | None:
        if self.op == "bmm":
            return self.shape[2]
        return self.shape[1] if len(self.shape) == 3 else None

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def batch(self) -> int | None:
        """Products in one bmm call (None for the other ops)."""
        return self.shape[0] if self.op == "bmm" else None

    @property
    def family(self) -> str:
        return op_family(self.op)

    @property
    def size_label(self) -> str:
        if self.op == "bmm" and len(set(self.shape[1:])) == 1:
            return f"b={self.shape[0]},n={self.shape[1]}"
        if len(set(self.shape)) == 1:
            return f"n={self.shape[0]}"
        return ",".join(f"{a}={d}" for a, d in zip(OP_DIMS[self.op], self.shape, strict=True))

    @property
    def threads_label(self) -> str:
        return "all" if self.threads is None else str(self.threads)

    @property
    def id(self) -> str:
        base = f"{self.op}/{self.backend}/{self.dtype}/{self.size_label}/threads={self.threads_label}"
        axis = variant_axis(self.op)
        if axis is not None and self.variant != axis.default:
            base += f"/{axis.key}={self.variant}"
        if fixed_grad_mode(self.op) is None and self.grad_mode == "grad":
            base += "/grad"
        return base

    def __str__(self) -> str:
        return self.id

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "op": self.op,
            "backend": self.backend,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "threads": self.threads,
            "grad_mode": self.grad_mode,
        }
        if variant_axis(self.op) is not None:  # absent for the ops without one, as before
            out["variant"] = self.variant
        return out

    @classmethod
    def from_dict(cls, data: object) -> Case:
        if not isinstance(data, dict):
            raise UsageError(f"a case must be an object, not {type(data).__name__}")
        try:
            shape = data["shape"]
            if not isinstance(shape, list):
                raise UsageError(f"case shape must be a list, not {type(shape).__name__}")
            return cls(
                op=_str(data["op"], "op"),
                backend=_str(data["backend"], "backend"),
                dtype=_str(data["dtype"], "dtype"),
                shape=tuple(shape),
                threads=data.get("threads"),
                grad_mode=_str(data.get("grad_mode", "no_grad"), "grad_mode"),
                variant=_str(data.get("variant", ""), "variant"),
            )
        except KeyError as exc:
            raise UsageError(f"case lacks the field {exc.args[0]!r}") from None


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"case {name} must be a string, not {type(value).__name__}")
    return value


_ID_RE = re.compile(
    r"^(?P<op>[a-z0-9_]+)/(?P<backend>[a-z0-9:-]+)/(?P<dtype>[a-z0-9]+)/(?P<size>[a-z0-9=,]+)"
    r"/threads=(?P<threads>all|\d+)(?:/(?P<vkey>[a-z]+)=(?P<variant>[a-z0-9_]+))?(?P<grad>/grad)?$"
)


def parse_case_id(case_id: str) -> Case:
    """The inverse of :attr:`Case.id`."""
    match = _ID_RE.match(case_id.strip())
    if match is None:
        raise UsageError(
            f"malformed case id {case_id!r}; expected op/backend/dtype/n=N/threads=T, "
            "e.g. matmul/numpy/float32/n=512/threads=1"
        )
    op = match["op"]
    if op not in OP_INFO:
        raise UsageError(f"unknown op {op!r} in case id; valid: {', '.join(OPS)}")
    parts = dict(p.split("=", 1) for p in match["size"].split(",") if "=" in p)
    dims = OP_DIMS[op]
    try:
        if set(parts) == {"n"}:
            shape: tuple[int, ...] = square_shape(op, int(parts["n"]))
        elif op == "bmm" and set(parts) == {"b", "n"}:
            n = int(parts["n"])
            shape = (int(parts["b"]), n, n, n)
        elif set(parts) == set(dims) and len(parts) == len(dims):
            shape = tuple(int(parts[d]) for d in dims)
        else:
            raise ValueError
    except ValueError:
        raise UsageError(f"malformed size {match['size']!r} in case id {case_id!r}") from None
    threads = None if match["threads"] == "all" else int(match["threads"])
    variant = ""
    if match["vkey"]:
        axis = variant_axis(op)
        if axis is None or match["vkey"] != axis.key:
            raise UsageError(f"{op} has no variant {match['vkey']!r} (in case id {case_id!r})")
        variant = match["variant"]
    grad = "grad" if match["grad"] or fixed_grad_mode(op) == "grad" else "no_grad"
    return Case(op, match["backend"], match["dtype"], shape, threads, grad, variant)


# --- sweeps -------------------------------------------------------------------------------

Size = int | tuple[int, ...]


@dataclass(frozen=True)
class Sweep:
    """A grid of cases. ``sizes`` holds square sizes ``n`` or explicit shapes.

    ``parts``: further grids whose cases join this one's, so a preset can give an op axes of
    its own (the training step at smaller sizes, bmm at shapes of its own). Filters
    (:meth:`with_filters`) apply to every part; ``ops`` selects among each part's ops.
    """

    ops: tuple[str, ...] = OPS
    backends: tuple[str, ...] = BACKENDS
    dtypes: tuple[str, ...] = ("float32",)
    sizes: tuple[Size, ...] = (256, 1024)
    #: thread counts (None: all cores), or "scaling": 1, 2, 4, ... below the core count, then all
    threads: tuple[int | None, ...] | str = (1, None)
    grad_modes: tuple[str, ...] = GRAD_MODES
    #: linear ops: activations (each other than relu adds /act=NAME to the id)
    activations: tuple[str, ...] = ("relu",)
    #: h2d and d2h: host memory, pageable and/or pinned
    host_memory: tuple[str, ...] = HOST_MEMORY
    #: create: on the device, and/or on the host then copied over (CUDA backends only)
    create_on: tuple[str, ...] = CREATE_ON
    parts: tuple[Sweep, ...] = ()

    def with_filters(self, **overrides: object) -> Sweep:
        """A copy with the given axes replaced; ``None`` values keep the preset's axis.

        ``ops`` keeps, in each part, the ops of that part it names; an op no part has goes to
        the first. Every other axis is replaced in every part.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        wanted = given.pop("ops", None)
        flat = [replace(s, parts=(), **given) for s in self._flat()]  # type: ignore[arg-type]
        if wanted is not None:
            wanted = tuple(wanted)  # type: ignore[arg-type]
            covered = {op for s in flat for op in s.ops}
            flat = [replace(s, ops=tuple(op for op in wanted if op in s.ops)
                            + (tuple(op for op in wanted if op not in covered) if i == 0 else ()))
                    for i, s in enumerate(flat)]
        first, *rest = flat
        return replace(first, parts=tuple(p for p in rest if p.ops))

    def _flat(self) -> list[Sweep]:
        out = [self]
        for part in self.parts:
            out.extend(part._flat())
        return out

    def expand(self) -> list[Case]:
        """Every case of the grid and its parts, in a stable order, without duplicates."""
        out: dict[str, Case] = {}
        for sweep in self._flat():
            sweep._expand_into(out)
        if not out:
            raise UsageError("the sweep is empty: no size fits the selected ops")
        return list(out.values())

    def _expand_into(self, out: dict[str, Case]) -> None:
        for op in self.ops:
            if op not in OP_INFO:
                raise UsageError(f"unknown op {op!r}; valid: {', '.join(OPS)}")
        for backend in self.backends:
            validate_backend(backend)
        for dtype in self.dtypes:
            if dtype not in DTYPES:
                raise UsageError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        for mode in self.grad_modes:
            if mode not in GRAD_MODES:
                raise UsageError(f"unknown grad mode {mode!r}; valid: {', '.join(GRAD_MODES)}")
        for axis in VARIANT_AXES.values():
            for value in getattr(self, axis.field):
                if value not in axis.values:
                    raise UsageError(f"unknown {axis.title} {value!r}; valid: {', '.join(axis.values)}")
        cores = cpu_count()
        if self.threads == "scaling":
            thread_axis: tuple[int | None, ...] = (
                *(1 << i for i in range(cores.bit_length()) if 1 << i < cores), None
            )
        elif isinstance(self.threads, str):
            raise UsageError(f"unknown thread axis {self.threads!r}; use counts or 'scaling'")
        else:
            thread_axis = self.threads
        for op in self.ops:
            shapes = [s for s in (_shape_for(op, size) for size in self.sizes) if s is not None]
            fixed = fixed_grad_mode(op)
            axis = variant_axis(op)
            for backend in self.backends:
                modes = (fixed,) if fixed is not None else (
                    ("no_grad",) if backend == "numpy" else self.grad_modes
                )
                # Host threads do not drive a GPU kernel, nor a copy: CUDA cases and copies
                # run once, at "all".
                threads = (None,) if is_cuda_backend(backend) or op in LINK_OPS else thread_axis
                variants: tuple[str, ...] = ("",) if axis is None else tuple(
                    v for v in getattr(self, axis.field)
                    # On the CPU the device is the host: nothing is created "on the host" apart,
                    # and a copy across the link is one case, skipped with the reason.
                    if is_cuda_backend(backend) or (op not in LINK_OPS and v != "host")
                    or (op in LINK_OPS and v == getattr(self, axis.field)[0])
                )
                for dtype in self.dtypes:
                    for shape in shapes:
                        for t in threads:
                            # an explicit count equal to "all" is the same case twice
                            if t is not None and t == cores and None in threads:
                                continue
                            for mode in modes:
                                for variant in variants:
                                    case = Case(op, backend, dtype, shape, t, mode, variant)
                                    out.setdefault(case.id, case)


def _shape_for(op: str, size: Size) -> tuple[int, ...] | None:
    if isinstance(size, int):
        return square_shape(op, size)
    return tuple(size) if len(size) == op_ndim(op) else None


@dataclass(frozen=True)
class Preset:
    sweep: Sweep
    time_budget_s: float  # per case, shared by its rounds
    description: str = field(default="", compare=False)
    #: Rounds (fresh processes) of a ``run`` by default: enough for the spread between rounds
    #: to stand for the spread between runs. Each round pays the imports again (torch, and
    #: its optimizers for a training step: seconds), which is what keeps ``quick`` at four.
    rounds: int = 5


#: The ops beyond the building blocks, which the presets give grids of their own.
NEW_OPS: tuple[str, ...] = tuple(op for op in OPS if op not in BUILDING_BLOCKS)

#: Shapes of real transformer layers, as (tokens, d_model, d_ff)-style products:
#: GPT-2 small (1024 tokens, d_model 768, 12 heads of 64, d_ff 3072) and a GPT-3 6.7B-sized
#: layer (4096 tokens, d_model 4096, 32 heads of 128, d_ff 16384).
#: matmul (m, k, n): the MLP's up- and down-projections of every token.
TRANSFORMER_MATMULS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "gpt2-small": ((1024, 768, 3072), (1024, 3072, 768)),
    "6.7b": ((4096, 4096, 16384), (4096, 16384, 4096)),
}
#: bmm (heads, m, k, n): attention scores Q·Kᵀ (seq x head_dim x seq) and their product with V.
TRANSFORMER_BMMS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "gpt2-small": ((12, 1024, 64, 1024), (12, 1024, 1024, 64)),
    "6.7b": ((32, 4096, 128, 4096), (32, 4096, 4096, 128)),
}
#: linear (b, i, o): the MLP's up-projection as a layer, with GELU.
TRANSFORMER_LINEARS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "gpt2-small": ((1024, 768, 3072),),
    "6.7b": ((4096, 4096, 16384),),
}
#: bmm from many small products to few large ones: (batch, m, k, n), plus n=BMM_BATCH x n^2.
BMM_DEFAULT: tuple[Size, ...] = ((2048, 16, 16, 16), (512, 32, 32, 32), (128, 64, 64, 64), 128,
                                 512, (4, 1024, 1024, 1024))
BMM_FULL: tuple[Size, ...] = ((16384, 8, 8, 8), (4096, 16, 16, 16), (1024, 32, 32, 32),
                              (256, 64, 64, 64), 128, 512, 2048, (4, 4096, 4096, 4096))


def _new_op_parts(sizes: tuple[int, ...], mlp_sizes: tuple[int, ...], bmm: tuple[Size, ...],
                  models: tuple[str, ...], dtypes: tuple[str, ...],
                  threads: tuple[int | None, ...] | str) -> tuple[Sweep, ...]:
    """The default and full presets' grids of the newer ops: the layer and the copies at the
    building blocks' sizes (so the break-even figure has every side), the training step
    smaller (its float64 reference costs about eight matmuls), bmm from many small products
    to few large ones, and the transformer shapes, at every core."""
    common = {"dtypes": dtypes}
    return (
        Sweep(ops=("linear", "linear_backward", "h2d", "d2h", "create"), sizes=sizes,
              threads=threads, **common),
        Sweep(ops=("mlp_step",), sizes=mlp_sizes, threads=threads, **common),
        Sweep(ops=("bmm",), sizes=bmm, threads=threads, **common),
        Sweep(ops=("matmul",), sizes=tuple(s for m in models for s in TRANSFORMER_MATMULS[m]),
              threads=(None,), **common),
        Sweep(ops=("bmm",), sizes=tuple(s for m in models for s in TRANSFORMER_BMMS[m]),
              threads=(None,), **common),
        Sweep(ops=("linear", "linear_backward"),
              sizes=tuple(s for m in models for s in TRANSFORMER_LINEARS[m]), threads=(None,),
              activations=("gelu",), **common),
    )


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        Sweep(ops=BUILDING_BLOCKS, dtypes=("float32",), sizes=(256, 1024), threads=(1, None),
              parts=(
                  # the newer ops at every core, plain forward: a glance, a few seconds in all
                  Sweep(ops=("linear", "h2d", "d2h"), sizes=(256, 1024), threads=(None,),
                        grad_modes=("no_grad",)),
                  Sweep(ops=("linear_backward", "mlp_step"), sizes=(256,), threads=(None,)),
                  Sweep(ops=("bmm",), sizes=(128,), threads=(None,), grad_modes=("no_grad",)),
                  Sweep(ops=("create",), sizes=(1024,), threads=(None,)),
              )),
        time_budget_s=0.25,
        rounds=4,
        description="float32 at n=256 and 1024, 1 thread and all; the layer, training step, "
        "bmm and copies at every core: about a minute on 2 cores",
    ),
    "default": Preset(
        Sweep(ops=BUILDING_BLOCKS, dtypes=("float32", "float64"),
              sizes=(128, 256, 512, 1024, 2048), threads="scaling",
              parts=_new_op_parts((128, 256, 512, 1024, 2048), (128, 256, 512, 1024), BMM_DEFAULT,
                                  ("gpt2-small",), ("float32", "float64"), "scaling")),
        time_budget_s=1.0,
        description="float32 and float64, n=128..2048, thread scaling; bmm from many small to "
        "few large products and GPT-2-small layer shapes",
    ),
    "full": Preset(
        Sweep(ops=BUILDING_BLOCKS, dtypes=DTYPES, sizes=(64, 128, 256, 512, 1024, 2048, 4096, 8192),
              threads="scaling",
              parts=_new_op_parts((64, 128, 256, 512, 1024, 2048, 4096, 8192),
                                  (64, 128, 256, 512, 1024, 2048), BMM_FULL,
                                  ("gpt2-small", "6.7b"), DTYPES, "scaling")),
        time_budget_s=2.0,
        description="every dtype, n=64..8192, thread scaling, GPT-2-small and 6.7B-sized "
        "transformer shapes: for GPUs and big machines",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}") from None


# --- parsing of command-line lists ---------------------------------------------------------


def _items(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise UsageError(f"malformed {what} list {text!r}: expected comma-separated values")
    return items


def parse_names(text: str, valid: Sequence[str], what: str) -> tuple[str, ...]:
    names = _items(text, what)
    for name in names:
        if name not in valid:
            raise UsageError(f"unknown {what} {name!r}; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(names))


def parse_backends(text: str, allow_all: bool = False) -> tuple[str, ...]:
    """Backend names; with ``allow_all``, ``torch-cuda:all`` too, for the caller to expand into
    one backend per visible device (``backends.expand_devices``)."""
    return tuple(dict.fromkeys(
        b if allow_all and b == ALL_CUDA else validate_backend(b) for b in _items(text, "backend")
    ))


#: What ``--sizes`` accepts, for messages and help.
SIZES_HELP = ("N (square), MxKxN (matmul), BxIxO (linear), BxMxKxN (bmm), BxW (mlp_step) or MxN "
              "(hadamard, h2d, d2h, create)")


def parse_sizes(text: str) -> tuple[Size, ...]:
    """``256,1024`` (square sizes) or explicit shapes (:data:`SIZES_HELP`); an explicit shape
    applies to the ops with as many dimensions."""
    out: list[Size] = []
    for item in _items(text, "size"):
        dims = item.lower().split("x")
        if len(dims) not in (1, 2, 3, 4):
            raise UsageError(f"malformed size {item!r}: use {SIZES_HELP}")
        try:
            values = [int(d) for d in dims]
        except ValueError:
            raise UsageError(f"malformed size {item!r}: use {SIZES_HELP}") from None
        for v in values:
            if not 0 < v <= MAX_DIM:
                raise UsageError(f"size {item!r} out of range: each dimension must be 1..{MAX_DIM}")
        out.append(values[0] if len(values) == 1 else tuple(values))
    return tuple(dict.fromkeys(out))


def parse_threads(text: str) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for item in _items(text, "thread"):
        if item == "all":
            out.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise UsageError(f"malformed thread count {item!r}: use a positive number or 'all'") from None
        if not 0 < value <= 4096:
            raise UsageError(f"thread count {item!r} out of range: use 1..4096 or 'all'")
        out.append(value)
    return tuple(dict.fromkeys(out))


#: The filters a sweep can be narrowed by, as ``Sweep.with_filters`` names them: what the
#: CLI's ``--ops`` ... and pytest's ``--suite-ops`` ... options hold.
FILTER_AXES: tuple[str, ...] = ("ops", "backends", "dtypes", "sizes", "threads", "grad_modes",
                                *(a.field for a in VARIANT_AXES.values()))


def parse_filters(text: Mapping[str, str | None], allow_all: bool = False) -> dict[str, tuple[object, ...] | None]:
    """Filters given as text (keys of :data:`FILTER_AXES`; missing or empty: no filter)
    parsed for ``Sweep.with_filters``; a ``UsageError`` names the first bad value.
    ``allow_all``: ``torch-cuda:all`` is a backend (see :func:`parse_backends`)."""
    parsers: dict[str, Callable[[str], tuple[object, ...]]] = {
        "ops": lambda t: parse_names(t, OPS, "op"),
        "backends": lambda t: parse_backends(t, allow_all=allow_all),
        "dtypes": lambda t: parse_names(t, DTYPES, "dtype"),
        "sizes": parse_sizes,
        "threads": parse_threads,
        "grad_modes": lambda t: parse_names(t, GRAD_MODES, "grad mode"),
        **{a.field: (lambda t, a=a: parse_names(t, a.values, a.title)) for a in VARIANT_AXES.values()},
    }
    return {axis: parsers[axis](value) if (value := text.get(axis)) else None for axis in FILTER_AXES}
