"""Benchmarks of bench-suite's cases for asv (``ops.py``) and pytest-benchmark (``test_cases.py``).

Both are thin: the classes and the parametrization are generated from ``bench_suite.core.cases``
by ``bench_suite.frontends.asv_adapter`` and ``bench_suite.frontends.pytest_plugin``. See docs/frontends.md.
"""
