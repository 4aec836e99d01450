"""What machine and software the numbers came from.

Every run carries this record, and comparisons say loudly when two runs differ in it. It is
collected once per run, before timing starts; nothing here is timed. It is saved as a plain
dict; readers see it typed through ``store.env_record.EnvRecord`` (whose fields follow what
:func:`collect` writes: keep the two in step).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench_suite.core.cases import cpu_count
from bench_suite.env import system
from bench_suite.env.nvml import nvml_info, nvml_link

#: Environment variables that change what a benchmark measures.
ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
    "OMP_PROC_BIND", "OMP_PLACES", "GOMP_SPINCOUNT", "KMP_AFFINITY", "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
)
PACKAGES = ("bench-suite", "numpy", "torch", "pandas", "scipy", "threadpoolctl", "nvidia-ml-py")


#: What a machine name may be: it becomes a folder under ``results/``.
MACHINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def machine_name(override: str | None = None) -> str:
    """The name results are filed under: ``--machine`` (or ``$BENCH_SUITE_MACHINE``), else
    the host name.

    A name the user gives must be valid (a clear error otherwise). The host name is not the
    user's choice: one that is not a valid name (``(none)`` in some microVMs, a name with
    spaces) is sanitized instead (:func:`sanitize_machine_name`).
    """
    from bench_suite.core.errors import UsageError

    if override is not None:
        name = override.strip()
    else:
        name = os.environ.get("BENCH_SUITE_MACHINE", "").strip()
        if not name:
            return sanitize_machine_name(socket.gethostname())
    if not name or not MACHINE_RE.fullmatch(name):
        raise UsageError(
            f"invalid machine name {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-'"
        )
    return name


def sanitize_machine_name(text: str | None) -> str:
    """A valid machine name made from ``text`` (a host name): runs of other characters become
    one '-', leading and trailing punctuation goes, at most 100 characters; "unknown" when
    nothing is left (``"(none)"`` -> ``"none"``, ``""`` -> ``"unknown"``)."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", text or "")
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:100].rstrip("-._+")
    return name if MACHINE_RE.fullmatch(name) else "unknown"


def collect(machine: str | None = None, torch: bool | None = None) -> dict[str, Any]:
    """The environment record. ``torch``: whether to import torch for its details (None:
    only if it is already imported)."""
    env: dict[str, Any] = {
        "machine": machine_name(machine),
        "hostname": socket.gethostname(),
        "os": {"platform": platform.platform(), "system": platform.system(),
               "release": platform.release(), "arch": platform.machine()},
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "cpu": cpu_info(),
        "memory": memory_info(),
        "packages": package_versions(),
        "blas": blas_info(),
        "env_vars": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "git": git_info(),
    }
    if torch or (torch is None and "torch" in sys.modules):
        env["torch"] = torch_info()
    return env


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info() -> dict[str, Any]:
    info = system.cpuinfo()
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                        "amx_tile", "amx_bf16", "neon", "asimd", "sve") if f in info.flags]
    return {
        "model": info.model or platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": info.physical_cores,
        "usable_cores": cpu_count(),
        "mhz": info.mhz,
        "simd": simd,
        "governor": system.scaling_governor(0),
    }


def memory_info() -> dict[str, Any]:
    fields = system.meminfo()
    return {name: fields[key] for key, name in (("MemTotal", "total_bytes"),
                                                ("MemAvailable", "available_bytes")) if key in fields}


def blas_info() -> list[dict[str, Any]]:
    """The BLAS/OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


#: The commit of a copy of the repository that has no ``.git`` (a tree sent to a GPU machine):
#: ``BENCH_SUITE_COMMIT=$(git rev-parse HEAD)`` in the command that runs it.
COMMIT_ENV = "BENCH_SUITE_COMMIT"
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{7,64}")


def git_info() -> dict[str, Any]:
    """Commit of the checkout bench_suite runs from, else of the current folder, else the one
    given in ``$BENCH_SUITE_COMMIT`` (a copy without ``.git``; recorded with
    ``"source": "BENCH_SUITE_COMMIT"``, since nothing here can say whether it was dirty)."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            break  # no git at all
        if commit.returncode == 0:
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where, capture_output=True, text=True, timeout=10,
            )
            branch = subprocess.run(
                ["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=where, capture_output=True,
                text=True, timeout=5,
            )
            return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()),
                    "branch": branch.stdout.strip()}
    return commit_from_env()


