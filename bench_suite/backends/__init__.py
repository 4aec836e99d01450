"""Backends by name. ``get_backend`` is the one way the runner and the front ends get one."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from bench_suite.backends.base import Availability, Backend, Phase, Prepared
from bench_suite.core.cases import ALL_CUDA, is_cuda_backend, validate_backend
from bench_suite.core.errors import UsageError

__all__ = ["DEVICE_COUNTERS", "FACTORIES", "Availability", "Backend", "Phase", "Prepared", "device_count",
           "expand_devices", "get_backend"]


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

#: Testing hook: a comma-separated list of ``module:function``; each function is called once
#: with FACTORIES before the first backend is made. Spawned workers (``--isolate``) inherit
#: the environment, so tests use it to inject failing backends into worker processes.
PLUGINS_ENV = "BENCH_SUITE_BACKEND_PLUGINS"
_loaded_plugins: set[str] = set()


def load_plugins() -> None:
    """Call the functions named by ``$BENCH_SUITE_BACKEND_PLUGINS`` (each once per process)."""
    for spec in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        if spec in _loaded_plugins:
            continue
        module, _, func = spec.partition(":")
        try:
            register = getattr(importlib.import_module(module), func or "register")
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"{PLUGINS_ENV}: cannot load {spec!r}: {exc}") from None
        register(FACTORIES)
        _loaded_plugins.add(spec)


def get_backend(name: str) -> Backend:
    """A backend object for ``name`` (cheap: torch is imported only when it is used)."""
    validate_backend(name)
    load_plugins()
    return FACTORIES["torch-cuda" if is_cuda_backend(name) else name](name)


# --- every device of a node -----------------------------------------------------------------


def _torch_cuda_count() -> int:
    from bench_suite.backends.torch_backend import torch_installed

    if not torch_installed():
        return 0
    import torch

    # counts the visible devices (CUDA_VISIBLE_DEVICES) without creating a context on any
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


#: family -> how many devices of it this process sees. Tests and plugins (a fake GPU node)
#: replace the entry, as they replace FACTORIES.
DEVICE_COUNTERS: dict[str, Callable[[], int]] = {"torch-cuda": _torch_cuda_count}


def device_count(family: str = "torch-cuda") -> int:
    """Visible devices of ``family`` (CUDA: those ``CUDA_VISIBLE_DEVICES`` leaves)."""
    load_plugins()
    return DEVICE_COUNTERS[family]()


def expand_devices(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``torch-cuda:all`` -> ``torch-cuda:0`` ... ``torch-cuda:N-1``, one per visible device,
    each with its own cases; other names unchanged. With no GPU visible it stays one
    ``torch-cuda``, whose cases are recorded as skipped ("no CUDA"), never silently dropped."""
    out: list[str] = []
    for name in names:
        if name == ALL_CUDA:
            count = device_count("torch-cuda")
            out += [f"torch-cuda:{i}" for i in range(count)] if count else ["torch-cuda"]
        else:
            out.append(validate_backend(name))
    return tuple(dict.fromkeys(out))
