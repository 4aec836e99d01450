"""Cold-cache timing: a buffer larger than the last-level cache is written before every call,
outside the timed region (the timer's ``before_call`` hook), so each call starts with its
operands out of cache (triton's ``do_bench`` flushes L2 the same way). Warm timing, the
default, repeats the call on cached operands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench_suite.env.system import cpu_cache_bytes
from bench_suite.measure import gpu

#: CPU flush buffer bounds: twice the largest cache, within these.
CPU_FLUSH_MIN_BYTES = 8 << 20
CPU_FLUSH_MAX_BYTES = 256 << 20
#: GPU flush buffer: twice L2, at least this (H100: 50 MB L2 -> 100 MB).
GPU_FLUSH_MIN_BYTES = 64 << 20


def cpu_flusher(nbytes: int | None = None) -> tuple[Callable[[], None], int]:
    """A host flush: writing a buffer twice the last-level cache (bounded) evicts the operands."""
    import numpy as np

    if nbytes is None:
        llc = cpu_cache_bytes() or CPU_FLUSH_MIN_BYTES
        nbytes = min(max(2 * llc, CPU_FLUSH_MIN_BYTES), CPU_FLUSH_MAX_BYTES)
    buf = np.empty(max(nbytes // 8, 1), dtype=np.float64)
    counter = [0.0]

    def flush() -> None:
        counter[0] += 1.0  # a new value each time: no page is left clean and skippable
        buf.fill(counter[0])

    return flush, buf.nbytes


def cuda_l2_bytes(index: int, torch: Any = None) -> int:
    torch = torch or gpu._torch()
    return int(getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 0) or 0)


def cuda_flush_bytes(index: int, nbytes: int | None = None, torch: Any = None) -> int:
    """Bytes of the L2 flush buffer: ``nbytes``, else twice the card's L2, at least
    ``GPU_FLUSH_MIN_BYTES``."""
    return int(nbytes) if nbytes is not None else max(2 * cuda_l2_bytes(index, torch), GPU_FLUSH_MIN_BYTES)


def cuda_flusher(index: int, nbytes: int | None = None, torch: Any = None) -> tuple[Callable[[], None], int]:
    """A device flush: ``zero_()`` on a buffer twice the card's L2 (as triton's do_bench)."""
    torch = torch or gpu._torch()
    nbytes = cuda_flush_bytes(index, nbytes, torch)
    buf = torch.empty(int(nbytes), dtype=torch.int8, device=f"cuda:{index}")

    def flush() -> None:
        buf.zero_()

    return flush, int(nbytes)
