"""Stragglers: with results from more than one device, each device's rate on a case against
the median of the devices of its model, a table and a figure, and devices more than 5% below
flagged by host and index. Runs built by hand (two nodes of 4 GPUs, one slow card)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench_suite.frontends import cli
from bench_suite.report import fleet, render
from bench_suite.store.results import Run, to_frame
from bench_suite.store.runset import RankStatus, RunSet, save_runset
from tests.report_data import meas

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
#: seconds per matmul of n=4096 (137 GFLOP): 200 µs is ~687 TFLOP/s
BASE = 200e-6


def rank_run(rank: int, host: str, index: int, slow: float = 1.0, model: str = H100) -> Run:
    ms = [meas("matmul", f"torch-cuda:{index}", 4096, BASE * slow, None, dtype="bfloat16", device_name=model),
          meas("hadamard", f"torch-cuda:{index}", 8192, 60e-6 * slow, None, device_name=model)]
    return Run(f"set-rank{rank}", host, "2026-01-01", {"hostname": host},
               {"distributed": {"rank": rank, "host": host, "local_rank": index, "world_size": 8}},
               tuple(ms))


def fleet_runs(slow: dict[tuple[str, int], float] | None = None) -> list[Run]:
    slow = slow or {("b", 2): 1 / 0.90}  # b cuda:2 at 90% of the others' rate
    return [rank_run(4 * h + i, host, i, slow.get((host, i), 1.0))
            for h, host in enumerate("ab") for i in range(4)]


def test_each_device_against_the_fleet_median() -> None:
    f = fleet.fleet_table(to_frame(fleet_runs()))
    assert len(f) == 16 and set(f["devices_in_fleet"]) == {8}
    slow = f[(f["host"] == "b") & (f["device_index"] == 2)]
    assert list(slow["rel"]) == pytest.approx([0.90, 0.90])
    assert slow["below"].all() and not f.drop(slow.index)["below"].any()
    assert set(f["case"]) == {"matmul/torch-cuda/bfloat16/n=4096/threads=all",
                              "hadamard/torch-cuda/float32/n=8192/threads=all"}
    summary = fleet.device_summary(f)
    assert list(summary["device_label"]) == [f"{h} cuda:{i}" for h in "ab" for i in range(4)]
    flagged = summary[summary["straggler"]]
    assert list(zip(flagged["host"], flagged["device_index"], strict=True)) == [("b", 2)]
    assert fleet.stragglers_text(summary) == "b cuda:2 (90%)"


def test_four_percent_below_is_not_flagged() -> None:
    summary = fleet.device_summary(fleet.fleet_table(to_frame(fleet_runs({("a", 1): 1 / 0.96}))))
    assert not summary["straggler"].any()


def test_models_are_never_mixed_and_one_device_is_no_fleet() -> None:
    runs = [*fleet_runs(), rank_run(8, "c", 0, slow=3.0, model=A100)]
    f = fleet.fleet_table(to_frame(runs))
    assert set(f["model"]) == {H100} and "c cuda:0" not in set(f["device_label"])
    assert fleet.fleet_table(to_frame(fleet_runs()[:1])).empty
    assert fleet.fleet_figure(to_frame(fleet_runs()[:1])) is None


def test_cpu_ranks_are_devices_by_host_and_local_index() -> None:
    runs = [Run(f"s-rank{r}", "vm", "", {"hostname": "vm"}, {"distributed": {"rank": r, "local_rank": r}},
                (meas("matmul", "numpy", 256, 1e-3 * (1.2 if r else 1.0), 1),)) for r in range(2)]
    summary = fleet.device_summary(fleet.fleet_table(to_frame(runs)))
    assert list(summary["device_label"]) == ["vm cpu#0", "vm cpu#1"]
    assert list(summary["straggler"]) == [False, True]


def test_report_gains_a_fleet_section_and_figure(tmp_path: Path) -> None:
    index = render.write_report(fleet_runs(), tmp_path / "rep")
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "### Fleet" in md and "More than 5% below the fleet median: b cuda:2 (90%)." in md
    assert "| b | cuda:2 | NVIDIA H100 80GB HBM3 | 2 | 90% |" in md
    assert (tmp_path / "rep" / "figures" / "fleet.png").stat().st_size > 1000
    html = index.read_text()
    assert 'id="fleet"' in html and 'id="fig-fleet"' in html
    csv = (tmp_path / "rep" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"rank", "host", "device_index"} <= set(csv)


def test_no_fleet_section_for_one_device(tmp_path: Path) -> None:
    render.write_report(fleet_runs()[:1], tmp_path / "one")
    assert "### Fleet" not in (tmp_path / "one" / "summary.md").read_text()
    assert not (tmp_path / "one" / "figures" / "fleet.png").exists()


def _runset(tmp_path: Path, runs: list[Run], missing: int | None = None) -> Path:
    ranks = tuple(RankStatus(i, r.machine, "lost" if i == missing else "complete", len(r.measurements))
                  for i, r in enumerate(runs))
    return save_runset(RunSet("set", "2026-01-01", "2026-01-01", len(runs), "torchrun", ranks,
                              tuple(runs)), tmp_path / "set.json")


def test_report_and_compare_read_a_run_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _runset(tmp_path, fleet_runs())
    assert cli.main(["report", str(path), "-o", str(tmp_path / "rep")]) == 0
    assert "b cuda:2 (90%)" in (tmp_path / "rep" / "summary.md").read_text()
    capsys.readouterr()
    assert cli.main(["compare", str(path), str(path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # paired by case id: cuda:N of both hosts pool into one side of torch-cuda:N's pair
    assert len(doc["pairs"]) == 8


@pytest.mark.parametrize(("change", "message"), [
    ({"version": 2}, "run-set version 2"),
    ({"runs": "x"}, "'runs' and 'ranks' must be lists"),
    ({"world_size": 0}, "world_size: expected a positive count"),
    ({"ranks": [{"rank": 0, "status": "gone"}]}, "status: 'gone' is not one of"),
    ({"runs": [{"schema": "bench-suite/run", "version": 1}]}, "runs\\[0\\]"),
])
def test_a_malformed_run_set_is_one_line(tmp_path: Path, change: dict[str, Any], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _runset(tmp_path, fleet_runs()[:2])
    doc = json.loads(path.read_text())
    doc.update(change)
    path.write_text(json.dumps(doc))
    assert cli.main(["report", str(path), "-o", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("\\", "") in err.replace("\\", "")
