"""pytest-benchmark front end: suite cases as parameters of the ``benchmark`` fixture.

Registered through the ``pytest11`` entry point ``bench_suite`` (disable it with
``-p no:bench_suite``). It is inert until a test asks for the ``suite_case`` fixture, as
``benchmarks/test_cases.py`` does::

    def test_case(suite_case, benchmark):
        from bench_suite.frontends.pytest_plugin import time_case

        time_case(benchmark, suite_case)

(``time_case`` is ``benchmark(suite_case.call)`` for every case but a training step, whose
weights must be restored before every call: see :func:`time_case`.)

Then, and only then:

* the test is parametrized by the cases of a grid (``--suite-grid``, default ``ci``, the same
  grid asv uses; ``--suite-ops``/``--suite-backends``/... filter it as the CLI does), with
  the case ids shared with the CLI and asv as the pytest ids;
* ``suite_case`` prepares and verifies the case through :mod:`bench_suite.measure.harness` (the
  runner's backends, inputs and reference; skip if unavailable here, fail on a wrong result),
  applies its thread count for the test, and warms the op up before pytest-benchmark
  calibrates its rounds from the first call;
* CUDA cases are timed with a host clock that synchronizes the device first
  (:func:`bench_suite.measure.harness.synchronized_perf_counter`), through the ``benchmark`` marker;
* the JSON's ``machine_info`` gains a ``bench_suite`` entry (GPU, library versions, thread
  counts) through pytest-benchmark's ``pytest_benchmark_update_machine_info`` hook.

Under pytest-xdist, pytest-benchmark disables timing; the cases then run once, verified, and
nothing is timed. Run benchmarks with ``-p no:xdist``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench_suite.core import cases as cases_mod
from bench_suite.core import grid
from bench_suite.core.errors import BenchSuiteError

#: Seconds of warm-up before pytest-benchmark's calibration (which sizes rounds from the
#: first call it times: a cold first call makes it stop far short of --benchmark-max-time).
WARMUP_S = 0.05

_USED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bench-suite", "bench-suite cases (for tests using the suite_case fixture)")
    group.addoption("--suite-grid", default=grid.DEFAULT_GRID,
                    help=f"case grid: {', '.join(grid.GRIDS)} (default: {grid.DEFAULT_GRID})")
    group.addoption("--suite-ops", help=f"comma-separated: {', '.join(cases_mod.OPS)}")
    group.addoption("--suite-backends", help="comma-separated: numpy, torch-cpu, torch-cuda[:N]")
    group.addoption("--suite-dtypes", help=f"comma-separated: {', '.join(cases_mod.DTYPES)}")
    group.addoption("--suite-sizes", help="comma-separated: N, MxKxN (matmul) or MxN (hadamard)")
    group.addoption("--suite-threads", help="comma-separated thread counts or 'all'")
    group.addoption("--suite-grad-modes", help="for torch forward ops: no_grad, grad")
    for axis in cases_mod.VARIANT_AXES.values():
        group.addoption(f"--suite-{axis.field.replace('_', '-')}", dest=f"suite_{axis.field}",
                        help=f"{axis.title}: {', '.join(axis.values)}")


_FILTERS = tuple(f"suite_{axis}" for axis in cases_mod.FILTER_AXES)


def pytest_configure(config: pytest.Config) -> None:
    # Only when --suite-* options are given: a bad value is one usage line, before collection.
    if config.getoption("suite_grid") != grid.DEFAULT_GRID or any(config.getoption(o) for o in _FILTERS):
        try:
            suite_cases(config)
        except BenchSuiteError as exc:
            raise pytest.UsageError(f"bench-suite: {exc}") from None


def suite_cases(config: pytest.Config) -> list[cases_mod.Case]:
    """The cases selected by the ``--suite-*`` options (a UsageError for a bad value)."""
    opt = config.getoption
    filters = cases_mod.parse_filters({axis: opt(f"suite_{axis}") for axis in cases_mod.FILTER_AXES})
    sweep = grid.grid_sweep(opt("suite_grid")).with_filters(**filters)
    return sweep.expand()


def _param(case: cases_mod.Case) -> Any:
    from bench_suite.measure.harness import synchronized_perf_counter

    mark = (pytest.mark.benchmark(group=case.op, timer=synchronized_perf_counter)
            if cases_mod.is_cuda_backend(case.backend) else pytest.mark.benchmark(group=case.op))
    # The value is the id string (JSON-safe in pytest-benchmark's "params"), not the Case.
    return pytest.param(case.id, id=case.id, marks=mark)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "suite_case" not in metafunc.fixturenames:
        return
    try:
        selected = suite_cases(metafunc.config)
    except BenchSuiteError as exc:
        raise pytest.UsageError(f"bench-suite: {exc}") from None
    metafunc.config.stash[_USED] = True
    metafunc.parametrize("suite_case", [_param(c) for c in selected], indirect=True)


@pytest.fixture
def suite_case(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The parametrized case, prepared, verified and warmed up, its threads in force.

    pytest-benchmark's ``benchmark`` fixture is taken only once the case is verified: a case
    that is skipped or wrong never creates it (it would warn that it went unused). List
    ``suite_case`` before ``benchmark`` in the test's arguments for the same reason.
    """
    from bench_suite.core import ops
    from bench_suite.measure import harness

    param = getattr(request, "param", None)
    if param is None:
        raise pytest.UsageError("suite_case is parametrized by bench_suite's plugin; do not call it directly")
    case = cases_mod.parse_case_id(param)
    problem = skip = ""
    try:
        ready = harness.ready(case)
    except harness.Unavailable as exc:
        skip = f"{case.id}: {exc}"
    except harness.WrongResult as exc:
        problem = str(exc)
    # outside the except blocks, so the report is the one line, not a chain of exceptions
    if skip:
        pytest.skip(skip)
    if problem:
        pytest.fail(problem, pytrace=False)  # a wrong result is never timed: an error at setup
    harness.set_synchronize(ready.synchronize)
    try:
        benchmark = request.getfixturevalue("benchmark")
        benchmark.extra_info.update({
            "case_id": case.id,
            "op": case.op,
            "backend": case.backend,
            "dtype": case.dtype,
            "shape": list(case.shape),
            "threads": ready.threads,
            "grad_mode": case.grad_mode,
            "flops": ops.flops(case),
            "bytes": ops.bytes_moved(case),
            "rel_error": ready.rel_error,
            "tolerance": ready.tolerance,
            "check": ready.check,
            "device_name": ready.device_name,
        })
        if not getattr(benchmark, "disabled", False):
            t0 = time.perf_counter()
            calls = ready.warm_up(WARMUP_S)
            if ready.reset is not None:  # time_case goes through pedantic: size its rounds
                per_call = (time.perf_counter() - t0) / calls
                benchmark.extra_info["pedantic_rounds"] = _pedantic_rounds(request.config, per_call)
                benchmark.extra_info["timed"] = "one call per round, its state restored before each"
        yield ready
        _add_rates(benchmark, case)
        if cases_mod.is_cuda_backend(case.backend):  # inputs, outputs and workspace, at peak
            benchmark.extra_info["peak_mem_bytes"] = ready.peak_memory_bytes()
    finally:
        harness.set_synchronize(None)
        ready.close()


