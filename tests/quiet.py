"""A monitor that sees no interference, for tests whose subject is not the machine's load.

Tests that assert verdicts or figures of real runs would otherwise depend on what else the
test machine is doing (a parallel test worker is "another process holding a core"). In this
process: ``monkeypatch.setattr(runner, "Monitor", QuietMonitor)``; in worker processes (rounds,
``--isolate``, ``ab``): ``BENCH_SUITE_BACKEND_PLUGINS=tests.quiet:register``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench_suite.env.system import ThreadWait
from bench_suite.measure import runner
from bench_suite.measure.interference import Monitor

PLUGIN = "tests.quiet:register"


class QuietMonitor(Monitor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(threads=ThreadWait("/nonexistent/task"), machine=lambda: None)


def register(factories: dict[str, Callable[[str], Any]]) -> None:
    runner.Monitor = QuietMonitor  # type: ignore[misc]
