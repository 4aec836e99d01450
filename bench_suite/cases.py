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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from bench_suite.errors import UsageError

# --- the axes ----------------------------------------------------------------------------

#: op -> (family, is_backward). "matmul" ops take (m, k, n); "elementwise" ops take (m, n).
OP_INFO: dict[str, tuple[str, bool]] = {
    "matmul": ("matmul", False),
    "hadamard": ("elementwise", False),
    "matmul_backward": ("matmul", True),
    "hadamard_backward": ("elementwise", True),
}
OPS: tuple[str, ...] = tuple(OP_INFO)
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

    def __post_init__(self) -> None:
        if self.op not in OP_INFO:
            raise UsageError(f"unknown op {self.op!r}; valid: {', '.join(OPS)}")
        validate_backend(self.backend)
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        want = 3 if op_family(self.op) == "matmul" else 2
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
        if is_backward(self.op) and self.grad_mode != "grad":
            object.__setattr__(self, "grad_mode", "grad")
        if self.backend == "numpy" and not is_backward(self.op) and self.grad_mode == "grad":
            raise UsageError("numpy has no autograd: its forward ops run with grad_mode no_grad")

    # Dimensions, named as in the op's definition: C[m, n] = A[m, k] @ B[k, n].
    @property
    def m(self) -> int:
        return self.shape[0]

    @property
    def k(self) -> int | None:
        return self.shape[1] if len(self.shape) == 3 else None

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def family(self) -> str:
        return op_family(self.op)

    @property
    def size_label(self) -> str:
        if len(set(self.shape)) == 1:
            return f"n={self.shape[0]}"
        names = ("m", "k", "n") if len(self.shape) == 3 else ("m", "n")
        return ",".join(f"{a}={d}" for a, d in zip(names, self.shape, strict=True))

    @property
    def threads_label(self) -> str:
        return "all" if self.threads is None else str(self.threads)

    @property
    def id(self) -> str:
        base = f"{self.op}/{self.backend}/{self.dtype}/{self.size_label}/threads={self.threads_label}"
        if not is_backward(self.op) and self.grad_mode == "grad":
            base += "/grad"
        return base

    def __str__(self) -> str:
        return self.id

    def to_dict(self) -> dict[str, object]:
        return {
            "op": self.op,
            "backend": self.backend,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "threads": self.threads,
            "grad_mode": self.grad_mode,
        }

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
            )
        except KeyError as exc:
            raise UsageError(f"case lacks the field {exc.args[0]!r}") from None


def _str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"case {name} must be a string, not {type(value).__name__}")
    return value


