"""What machine and software the numbers came from.

Every run carries this record, and comparisons say loudly when two runs differ in it. It is
collected once per run, before timing starts; nothing here is timed.
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

from bench_suite.cases import cpu_count

#: Environment variables that change what a benchmark measures.
ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
    "OMP_PROC_BIND", "OMP_PLACES", "GOMP_SPINCOUNT", "KMP_AFFINITY", "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
)
PACKAGES = ("bench-suite", "numpy", "torch", "pandas", "scipy", "threadpoolctl", "nvidia-ml-py")


def machine_name(override: str | None = None) -> str:
    """The name results are filed under: ``--machine``, else the host name."""
    if override is not None:
        name = override.strip()
    else:
        name = os.environ.get("BENCH_SUITE_MACHINE", "") or socket.gethostname() or "unknown"
    from bench_suite.errors import UsageError

    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", name):
        raise UsageError(
            f"invalid machine name {name!r}: use 1-100 letters, digits, '.', '_', '+' or '-'"
        )
    return name


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


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_info() -> dict[str, Any]:
    text = _read("/proc/cpuinfo")
    model, mhz, flags = "", None, set()
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                        "amx_tile", "amx_bf16", "neon", "asimd", "sve") if f in flags]
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip() or None
    return {
        "model": model or platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cores": cpu_count(),
        "mhz": mhz,
        "simd": simd,
        "governor": governor,
    }


def memory_info() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            try:
                out["total_bytes" if key == "MemTotal" else "available_bytes"] = int(value.split()[0]) * 1024
            except (ValueError, IndexError):
                pass
    return out


def blas_info() -> list[dict[str, Any]]:
    """The BLAS/OpenMP libraries loaded in this process, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def git_info() -> dict[str, Any]:
    """Commit of the checkout bench_suite runs from, else of the current folder."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError):
            return {}
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
    return {}


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
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpus"] = [gpu_info(i) for i in range(torch.cuda.device_count())]
    return info


def gpu_info(index: int) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(index)
    out: dict[str, Any] = {
        "index": index,
        "name": props.name,
        "total_memory_bytes": int(props.total_memory),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
    }
    out.update(nvml_info(index))
    bus = None
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        bus = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    out["link"] = link_info(index, bus, props.name)
    return out


#: PCIe transfer rate (GT/s) -> generation, as sysfs writes the speed ("16.0 GT/s PCIe").
_PCIE_GT_S = {"2.5": 1, "5": 2, "5.0": 2, "8": 3, "8.0": 3, "16": 4, "16.0": 4, "32": 5,
              "32.0": 5, "64": 6, "64.0": 6}


def link_info(index: int, bus_id: str | None = None, name: str = "", nvml: Any = None,
              sysfs: str = "/sys/bus/pci/devices") -> dict[str, Any]:
    """How a GPU reaches host memory: ``{"kind": "nvlink-c2c", "source"}`` or ``{"kind":
    "pcie", "generation", "width", "current_generation", "current_width", "source"}`` (the
    peak is the link's maximum: an idle link trains down to save power). From NVML where
    nvidia-ml-py and a driver are present, else from sysfs by the card's PCI bus id, else
    (NVLink-C2C only) from the device's name; ``{}`` when none says."""
    found = _nvml_link(index, bus_id, nvml)
    if not found and bus_id:
        found = _sysfs_link(Path(sysfs) / bus_id.lower())
    if not found and any(t in name.upper() for t in ("GH200", "GB200", "GB300")):
        found = {"kind": "nvlink-c2c", "source": "device name"}
    return found


def _nvml_link(index: int, bus_id: str | None, nvml: Any = None) -> dict[str, Any]:
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return {}
    try:
        nvml.nvmlInit()
    except Exception:  # no driver or library: no NVML here
        return {}
    try:
        handle = None
        if bus_id:
            try:
                handle = nvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())
            except Exception:
                handle = None
        if handle is None:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)

        def get(fn: str) -> Any:
            try:
                return getattr(nvml, fn)(handle)
            except Exception:  # a query this driver or card does not support
                return None

        c2c = get("nvmlDeviceGetC2cModeInfoV")
        if c2c is not None and getattr(c2c, "isC2cEnabled", 0):
            return {"kind": "nvlink-c2c", "source": "nvml"}
        gen, width = get("nvmlDeviceGetMaxPcieLinkGeneration"), get("nvmlDeviceGetMaxPcieLinkWidth")
        if not (isinstance(gen, int) and isinstance(width, int) and gen > 0 and width > 0):
            return {}
        return {"kind": "pcie", "generation": gen, "width": width,
                "current_generation": get("nvmlDeviceGetCurrPcieLinkGeneration"),
                "current_width": get("nvmlDeviceGetCurrPcieLinkWidth"), "source": "nvml"}
    except Exception:
        return {}
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _sysfs_link(device: Path) -> dict[str, Any]:
    def read(name: str) -> str:
        return _read(str(device / name)).strip()

    def gen(speed: str) -> int | None:
        return _PCIE_GT_S.get(speed.split()[0]) if speed else None

    def width(text: str) -> int | None:
        return int(text) if text.isdigit() and int(text) > 0 else None

    max_gen, max_width = gen(read("max_link_speed")), width(read("max_link_width"))
    if max_gen is None or max_width is None:
        return {}
    return {"kind": "pcie", "generation": max_gen, "width": max_width,
            "current_generation": gen(read("current_link_speed")),
            "current_width": width(read("current_link_width")), "source": "sysfs"}


def nvml_info(index: int) -> dict[str, Any]:
    """Driver version and clocks from NVML, where nvidia-ml-py and a driver are present."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError and library load errors: no NVML here, say nothing
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        out: dict[str, Any] = {"driver": _s(pynvml.nvmlSystemGetDriverVersion())}
        for key, fn in (
            ("max_sm_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            ("max_mem_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
            ("power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000),
            ("pci_bus_id", lambda: _s(pynvml.nvmlDeviceGetPciInfo(handle).busId)),
        ):
            try:
                out[key] = fn()
            except Exception:  # a field this driver or card does not expose
                out[key] = None
        return out
    except Exception:
        return {}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def lookup(record: Any, *keys: str) -> Any:
    """``record[k1][k2]...`` of an environment (or config) read from a file, or None where a
    level is missing or not a mapping: files from other versions and machines vary."""
    for key in keys:
        if not isinstance(record, Mapping):
            return None
        record = record.get(key)
    return record
