"""Benchmarks of bench-suite's cases for asv (``ops.py``) and pytest-benchmark (``test_cases.py``).

Both are thin: the classes and the parametrization are generated from ``bench_suite.cases``
by ``bench_suite.asv_adapter`` and ``bench_suite.pytest_plugin``. See docs/frontends.md.
"""
