"""Timing the parts of a call, and calls that must start from the same state.

A training step (``mlp_step``) updates its own weights. Timed over and over, it would train
on: each call on other weights, and with a learning rate large enough to check the update,
soon on diverging ones. Instead its prepared case carries a ``reset`` (the weights copied
back from masters), which every timer runs before every call, outside the timed region
(:func:`with_reset`), the way a cache flush is run for cold-cache timing: each timed call
then trains the same step on the same weights.

A prepared case may also name the *phases* of a call (the step's forward, backward and
update), each with the setup that brings the state to where it starts (the reset and the
phases before it). :func:`time_phases` times each phase on its own, with the same timer and
stopping rule as the whole call, sharing the case's time budget, and returns what goes into
``Measurement.extra["phases"]``: per phase its raw per-call samples, from which the report
derives the breakdown. The phases' times need not add up to the call's exactly (each runs
with the state its setup left warm in the caches); the report shows both.

Layering: used by ``measure.gpu.options``, ``harness`` and ``runner``; imports ``timing`` and
``backends.base`` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from bench_suite.backends.base import Backend, Prepared
from bench_suite.core.timing import Clock, SamplingPlan, hooked, measure

#: The phases of a training step, in order (the report's columns).
STEP_PHASES: tuple[str, ...] = ("forward", "backward", "update")


def with_reset(timer: Any, reset: Callable[[], None]) -> bool:
    """Make ``timer`` run ``reset`` before every call, outside the timed region (before any
    hook it already has, such as a cache flush, so the flush still comes last). False when
    the timer has no such hook (a test double)."""
    with_hooks = hooked(timer)
    if with_hooks is None:
        return False
    before = with_hooks.before_call
    if before is None:
        with_hooks.before_call = reset
    else:
        def both() -> None:
            reset()
            before()

        with_hooks.before_call = both
    return True


def time_phases(prepared: Prepared, backend: Backend, config: SamplingPlan,
                clock: Clock) -> dict[str, Any]:
    """Each phase of ``prepared`` timed on its own: ``{name: {"samples_s", "number", "stop"}}``,
    or ``{name: {"skipped": why}}``; empty when the case has no phases.

    The phases share one case budget (each gets ``time_budget_s / phases``), so a case with
    phases takes about twice its budget in all.
    """
    if not prepared.phases:
        return {}
    share = dataclasses.replace(
        config, time_budget_s=config.time_budget_s / len(prepared.phases),
        warmup_s=min(config.warmup_s, config.time_budget_s / len(prepared.phases) / 4))
    out: dict[str, Any] = {}
    for name, phase in prepared.phases.items():
        timer = backend.timer(clock)
        if phase.setup is not None and not with_reset(timer, phase.setup):
            out[name] = {"skipped": f"{type(timer).__name__} cannot run a setup between calls"}
            continue
        timing = measure(phase.call, timer, share, clock)
        out[name] = {"samples_s": [s for s in timing.samples_s if math.isfinite(s)],
                     "number": timing.number, "stop": timing.stop}
    if prepared.reset is not None:
        prepared.reset()  # leave the state as a fresh call would find it
    return out