#: A training step is timed through ``benchmark.pedantic`` (one call per round, its weights
#: restored before each): at most this many rounds.
MAX_PEDANTIC_ROUNDS = 100_000


def time_case(benchmark: Any, suite_case: Any) -> Any:
    """Time the prepared case with pytest-benchmark's ``benchmark`` fixture.

    Most cases: ``benchmark(suite_case.call)``. A case with a ``reset`` (a training step that
    updates its weights) goes through ``benchmark.pedantic`` with the reset as its per-round
    ``setup`` (outside the timed region) and one call per round; rounds fill
    ``--benchmark-max-time`` (at least ``--benchmark-min-rounds``), sized from the warm-up.
    """
    reset = getattr(suite_case, "reset", None)
    if reset is None:
        return benchmark(suite_case.call)
    rounds = benchmark.extra_info.get("pedantic_rounds") or MIN_PEDANTIC_ROUNDS
    return benchmark.pedantic(suite_case.call, setup=reset, rounds=rounds, iterations=1,
                              warmup_rounds=1)


MIN_PEDANTIC_ROUNDS = 5


def _pedantic_rounds(config: pytest.Config, per_call_s: float) -> int:
    """Rounds that fill ``--benchmark-max-time``, at least ``--benchmark-min-rounds``."""
    def option(name: str, default: float) -> float:
        try:
            value = config.getoption(name)
        except ValueError:  # pytest-benchmark not loaded
            return default
        return float(value) if isinstance(value, (int, float)) and value > 0 else default

    max_time = option("benchmark_max_time", 1.0)
    least = int(option("benchmark_min_rounds", MIN_PEDANTIC_ROUNDS))
    return max(least, min(MAX_PEDANTIC_ROUNDS, int(max_time / max(per_call_s, 1e-9))))


def _add_rates(benchmark: Any, case: cases_mod.Case) -> None:
    """GFLOP/s and GB/s of the median, beside pytest-benchmark's own statistics."""
    from bench_suite.core import ops

    metadata = getattr(benchmark, "stats", None)
    median = getattr(getattr(metadata, "stats", None), "median", None)
    if isinstance(median, float) and median > 0:
        benchmark.extra_info["gflops"] = ops.flops(case) / median / 1e9
        benchmark.extra_info["gbps"] = ops.bytes_moved(case) / median / 1e9


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Add what the numbers depend on: GPUs, library versions, thread counts (only in a
    session that ran suite cases)."""
    if not config.stash.get(_USED, False):
        return
    machine_info["bench_suite"] = machine_record()


def machine_record() -> dict[str, Any]:
    """The suite's environment record, as in its run files (torch's details only where the
    cases imported it), JSON-safe."""
    from bench_suite.env import collect as env_mod
    from bench_suite.store.results import json_safe

    try:
        record = env_mod.collect(None, torch=None)
    except BenchSuiteError:  # a host name that is not a valid machine name
        record = env_mod.collect("unknown", torch=None)
    return json_safe(record)