_ID_RE = re.compile(
    r"^(?P<op>[a-z_]+)/(?P<backend>[a-z0-9:-]+)/(?P<dtype>[a-z0-9]+)/(?P<size>[a-z0-9=,]+)"
    r"/threads=(?P<threads>all|\d+)(?P<grad>/grad)?$"
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
    try:
        if set(parts) == {"n"}:
            n = int(parts["n"])
            shape: tuple[int, ...] = (n, n, n) if op_family(op) == "matmul" else (n, n)
        elif op_family(op) == "matmul" and set(parts) == {"m", "k", "n"}:
            shape = (int(parts["m"]), int(parts["k"]), int(parts["n"]))
        elif op_family(op) == "elementwise" and set(parts) == {"m", "n"}:
            shape = (int(parts["m"]), int(parts["n"]))
        else:
            raise ValueError
    except ValueError:
        raise UsageError(f"malformed size {match['size']!r} in case id {case_id!r}") from None
    threads = None if match["threads"] == "all" else int(match["threads"])
    grad = "grad" if match["grad"] or is_backward(op) else "no_grad"
    return Case(op, match["backend"], match["dtype"], shape, threads, grad)


# --- sweeps -------------------------------------------------------------------------------

Size = int | tuple[int, ...]


@dataclass(frozen=True)
class Sweep:
    """A grid of cases. ``sizes`` holds square sizes ``n`` or explicit shapes."""

    ops: tuple[str, ...] = OPS
    backends: tuple[str, ...] = BACKENDS
    dtypes: tuple[str, ...] = ("float32",)
    sizes: tuple[Size, ...] = (256, 1024)
    #: thread counts (None: all cores), or "scaling": 1, 2, 4, ... below the core count, then all
    threads: tuple[int | None, ...] | str = (1, None)
    grad_modes: tuple[str, ...] = GRAD_MODES

    def with_filters(self, **overrides: object) -> Sweep:
        """A copy with the given axes replaced; ``None`` values keep the preset's axis."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def expand(self) -> list[Case]:
        """Every case of the grid, in a stable order, without duplicates."""
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
        cores = cpu_count()
        if self.threads == "scaling":
            thread_axis: tuple[int | None, ...] = (
                *(1 << i for i in range(cores.bit_length()) if 1 << i < cores), None
            )
        elif isinstance(self.threads, str):
            raise UsageError(f"unknown thread axis {self.threads!r}; use counts or 'scaling'")
        else:
            thread_axis = self.threads
        out: dict[str, Case] = {}
        for op in self.ops:
            shapes = [s for s in (_shape_for(op, size) for size in self.sizes) if s is not None]
            for backend in self.backends:
                modes = ("grad",) if is_backward(op) else (
                    ("no_grad",) if backend == "numpy" else self.grad_modes
                )
                # Host threads do not drive a GPU kernel: CUDA cases run once, at "all".
                threads = (None,) if is_cuda_backend(backend) else thread_axis
                for dtype in self.dtypes:
                    for shape in shapes:
                        for t in threads:
                            # an explicit count equal to "all" is the same case twice
                            if t is not None and t == cores and None in threads:
                                continue
                            for mode in modes:
                                case = Case(op, backend, dtype, shape, t, mode)
                                out.setdefault(case.id, case)
        if not out:
            raise UsageError("the sweep is empty: no size fits the selected ops")
        return list(out.values())


def _shape_for(op: str, size: Size) -> tuple[int, ...] | None:
    want = 3 if op_family(op) == "matmul" else 2
    if isinstance(size, int):
        return (size,) * want
    return tuple(size) if len(size) == want else None


@dataclass(frozen=True)
class Preset:
    sweep: Sweep
    time_budget_s: float  # per case
    description: str = field(default="", compare=False)


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        Sweep(dtypes=("float32",), sizes=(256, 1024), threads=(1, None)),
        time_budget_s=0.4,
        description="float32 at n=256 and 1024, 1 thread and all: well under a minute on 2 cores",
    ),
    "default": Preset(
        Sweep(dtypes=("float32", "float64"), sizes=(128, 256, 512, 1024, 2048),
              threads="scaling"),
        time_budget_s=1.0,
        description="float32 and float64, n=128..2048, thread scaling",
    ),
    "full": Preset(
        Sweep(dtypes=DTYPES, sizes=(64, 128, 256, 512, 1024, 2048, 4096, 8192),
              threads="scaling"),
        time_budget_s=2.0,
        description="every dtype, n=64..8192, thread scaling: for GPUs and big machines",
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


def parse_sizes(text: str) -> tuple[Size, ...]:
    """``256,1024`` (square sizes) or explicit shapes ``MxKxN`` (matmul) and ``MxN``."""
    out: list[Size] = []
    for item in _items(text, "size"):
        dims = item.lower().split("x")
        if len(dims) not in (1, 2, 3):
            raise UsageError(f"malformed size {item!r}: use N, MxN (hadamard) or MxKxN (matmul)")
        try:
            values = [int(d) for d in dims]
        except ValueError:
            raise UsageError(
                f"malformed size {item!r}: use N, MxN (hadamard) or MxKxN (matmul)"
            ) from None
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


def select(cases: Iterable[Case], ids: Iterable[str]) -> list[Case]:
    wanted = set(ids)
    return [c for c in cases if c.id in wanted]
