"""asv benchmarks: one class per op (``Matmul``, ``Hadamard``, ``MatmulBackward``, ...),
generated from bench_suite's cases by ``bench_suite.frontends.asv_adapter``; no logic lives here.

The grid is chosen by ``$BENCH_SUITE_ASV_PRESET`` (default ``ci``) and
``$BENCH_SUITE_ASV_BACKENDS``; see docs/frontends.md.
"""

from bench_suite.frontends.asv_adapter import benchmark_classes as _benchmark_classes

# asv scans a module's public names: only the generated classes are public here.
globals().update(_benchmark_classes(__name__))
