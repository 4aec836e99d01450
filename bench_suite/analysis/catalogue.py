"""The GPU datasheet catalogue: what NVIDIA's datasheets say each model can do.

The figures live in ``bench_suite/data/gpus.json`` (one entry per model, with the datasheet
or whitepaper each comes from); this module reads them once, on import, into
:data:`CATALOGUE`, and finds a GPU in it by the name torch reports (:func:`lookup_gpu`).
:func:`datasheet_peaks` turns an entry into the ``datasheet`` peaks a report holds a GPU to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from bench_suite.store.peaks import Peak

CATALOGUE_FILE = "gpus.json"
CATALOGUE_SCHEMA = "bench-suite/gpu-catalogue"


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU model: dense (no structured sparsity), boost clock.

    ``flops`` per suite dtype: float64 is the FP64 *tensor core* figure where the card has one
    (cuBLAS DGEMM uses them), float32 the plain FP32 (CUDA core) figure, tf32/float16/bfloat16
    the tensor-core figures with FP32 accumulation (what cuBLAS uses for torch matmuls).
    """

    key: str
    title: str
    names: tuple[str, ...]  # names torch.cuda.get_device_name reports, matched exactly
    flops: Mapping[str, float]  # dtype -> FLOP/s
    bytes_per_s: float
    source: str  # URL of the datasheet or whitepaper
    require: tuple[str, ...] = ()  # fuzzy match: all of these tokens ...
    forbid: tuple[str, ...] = ()  # ... and none of these
    note: str = ""


#: TFLOP/s, as the file gives the rates.
_T = 1e12


def _spec(entry: Mapping[str, Any]) -> GpuSpec:
    return GpuSpec(
        key=entry["key"], title=entry["title"], names=tuple(entry["names"]),
        flops={dtype: tflops * _T for dtype, tflops in entry["tflops"].items()},
        bytes_per_s=entry["bytes_per_s"], source=entry["source"],
        require=tuple(entry.get("require", ())), forbid=tuple(entry.get("forbid", ())),
        note=entry.get("note", ""))


def load_catalogue() -> tuple[GpuSpec, ...]:
    """The packaged catalogue (``bench_suite/data/gpus.json``), in its order: the first fuzzy
    match wins."""
    text = resources.files("bench_suite").joinpath("data", CATALOGUE_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("schema") != CATALOGUE_SCHEMA or data.get("version") != 1:
        raise ValueError(f"bench_suite/data/{CATALOGUE_FILE}: not a {CATALOGUE_SCHEMA} version 1 file")
    return tuple(_spec(entry) for entry in data["gpus"])


#: Datasheet peaks. Sparse figures in the datasheets are halved to the dense ones there.
CATALOGUE: tuple[GpuSpec, ...] = load_catalogue()


def _tokens(name: str) -> set[str]:
    """``"NVIDIA A100-SXM4-80GB"`` -> {"nvidia", "a100", "sxm4", "80gb"}: whole words only, so
    that "sxm2" does not count as "sxm" nor "l40s" as "l4"."""
    return set(re.findall(r"[a-z0-9]+", name.lower()))


@dataclass(frozen=True)
class GpuMatch:
    spec: GpuSpec
    how: str  # "exact" | "fuzzy"


def lookup_gpu(name: str) -> GpuMatch | None:
    """The catalogue entry for the GPU name torch reports: an exact (case-insensitive) match
    of a known name first, else the first entry whose required tokens are all in the name and
    forbidden ones are not (``"H100 SXM5 94GB"`` -> H100 SXM). None for an unknown GPU."""
    wanted = " ".join(name.lower().split())
    if not wanted:
        return None
    for spec in CATALOGUE:
        if any(wanted == " ".join(n.lower().split()) for n in spec.names):
            return GpuMatch(spec, "exact")
    tokens = _tokens(name)
    for spec in CATALOGUE:
        # "sxm2" must not satisfy "sxm"; tokens compare whole, except memory sizes
        if all(t in tokens for t in spec.require) and not any(t in tokens for t in spec.forbid):
            return GpuMatch(spec, "fuzzy")
    return None


def datasheet_peaks(name: str, device: str = "cuda:0") -> list[Peak]:
    """Datasheet peaks of a GPU by its reported name, one per dtype it lists (empty: unknown)."""
    match = lookup_gpu(name)
    if match is None:
        return []
    spec = match.spec
    note = f"{spec.title} datasheet ({match.how} match of {name!r}): {spec.source}"
    if spec.note:
        note += f"; {spec.note}"
    return [Peak(device, dtype, flops, spec.bytes_per_s, "datasheet", note, device_name=name,
                 details={"catalogue_key": spec.key, "match": match.how})
            for dtype, flops in spec.flops.items()]
