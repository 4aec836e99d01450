"""Backends by name. ``get_backend`` is the one way the runner and the front ends get one."""

from __future__ import annotations

from collections.abc import Callable

from bench_suite.backends.base import Availability, Backend, Prepared
from bench_suite.cases import is_cuda_backend, validate_backend

__all__ = ["Availability", "Backend", "Prepared", "get_backend", "FACTORIES"]


def _numpy() -> Backend:
    from bench_suite.backends.numpy_backend import NumpyBackend

    return NumpyBackend()


def _torch_cpu() -> Backend:
    from bench_suite.backends.torch_backend import TorchCpuBackend

    return TorchCpuBackend()


def _torch_cuda(name: str) -> Backend:
    from bench_suite.backends.torch_backend import TorchCudaBackend

    return TorchCudaBackend(name)


#: name -> factory. Tests replace entries to inject test doubles (a slowed or failing backend).
FACTORIES: dict[str, Callable[[str], Backend]] = {
    "numpy": lambda _name: _numpy(),
    "torch-cpu": lambda _name: _torch_cpu(),
    "torch-cuda": _torch_cuda,
}

def get_backend(name: str) -> Backend:
    """A backend object for ``name`` (cheap: torch is imported only when it is used)."""
    validate_backend(name)
    return FACTORIES["torch-cuda" if is_cuda_backend(name) else name](name)
