"""CUDA graphs: ``k`` calls are captured once into a ``torch.cuda.CUDAGraph`` on the case's
own non-default stream (where its inputs and forward graph were made), one replay is checked
against the float64 reference (its outputs poisoned with NaN first), and each replay is timed;
one call's time is a replay's over ``k``. For kernels shorter than their launch, this times
the GPU's work without the host's launch overhead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from bench_suite.backends.base import Prepared
from bench_suite.core import ops
from bench_suite.core.cases import Case
from bench_suite.core.timing import SamplingPlan, Timing
from bench_suite.measure import gpu, harness

#: Calls captured in one CUDA graph at most (the graph lasts about ``min_block_s`` otherwise).
MAX_GRAPH_CALLS = 1000


class GraphCaptureError(RuntimeError):
    """A CUDA graph could not be captured; the case is recorded as failed with this reason."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _is_default_stream(cuda: Any, stream: Any, index: int) -> bool:
    default = getattr(cuda, "default_stream", None)
    if default is None:
        return False
    try:
        return bool(stream == default(index))
    except Exception:  # a stream object that cannot be compared: assume it is not
        return False


def capture_graph(fn: Callable[[], object], calls: int, index: int = 0, torch: Any = None,
                  warmup: int = 3) -> tuple[Any, object]:
    """``calls`` calls of ``fn`` captured into one CUDA graph; returns the graph (``.replay()``
    runs it) and what the last captured call returned (the graph's outputs, which each replay
    overwrites).

    Warm-up and capture run on the current stream of card ``index``, which while a case runs
    is the case's own non-default stream, where its inputs and its forward graph were made
    (autograd runs a backward op on its forward op's stream: a forward on another stream
    would make the capture wait on a stream it cannot capture). On the legacy default stream,
    which cannot be captured, a side stream is used instead. Warm-up first (lazy
    initialisation and cuBLAS workspaces must not happen during capture), then capture.

    A capture that fails restores the current stream, ends the capture if it is still open
    and raises :class:`GraphCaptureError` with the reason.
    """
    torch = torch or gpu._torch()
    cuda = torch.cuda
    with cuda.device(index):
        before = cuda.current_stream(index)
        stream = cuda.Stream(device=index) if _is_default_stream(cuda, before, index) else before
        if stream is not before:
            stream.wait_stream(before)
        graph = cuda.CUDAGraph()
        result: object = None
        try:
            with cuda.stream(stream):
                for _ in range(warmup):
                    fn()
            cuda.synchronize(index)
            with cuda.graph(graph, stream=stream):
                for _ in range(calls):
                    result = fn()
        except Exception as exc:
            _restore_after_failed_capture(cuda, graph, before, index)
            cause = exc.__context__ if exc.__context__ is not None else exc
            reason = _first_line(cause)
            if cause is not exc:
                reason += f"; then {_first_line(exc)}"
            raise GraphCaptureError(f"CUDA graph capture failed: {reason}"[:500]) from exc
        if stream is not before:
            before.wait_stream(stream)
        cuda.synchronize(index)
    return graph, result


def _restore_after_failed_capture(cuda: Any, graph: Any, stream: Any, index: int) -> None:
    """torch's ``graph`` context leaves its capture stream current when ending the capture
    raises: make ``stream`` current again and close a capture still open."""
    with contextlib.suppress(Exception):
        capturing = getattr(cuda, "is_current_stream_capturing", lambda: False)
        set_stream = getattr(cuda, "set_stream", None)
        if capturing() and graph is not None:
            with contextlib.suppress(Exception):
                graph.capture_end()
        if set_stream is not None:
            set_stream(stream)
    with contextlib.suppress(Exception):
        cuda.synchronize(index)


def check_replay(case: Case, prepared: Prepared, graph: Any, result: object,
                 device_name: str = "") -> dict[str, Any]:
    """Poison the graph's outputs with NaN, replay it once and hold what it wrote to the same
    float64 reference and tolerance as the first call. Raises ``harness.WrongResult`` (the case
    fails) when a replay computes something else, or writes nothing at all."""
    if prepared.read is None or prepared.poison is None or result is None:
        return {"replay_checked": False,
                "replay_reason": "the backend does not expose a call's outputs"}
    prepared.poison(result)
    graph.replay()
    outputs = prepared.read(result)
    tol = ops.TOLERANCE[case.dtype]
    err, check = ops.relative_error(case, prepared.inputs, outputs)
    if not err <= tol:  # NaN (an output the replay never wrote) fails too
        raise harness.WrongResult(
            f"CUDA graph replay gave a wrong result: relative error {err:.3g} > tolerance "
            f"{tol:g} (the first call was right)", err, tol, check, None, device_name)
    return {"replay_checked": True, "replay_rel_error": err}


def graph_calls(per_call_s: float, config: SamplingPlan, out_bytes: int,
                free_bytes: int | None) -> int:
    """Calls per graph: enough for a replay to last ``min_block_s``, at most
    ``MAX_GRAPH_CALLS``, and few enough that outputs allocated per call (grad mode) fit in a
    quarter of the free memory."""
    want = math.ceil(config.min_block_s / max(per_call_s, 1e-9))
    calls = max(1, min(MAX_GRAPH_CALLS, want))
    if free_bytes is not None and out_bytes > 0:
        calls = max(1, min(calls, free_bytes // 4 // out_bytes))
    return calls


def per_call_graph_timing(timing: Timing, calls: int) -> Timing:
    """A replay's timing as per-call timing: samples / calls, calls counted."""
    return dataclasses.replace(
        timing, samples_s=tuple(s / calls for s in timing.samples_s),
        number=timing.number * calls, warmup_calls=timing.warmup_calls * calls)


def output_bytes(case: Case) -> int:
    """Bytes of one call's outputs: what a graph's pool gains per captured call (at most)."""
    return sum(math.prod(s) for s in ops.output_shapes(case).values()) * ops.ITEMSIZE[case.dtype]
