"""``bench-suite peaks``: the best matmul over sizes and a copy's bandwidth, per backend."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_suite.analysis import catalogue
from bench_suite.backends.base import Availability, Backend, Prepared
from bench_suite.core import ops
from bench_suite.core.cases import Case
from bench_suite.core.timing import HostTimer
from bench_suite.frontends import cli
from bench_suite.measure import peaks
from bench_suite.store import peaks as peaks_file
from tests.fakes import FakeClock, FakeWork

#: matmul n -> nanoseconds per call on the fake CPU: 1024 is its best size.
NS = {256: 2 * 256**3 / 50.0, 1024: 2 * 1024**3 / 200.0, 2048: 2 * 2048**3 / 150.0}


class FakeCpu(Backend):
    """A CPU whose matmul runs at 50/200/150 GFLOP/s at n=256/1024/2048 on the fake clock,
    whose copy of N bytes takes N/10 ns (20 GB/s counting read + write), and which cannot
    run float64."""

    name = "numpy"
    device = "cpu"

    def __init__(self, clock: FakeClock):
        self.clock = clock

    def availability(self, case: Case) -> Availability:
        return Availability.no("no float64 here") if case.dtype == "float64" else Availability.yes()

    def prepare(self, case: Case, inputs: dict[str, np.ndarray]) -> Prepared:
        return Prepared(FakeWork(self.clock, NS[case.n]), lambda: ops.reference(case, inputs),
                        inputs)

    def threads(self, count: int | None) -> contextlib.AbstractContextManager[int | None]:
        return contextlib.nullcontext(count or 2)

    def timer(self, clock: Any) -> HostTimer:
        return HostTimer(clock)

    def device_name(self) -> str:
        return "Fake CPU"

    def free_memory_bytes(self) -> int | None:
        return 1 << 34

    def copy_buffers(self, nbytes: int, seed: int) -> tuple[Callable[[], object], Callable[[], None]]:
        return FakeWork(self.clock, nbytes / 10), lambda: None


@pytest.fixture
def fake_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    # the reference of a 2048^3 product is real work: make the fake's inputs tiny instead
    make = ops.make_inputs

    def tiny(case: Case, seed: int) -> dict[str, np.ndarray]:
        return make(Case(case.op, case.backend, case.dtype, (2, 2, 2), case.threads), seed)

    monkeypatch.setattr(ops, "make_inputs", tiny)
    monkeypatch.setattr(ops, "relative_error", lambda *a, **k: (0.0, "full"))


def test_best_size_wins_and_bandwidth_counts_both_ways(fake_inputs: None) -> None:
    clock = FakeClock()
    lines: list[str] = []
    cfg = peaks.PeaksConfig(sizes=(256, 1024, 2048), dtypes=("float32", "float64"),
                            threads=(1, None), time_budget_s=0.05, copy_bytes=64 << 20)
    ps = peaks.measure_peaks(["numpy"], cfg, machine="box", progress=lines.append,
                             backend_for=lambda _n: FakeCpu(clock), clock=clock)
    measured = [p for p in ps.peaks if p.source == "measured"]
    assert [(p.dtype, p.threads) for p in measured] == [("float32", 1), ("float32", 2)]
    for p in measured:
        assert p.flops_per_s == pytest.approx(200e9)  # n=1024, the best of the three
        assert p.details["best_n"] == 1024
        assert p.details["matmul"]["256"] == pytest.approx(50e9)
        assert p.bytes_per_s == pytest.approx(20e9)  # 2 x 64 MiB in 64 MiB / 10 ns
        assert p.machine == "box" and p.backend == "numpy" and p.device_name == "Fake CPU"
    assert any("float64" in n and "no float64 here" in n for n in ps.config["notes"])
    assert any("GFLOP/s" in line for line in lines) and any("GB/s" in line for line in lines)
    # the CPU's theoretical peak is saved beside the measured one, with the measured bandwidth
    theory = [p for p in ps.peaks if p.source == "theoretical"]
    assert theory and all(p.bytes_per_s == pytest.approx(20e9) for p in theory)
    table = peaks.peaks_table(ps)
    assert list(table["gflops"]) == [pytest.approx(200.0)] * 2
    assert table["reference"].tolist() == ["theoretical"] * 2


def test_real_numpy_peaks_round_trip(tmp_path: Path) -> None:
    cfg = peaks.PeaksConfig(sizes=(32, 64), dtypes=("float32",), threads=(1,),
                            time_budget_s=0.02, copy_bytes=1 << 20)
    ps = peaks.measure_peaks(["numpy"], cfg, machine="box")
    (m,) = [p for p in ps.peaks if p.source == "measured"]
    assert m.flops_per_s and m.flops_per_s > 0 and m.bytes_per_s and m.bytes_per_s > 0
    assert m.threads == 1 and m.details["best_n"] in (32, 64)
    assert m.flops_per_s == pytest.approx(max(v for v in m.details["matmul"].values() if v))
    assert ps.env["machine"] == "box"
    path = peaks_file.save_peaks(ps, tmp_path / "peaks.json")
    assert peaks_file.load_peaks(path).peaks == ps.peaks
    assert peaks.default_path("box") == Path("results/box/peaks.json")


def test_copy_without_a_copy_is_noted() -> None:
    class NoCopy(FakeCpu):
        name = "torch-cuda"  # not numpy, not torch: a double with no copy_buffers
        copy_buffers = None  # type: ignore[assignment]

    class Odd(NoCopy):
        name = "odd"

    bw, details = peaks.measure_copy(Odd(FakeClock()), None, peaks.PeaksConfig(copy_bytes=1 << 20))
    assert bw is None and "no copy benchmark" in details["reason"]

    class Tiny(FakeCpu):
        def free_memory_bytes(self) -> int | None:
            return 1 << 20

    bw, details = peaks.measure_copy(Tiny(FakeClock()), None, peaks.PeaksConfig())
    assert bw is None and "not enough free memory" in details["reason"]


def test_cli_peaks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p" / "peaks.json"
    rc = cli.main(["peaks", "--backends", "numpy", "--dtypes", "float32", "--sizes", "32,48",
                   "--threads", "1", "--time-budget", "0.02", "--copy-mib", "1",
                   "--machine", "box", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "numpy" in text and "saved" in text and str(out) in text
    ps = peaks_file.load_peaks(out)
    assert ps.machine == "box" and any(p.source == "measured" for p in ps.peaks)


@pytest.mark.parametrize("argv", [
    ["peaks", "--backends", "gpu"],
    ["peaks", "--sizes", "8x8"],
    ["peaks", "--dtypes", "float8"],
    ["peaks", "--copy-mib", "0"],
    ["peaks", "--threads", "zero"],
])
def test_cli_peaks_bad_input(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench-suite: error:") and err.count("\n") == 1


@pytest.mark.gpu
def test_real_gpu_peaks() -> None:
    cfg = peaks.PeaksConfig(sizes=(1024, 2048), dtypes=("float32", "bfloat16"),
                            time_budget_s=0.2, copy_bytes=256 << 20)
    ps = peaks.measure_peaks(["torch-cuda"], cfg)
    measured = {p.dtype: p for p in ps.peaks if p.source == "measured"}
    assert set(measured) == {"float32", "bfloat16"}
    assert all(p.bytes_per_s and p.flops_per_s for p in measured.values())
    name = measured["float32"].device_name
    if catalogue.lookup_gpu(name) is not None:
        sheet = {p.dtype: p for p in ps.peaks if p.source == "datasheet"}
        # a measured rate may beat nothing on the datasheet by more than a little
        assert measured["bfloat16"].flops_per_s < 1.1 * sheet["bfloat16"].flops_per_s
        assert measured["float32"].bytes_per_s < 1.1 * sheet["float32"].bytes_per_s
    assert not math.isnan(peaks.peaks_table(ps)["gflops"].iloc[0])
