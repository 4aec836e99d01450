"""pytest-benchmark front end: every case of the grid, timed by the ``benchmark`` fixture.

The parametrization, preparation, verification, warm-up and timer come from bench_suite's
pytest plugin (``bench_suite.frontends.pytest_plugin``, registered as ``bench_suite``)::

    pytest benchmarks/ -p no:xdist --benchmark-json out.json
    pytest benchmarks/ -p no:xdist --suite-grid default --suite-backends torch-cuda

The normal test run (``pytest``, testpaths = tests) never collects this file. asv imports it
while discovering benchmarks and finds nothing to run here: no pytest import, no asv names.
"""


def test_case(suite_case, benchmark):
    # suite_case first: a case that is skipped or wrong then never creates the benchmark
    from bench_suite.frontends.pytest_plugin import time_case  # here: asv imports this file too

    time_case(benchmark, suite_case)  # benchmark(suite_case.call), or pedantic with a reset