def commit_from_env() -> dict[str, Any]:
    """``$BENCH_SUITE_COMMIT`` as a git record; a value that is not a commit hash is kept
    apart (``given``), never recorded as the commit."""
    given = os.environ.get(COMMIT_ENV, "").strip()
    if not given:
        return {}
    if _COMMIT_RE.fullmatch(given):
        return {"commit": given.lower(), "dirty": None, "source": COMMIT_ENV}
    return {"source": COMMIT_ENV, "given": given[:100],
            "problem": "not a commit hash (7-64 hexadecimal digits)"}


def torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"installed": False}
    info: dict[str, Any] = {
        "installed": True,
        "version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "parallel": torch.__config__.parallel_info().splitlines()[-1].strip(),
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    info.update(precision_info(torch))
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpus"] = [gpu_info(i) for i in range(torch.cuda.device_count())]
    return info


def _safe(read: Any) -> Any:
    """``read()``, or None where it raises: torch >= 2.9 raises on reading a legacy TF32 flag
    (``allow_tf32``, ``get_float32_matmul_precision``) once the new API has set it."""
    try:
        value = read()
    except Exception:  # RuntimeError from torch's mixed-API check, AttributeError in old torch
        return None
    return value if isinstance(value, (bool, str, int, float)) or value is None else str(value)


def precision_info(torch: Any) -> dict[str, Any]:
    """How float32 matmuls and half-precision reductions are computed, as torch is set now.

    The new API (torch >= 2.9: ``torch.backends.cuda.matmul.fp32_precision``, "ieee" | "tf32" |
    "none" = inherit) is read first; the legacy flags only where it says nothing, and never so
    that a read can crash. ``tf32_matmul`` is the outcome: whether float32 matmuls on CUDA may
    use TF32 tensor cores (None where it cannot be told).
    """
    matmul = torch.backends.cuda.matmul
    cudnn = torch.backends.cudnn
    out: dict[str, Any] = {
        "fp32_precision": _safe(lambda: torch.backends.fp32_precision),
        "matmul_fp32_precision": _safe(lambda: matmul.fp32_precision),
        "cudnn_conv_fp32_precision": _safe(lambda: cudnn.conv.fp32_precision),
        "allow_tf32_matmul": _safe(lambda: matmul.allow_tf32),
        "allow_tf32_cudnn": _safe(lambda: cudnn.allow_tf32),
        "float32_matmul_precision": _safe(torch.get_float32_matmul_precision),
        "allow_fp16_reduced_precision_reduction":
            _safe(lambda: matmul.allow_fp16_reduced_precision_reduction),
        "allow_bf16_reduced_precision_reduction":
            _safe(lambda: matmul.allow_bf16_reduced_precision_reduction),
        "allow_fp16_accumulation": _safe(lambda: matmul.allow_fp16_accumulation),
    }
    out["tf32_matmul"] = tf32_matmul_enabled(out)
    return out


def tf32_matmul_enabled(info: Mapping[str, Any]) -> bool | None:
    """Whether float32 CUDA matmuls may use TF32, from a :func:`precision_info` record (or a
    run's ``env["torch"]``, older files included): the new API's matmul setting, else its
    global one, else the legacy flag and matmul precision. None where nothing says."""
    for key in ("matmul_fp32_precision", "fp32_precision"):
        value = info.get(key)
        if value == "tf32":
            return True
        if value == "ieee":
            return False
    legacy = info.get("allow_tf32_matmul")
    precision = info.get("float32_matmul_precision")
    if legacy is True or precision in ("high", "medium"):
        return True
    if legacy is False or precision == "highest":
        return False
    return None


def gpu_info(index: int) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(index)
    out: dict[str, Any] = {
        "index": index,
        "name": props.name,
        "total_memory_bytes": int(props.total_memory),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "l2_cache_bytes": int(getattr(props, "L2_cache_size", 0) or 0) or None,
    }
    out.update(nvml_info(index))
    bus = None
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        bus = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    out["link"] = link_info(index, bus, props.name)
    return out


def link_info(index: int, bus_id: str | None = None, name: str = "", nvml: Any = None,
              sysfs: str = system.PCI_DEVICES) -> dict[str, Any]:
    """How a GPU reaches host memory: ``{"kind": "nvlink-c2c", "source"}`` or ``{"kind":
    "pcie", "generation", "width", "current_generation", "current_width", "source"}`` (the
    peak is the link's maximum: an idle link trains down to save power). From NVML where
    nvidia-ml-py and a driver are present, else from sysfs by the card's PCI bus id, else
    (NVLink-C2C only) from the device's name; ``{}`` when none says."""
    found = nvml_link(index, bus_id, nvml)
    if not found and bus_id:
        found = system.pcie_link(Path(sysfs) / bus_id.lower())
    if not found and any(t in name.upper() for t in ("GH200", "GB200", "GB300")):
        found = {"kind": "nvlink-c2c", "source": "device name"}
    return found

