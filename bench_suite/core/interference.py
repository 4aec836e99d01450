"""Interference: the record of what other work did while a case was timed, and the rule that
calls a case *contended*.

On a shared machine the clock cannot tell a slow kernel from a kernel that waited for a core.
Two readings tell them apart (taken by ``measure.interference.Monitor`` from the readers in
``env.system``):

* **per sample, our threads' run-queue wait**: a sample during which our threads waited for a
  core too long was *disturbed*, and is retaken (within a bound; see ``timing.measure``);
* **per case, other processes' CPU time** on the cores this process may run on, and the
  hypervisor's **steal** time there, per wall second of sampling: the ``contention`` figure,
  in cores. 0 is an idle machine; a busy loop elsewhere reads about 1.

A case is *contended* (:func:`is_contended`) when, after its retakes, other processes and
steal still took cores that the case's threads needed, or its threads still waited for a core.
Contended figures are flagged everywhere and never called slower or faster by ``compare``.

:class:`SampleMonitor` is what ``timing.measure`` needs of a monitor; where nothing can be
read (not Linux) every figure is ``None`` and nothing is ever called contended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: A case is contended when its threads plus other processes and steal need more cores than
#: there are, less this margin (so a 1-thread case on 2 cores tolerates a neighbour's
#: occasional burst, but not a busy loop on the other core) ...
CONTENDED_CORE_MARGIN = 0.5
#: ... or when, after the retakes, its kept samples still spent this much time waiting.
CONTENDED_WAIT_FRAC = 0.02


@dataclass(frozen=True)
class Interference:
    """What other work did while one case (one round of it) was sampled. ``None``: unknown."""

    other_cores: float | None  # other processes' CPU seconds per wall second
    steal_cores: float | None  # hypervisor steal, CPU seconds per wall second
    wait_frac: float | None  # our threads' run-queue wait per wall second, kept samples
    disturbed: int  # samples seen disturbed (retaken or kept)
    retaken: int  # disturbed samples thrown away and taken again
    kept_disturbed: int  # disturbed samples kept (the retake bound was reached)
    wall_s: float  # the sampling window
    cpus: int = 1  # the cores the other-process figure was read over

    @property
    def known(self) -> bool:
        return self.other_cores is not None or self.wait_frac is not None


NO_INTERFERENCE_DATA = Interference(None, None, None, 0, 0, 0, 0.0)


class SampleMonitor(Protocol):
    """What ``timing.measure`` needs of a monitor: :meth:`start` after warm-up,
    :meth:`sample_begin` and :meth:`sample_end` around every sample (outside the timed
    region), :meth:`keep` or :meth:`retake` for each sample, and :meth:`finish` at the end."""

    def start(self) -> None: ...

    def sample_begin(self) -> Any:
        """A token for :meth:`sample_end`."""
        ...

    def sample_end(self, token: Any) -> tuple[bool, int, int]:
        """Whether the sample was disturbed, its wait and its wall time (ns)."""
        ...

    def keep(self, disturbed: bool, wait: int, wall: int) -> None: ...

    def retake(self) -> None: ...

    def undecided(self) -> bool:
        """Whether other processes' load so far is too uncertain to judge (sample on)."""
        ...

    def finish(self) -> Interference: ...


#: Uncertainty of a CPU-seconds difference read from /proc/stat, per core read and one more:
#: each core's counters are truncated to whole ticks, and our own time is charged there by
#: the scheduler tick, not exactly.
TICK_UNCERTAINTY_S = 0.015
#: Least other-process load that counts at all (a daemon's wake-ups are not contention).
MIN_OTHER_CORES = 0.25
#: A window's other-process load is judged once its tick uncertainty is at most this
#: fraction of it (see :func:`load_undecided`).
JUDGED_REL_UNCERTAINTY = 0.25


def load_undecided(load: float, wall_s: float, cpus: int) -> bool:
    """Whether ``load`` (other processes' cores, as read over ``wall_s`` from ``cpus`` cores'
    ticks) is too uncertain to judge: above :data:`MIN_OTHER_CORES`, but its tick uncertainty
    is more than :data:`JUDGED_REL_UNCERTAINTY` of it (a busy loop elsewhere, seen over a few
    hundredths of a second). ``timing.measure`` then samples on, within its budget."""
    rounding = TICK_UNCERTAINTY_S * (cpus + 1) / wall_s
    return load > MIN_OTHER_CORES and rounding > JUDGED_REL_UNCERTAINTY * load


def is_contended(i: Interference, threads: int, cores: int) -> bool:
    """Whether other work took cores this case needed (see the module's doc).

    ``threads``: the case's threads in force; ``cores``: the cores this process may use.
    The other-process figure is lowered by its tick uncertainty over the window first, so a
    short window on an idle machine is never called contended by rounding alone.
    """
    if i.wait_frac is not None and i.wait_frac > CONTENDED_WAIT_FRAC:
        return True
    if i.other_cores is None or i.wall_s <= 0:
        return False
    rounding = TICK_UNCERTAINTY_S * (i.cpus + 1) / i.wall_s
    others = max(0.0, i.other_cores + (i.steal_cores or 0.0) - rounding)
    return others > MIN_OTHER_CORES and threads + others > cores - CONTENDED_CORE_MARGIN
