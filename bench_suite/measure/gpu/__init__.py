"""GPU timing options, each in its own module: ``cold_cache`` (flushing caches before every
call), ``graphs`` (CUDA-graph capture, replay check and sizing) and ``options`` (the options
record, the CUDA warm-up, the launch-bound check and :func:`options.time_case`, the entry
point that times every case). NVML sampling lives in ``env.nvml``.

torch is imported lazily through :func:`_torch`, the one seam the modules here share: tests
replace it with a fake ``torch.cuda``.
"""

from __future__ import annotations

from typing import Any


def _torch() -> Any:
    import torch

    return torch
