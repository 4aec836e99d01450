"""Typed, lenient views of a run's environment (``Run.env``) and of its place in a launch
(``Run.config["distributed"]``).

``env.collect.collect`` writes the environment as a plain dict, and files from other versions,
machines and tools (asv, pytest-benchmark) hold other shapes of it. These records read any of
them without an error: a field missing or of the wrong type is ``None`` (an empty tuple or
dict for collections), a list element or dict entry of the wrong type is dropped, and a
number where text is expected (a version written as ``3``) becomes its text.

    rec = EnvRecord.of(run.env)
    rec.hostname                      # str | None
    rec.cpu.model, rec.cpu.usable_cores, rec.cpu.mhz
    rec.memory.total_bytes
    rec.os.platform, rec.os.release
    rec.python.version
    rec.packages.get("torch")         # dict[str, str | None]: package -> version
    rec.blas                          # tuple[BlasRecord, ...]: internal_api, version, num_threads...
    rec.env_vars                      # dict[str, str]
    rec.git.commit, rec.git.dirty
    rec.torch.version, rec.torch.cuda_build, rec.torch.cudnn, rec.torch.num_threads, rec.torch.tf32
    rec.torch.gpus                    # tuple[GpuRecord, ...]: name, total_memory_bytes, driver...
    rec.gpus                          # the same, shorter

    LaunchRecord.of(run.config).rank  # rank, local_rank, world_size, host... or None
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from bench_suite.env.collect import tf32_matmul_enabled
from bench_suite.store.codec import lenient


class _Record(Struct, frozen=True, kw_only=True):
    """Every field has a default: a record builds from whatever a file holds."""

    @classmethod
    def of(cls, data: Any) -> Any:
        """The record of ``data`` (any JSON value), leniently (see the module)."""
        return lenient(cls, data)


class OsRecord(_Record, frozen=True, kw_only=True):
    platform: str | None = None
    system: str | None = None
    release: str | None = None
    arch: str | None = None


class PythonRecord(_Record, frozen=True, kw_only=True):
    version: str | None = None
    implementation: str | None = None
    executable: str | None = None


class CpuRecord(_Record, frozen=True, kw_only=True):
    model: str | None = None
    logical_cores: int | None = None
    physical_cores: int | None = None
    usable_cores: int | None = None
    mhz: float | None = None
    simd: tuple[str, ...] = ()
    governor: str | None = None


class MemoryRecord(_Record, frozen=True, kw_only=True):
    total_bytes: int | float | None = None
    available_bytes: int | float | None = None


class BlasRecord(_Record, frozen=True, kw_only=True):
    """One BLAS/OpenMP library as threadpoolctl saw it."""

    user_api: str | None = None
    internal_api: str | None = None
    prefix: str | None = None
    version: str | None = None
    num_threads: int | None = None
    threading_layer: str | None = None
    architecture: str | None = None
    filepath: str | None = None


class GitRecord(_Record, frozen=True, kw_only=True):
    commit: str | None = None
    dirty: bool | None = None
    branch: str | None = None
    source: str | None = None  # "BENCH_SUITE_COMMIT": given by the environment
    given: str | None = None  # a BENCH_SUITE_COMMIT that is not a hash
    problem: str | None = None


class GpuRecord(_Record, frozen=True, kw_only=True):
    index: int | None = None
    name: str | None = None
    total_memory_bytes: int | float | None = None
    compute_capability: str | None = None
    multiprocessors: int | None = None
    l2_cache_bytes: int | None = None
    driver: str | None = None
    max_sm_clock_mhz: float | None = None
    max_mem_clock_mhz: float | None = None
    power_limit_w: float | None = None
    pci_bus_id: str | None = None
    link: dict[str, Any] = {}


class TorchRecord(_Record, frozen=True, kw_only=True):
    installed: bool | None = None
    version: str | None = None
    num_threads: int | None = None
    num_interop_threads: int | None = None
    mkl: bool | None = None
    mkldnn: bool | None = None
    parallel: str | None = None
    cuda_build: str | None = None
    cuda_available: bool | None = None
    cudnn: int | None = None
    gpus: tuple[GpuRecord, ...] = ()
    # how float32 matmuls are computed (env.collect.precision_info)
    fp32_precision: str | None = None
    matmul_fp32_precision: str | None = None
    cudnn_conv_fp32_precision: str | None = None
    allow_tf32_matmul: bool | None = None
    allow_tf32_cudnn: bool | None = None
    float32_matmul_precision: str | None = None
    tf32_matmul: bool | None = None

    @property
    def tf32(self) -> bool | None:
        """Whether float32 CUDA matmuls may use TF32 (None: nothing says), read as
        ``env.collect.tf32_matmul_enabled`` reads it from files of any version."""
        return tf32_matmul_enabled({
            "matmul_fp32_precision": self.matmul_fp32_precision, "fp32_precision": self.fp32_precision,
            "allow_tf32_matmul": self.allow_tf32_matmul,
            "float32_matmul_precision": self.float32_matmul_precision,
        })


class EnvRecord(_Record, frozen=True, kw_only=True):
    """A run's environment (``env.collect.collect``), typed; see the module for its use."""

    machine: str | None = None
    hostname: str | None = None
    os: OsRecord = OsRecord()
    python: PythonRecord = PythonRecord()
    cpu: CpuRecord = CpuRecord()
    memory: MemoryRecord = MemoryRecord()
    packages: dict[str, str | None] = {}
    blas: tuple[BlasRecord, ...] = ()
    env_vars: dict[str, str] = {}
    git: GitRecord = GitRecord()
    torch: TorchRecord = TorchRecord()

    @classmethod
    def of(cls, data: Any) -> EnvRecord:
        return lenient(cls, data)

    @property
    def gpus(self) -> tuple[GpuRecord, ...]:
        return self.torch.gpus


class LaunchRecord(_Record, frozen=True, kw_only=True):
    """A run's place in a torchrun/srun/``--concurrent`` launch: ``config["distributed"]``
    (``measure.launch.LaunchContext.to_config``). All None for a run that was not launched."""

    rank: int | None = None
    world_size: int | None = None
    local_rank: int | None = None
    local_world_size: int | None = None
    node_rank: int | None = None
    launcher: str | None = None
    host: str | None = None
    cpu_share: Any = None

    @classmethod
    def of(cls, config: Any) -> LaunchRecord:
        """From a run's whole ``config``."""
        dist = config.get("distributed") if isinstance(config, Mapping) else None
        return lenient(cls, dist)

    @property
    def launched(self) -> bool:
        """The run was one rank of a launch (it records its rank)."""
        return self.rank is not None
