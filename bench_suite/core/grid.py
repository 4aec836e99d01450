"""Case grids for the foreign front ends (asv, pytest-benchmark), and their parameter codec.

asv wants a Cartesian grid of named parameters per benchmark; pytest-benchmark wants a list
of ids. Both are derived here from the same :class:`~bench_suite.core.cases.Sweep` the CLI uses, so
a new op, backend or dtype appears in every front end at once. The codec also works the other
way, from asv's parameter values back to a :class:`Case`, which is how asv results are read
into the suite's frame.

This module is as light as ``cases.py``: no numpy, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bench_suite.core.cases import (
    BUILDING_BLOCKS,
    NEW_OPS,
    OPS,
    PRESETS,
    VARIANT_AXES,
    Case,
    Sweep,
    fixed_grad_mode,
    get_preset,
    square_shape,
    variant_axis,
)
from bench_suite.core.errors import UsageError

#: Grids by name. "ci" is small on purpose (CI runs it on every change); the others are the
#: CLI's presets, so `BENCH_SUITE_ASV_PRESET=default` benchmarks what `bench-suite run
#: --preset default` runs. The newer ops join "ci" at n=64 only.
CI_SWEEP = Sweep(ops=BUILDING_BLOCKS, dtypes=("float32",), sizes=(64, 256), threads=(1,),
                 parts=(Sweep(ops=NEW_OPS, dtypes=("float32",), sizes=(64,), threads=(1,),
                              grad_modes=("no_grad",)),))
GRIDS: tuple[str, ...] = ("ci", *PRESETS)
DEFAULT_GRID = "ci"

#: asv parameter names, in order. Backward ops always record the graph: no grad_mode axis.
FORWARD_AXES: tuple[str, ...] = ("backend", "dtype", "size", "threads", "grad_mode")
BACKWARD_AXES: tuple[str, ...] = FORWARD_AXES[:-1]


def grid_sweep(name: str) -> Sweep:
    """The sweep of a named grid: ``ci`` or one of the CLI presets."""
    if name == "ci":
        return CI_SWEEP
    if name not in PRESETS:
        raise UsageError(f"unknown grid {name!r}; valid: {', '.join(GRIDS)}")
    return get_preset(name).sweep


def axis_names(op: str) -> tuple[str, ...]:
    """asv's parameter names of an op: backend, dtype, size, threads; grad_mode where the op
    has both modes; then its variant axis (activation, host_memory, create_on), if any."""
    if op not in OPS:
        raise UsageError(f"unknown op {op!r}; valid: {', '.join(OPS)}")
    names = BACKWARD_AXES if fixed_grad_mode(op) is not None else FORWARD_AXES
    axis = variant_axis(op)
    return names if axis is None else (*names, axis.name)


def size_value(case: Case) -> int | str:
    """The ``size`` parameter: ``n`` for a square case (bmm: a batch of 16 n x n products),
    else ``MxKxN`` / ``MxN`` / ``BxMxKxN``..."""
    if square_shape(case.op, case.n) == case.shape:
        return case.n
    return "x".join(map(str, case.shape))


def case_values(case: Case) -> tuple[int | str, ...]:
    """The case's parameter values, in the order of :func:`axis_names`."""
    values: tuple[int | str, ...] = (case.backend, case.dtype, size_value(case), case.threads_label)
    if fixed_grad_mode(case.op) is None:
        values = (*values, case.grad_mode)
    return values if variant_axis(case.op) is None else (*values, case.variant)


def case_from_values(op: str, names: Sequence[str], values: Sequence[object]) -> Case:
    """The case named by a parameter combination; UsageError if it names none.

    Unknown axis names are an error (a grid from another version of the suite); a missing
    ``threads`` or ``grad_mode`` takes the case's default.
    """
    if len(names) != len(values):
        raise UsageError(f"{len(names)} parameter names but {len(values)} values")
    params = dict(zip(names, values, strict=True))
    unknown = set(params) - set(FORWARD_AXES) - set(VARIANT_AXES)
    if unknown:
        raise UsageError(f"unknown parameter(s) {', '.join(sorted(unknown))} for {op}")
    for key in ("backend", "dtype", "size"):
        if key not in params:
            raise UsageError(f"parameter {key!r} missing for {op}")
    threads = str(params.get("threads", "all"))
    if threads == "all":
        count = None
    elif threads.isdigit():
        count = int(threads)
    else:
        raise UsageError(f"malformed threads value {threads!r}")
    grad_mode = fixed_grad_mode(op) or str(params.get("grad_mode", "no_grad"))
    axis = variant_axis(op)
    if axis is None and any(name in params for name in VARIANT_AXES):
        raise UsageError(f"{op} has no parameter {', '.join(set(params) & set(VARIANT_AXES))}")
    variant = str(params.get(axis.name, "")) if axis is not None else ""
    return Case(op, str(params["backend"]), str(params["dtype"]), _shape(op, params["size"]),
                count, grad_mode, variant)


def _shape(op: str, size: object) -> tuple[int, ...]:
    if isinstance(size, int) and not isinstance(size, bool):
        return square_shape(op, size)
    text = str(size)
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"malformed size {text!r}") from None
    if len(dims) == 1:
        return square_shape(op, dims[0])
    return dims


def parameter_grid(op: str, cases: Iterable[Case]) -> tuple[list[str], list[list[int | str]]]:
    """asv's ``param_names`` and ``params`` for one op: on each axis, the values its cases
    take, in the sweep's order. The product may hold combinations the sweep does not (a
    CUDA case at 1 thread): the front end skips those."""
    names = list(axis_names(op))
    axes: list[dict[int | str, None]] = [{} for _ in names]
    for case in cases:
        if case.op != op:
            continue
        for axis, value in zip(axes, case_values(case), strict=True):
            axis.setdefault(value, None)
    return names, [list(axis) for axis in axes]


def grid_cases(sweep: Sweep, backends: Sequence[str] | None = None) -> list[Case]:
    """The cases of a grid, optionally limited to some backends (asv on a GPU-only run)."""
    if backends:
        sweep = sweep.with_filters(backends=tuple(backends))
    return sweep.expand()


def cases_by_op(cases: Iterable[Case]) -> Mapping[str, list[Case]]:
    out: dict[str, list[Case]] = {}
    for case in cases:
        out.setdefault(case.op, []).append(case)
    return out
