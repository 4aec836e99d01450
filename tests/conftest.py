from __future__ import annotations

import functools
import signal

import pytest


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_the_tests() -> None:
    """Tests of Ctrl-C send SIGINT to themselves and to runs they start. A shell that starts
    the test suite in the background (``cmd &`` without job control) hands it SIGINT ignored,
    and every child inherits that: give the suite Python's own handler back."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@functools.cache
def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords and not cuda_available():
            item.add_marker(skip_gpu)
