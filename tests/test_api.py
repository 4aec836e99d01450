"""The small public API, pinned."""

from __future__ import annotations

import bench_suite


def test_public_api() -> None:
    assert sorted(bench_suite.__all__) == sorted(
        ["BenchSuiteError", "Case", "Measurement", "Run", "load_results", "load_runs"]
    )
    for name in bench_suite.__all__:
        assert hasattr(bench_suite, name)


def test_importing_the_package_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, bench_suite; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
