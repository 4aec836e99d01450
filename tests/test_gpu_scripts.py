"""``scripts/gpu_check.sh`` and ``scripts/gpu_validate.py`` as far as a machine without a GPU
can take them: the fast, clear failure without CUDA; the step orchestration (timeouts, what
comes back under $OUT, the summary printed last) with a stand-in Python; the pure parts of the
validation (summaries, goals, the timeline) on made-up figures."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def _validate() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_validate", ROOT / "scripts" / "gpu_validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gv = _validate()


def _run(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, cwd=ROOT)


# --- without CUDA -------------------------------------------------------------------------


def test_without_cuda_it_fails_in_one_line_and_leaves_its_log(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "out"
    p = _run({"OUT": str(out), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable})
    assert p.returncode == 2, p.stdout + p.stderr
    failed = [line for line in p.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1
    assert failed[0].startswith("gpu_check: FAILED at preflight after ")
    assert "no CUDA GPU here (this torch is a CPU-only build" in failed[0] and str(out / "log.txt") in failed[0]
    assert failed[0] in (out / "log.txt").read_text()
    assert sorted(f.name for f in out.iterdir()) == ["log.txt", "summary.txt"]


def test_validate_subcommands_refuse_without_cuda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for command in ("clocks", "compare", "tiny"):
        assert gv.main(["--json", str(tmp_path / "v.json"), command]) == 2
        assert capsys.readouterr().out.startswith(f"gpu_validate {command}: no CUDA GPU visible")
    assert gv.main(["preflight", "--facts", str(tmp_path / "f.json")]) == 2
    assert "CPU-only build" in capsys.readouterr().out and not (tmp_path / "f.json").exists()


# --- the orchestration, with a stand-in for Python ----------------------------------------

STUB = r"""#!/usr/bin/env bash
# Stands in for python3 on a GPU machine: preflight succeeds, one step hangs, the rest print.
args=" $* "
case "$args" in
  *" preflight "*)
    while [[ $# -gt 0 ]]; do
      case $1 in --facts) facts=$2; shift ;; --work) work=$2; shift ;; esac; shift
    done
    mkdir -p "$work/Fake-GPU"; echo Fake-GPU > "$work/gpu-name"
    echo '{"gpu": "Fake-GPU", "device": {"name": "Fake GPU"}, "git": {"commit": "abc1234"}}' > "$facts"
    echo "gpu: Fake GPU"; exit 0 ;;
  *" summary "*|*" -c "*) exec REALPY "$@" ;;
  *" tiny "*) echo "tiny hangs"; sleep 60 ;;
  *" -m pytest "*) echo "3 passed, 1 skipped"; exit 0 ;;
  *" compare "*)
    json=$(sed -n 's/.*--json \([^ ]*\).*/\1/p' <<< "$*")
    echo '{"compare": {"matmul": [{"dtype": "bfloat16", "n": 4096, "suite": {"median_s": 0.0002},
      "do_bench": {"median_s": 0.000201}, "suite_over_do_bench": 0.995, "tflops": 690}]}}' > "$json"
    echo "compared"; exit 0 ;;
  *) echo "stub: $*"; exit 0 ;;
esac
"""


def test_steps_time_out_alone_and_everything_comes_back(tmp_path: Path) -> None:
    stub = tmp_path / "python3"
    stub.write_text(STUB.replace("REALPY", sys.executable))
    stub.chmod(0o755)
    out, work = tmp_path / "out", tmp_path / "work"
    p = _run({"OUT": str(out), "WORK": str(work), "PYTHON": str(stub), "GPU_CHECK_MAX_STEP_S": "2",
              "BENCH_SUITE_COMMIT": "abc1234"})
    assert p.returncode == 1, p.stdout + p.stderr  # one step timed out, the others ran
    steps = {r["name"]: r for r in gv.read_steps(work / "steps.tsv")}
    assert list(steps) == ["preflight", "clocks", "tests", "compare", "tiny", "graphs", "peaks",
                           "sweep-matmul", "sweep-hadamard", "cpu", "newops", "doctor", "report", "summary"]
    assert steps["tiny"]["status"] == "timeout" and steps["tiny"]["limit_s"] == "2"
    assert all(r["status"] == "ok" for name, r in steps.items() if name != "tiny")
    # what the device tool brings back: few files, at most two folders deep, plain names
    files = [f for f in out.rglob("*") if f.is_file()]
    assert sorted(f.name for f in files) == ["facts.json", "log.txt", "results.tar.gz", "summary.txt",
                                             "tests.txt", "validate.json"]
    assert len(files) <= 6  # two of the tool's eight left for later steps
    assert "3 passed, 1 skipped" in (out / "tests.txt").read_text()
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"Fake-GPU/command.txt", "Fake-GPU/facts.json", "Fake-GPU/validate.json"} <= names
    command = (work / "Fake-GPU" / "command.txt").read_text()
    assert command.startswith("BENCH_SUITE_COMMIT=abc1234 bash scripts/gpu_check.sh")
    # the summary is what the output ends with (the device tool returns only the tail)
    tail = p.stdout.rstrip().splitlines()[-25:]
    assert any(line.startswith("== gpu_check summary: Fake GPU") for line in tail)
    assert any(line.startswith("tiny") and "timeout" in line for line in tail)
    assert any("suite within 3% of do_bench: 1/1" in line for line in tail)
    assert tail[-1].startswith("total ") and (out / "summary.txt").read_text() in p.stdout
    assert (out / "log.txt").read_text().rstrip().endswith(tail[-1])


def test_the_step_budget_is_written_at_the_top() -> None:
    head = SCRIPT.read_text().split("set -uo pipefail")[0]
    assert "STEP BUDGET" in head
    for step in ("preflight", "clocks", "tests", "compare", "tiny", "graphs", "peaks", "sweep-matmul",
                 "sweep-hadamard", "cpu", "newops", "doctor", "report", "summary"):
        assert f"#   {step} " in head


# --- pure parts of the validation ---------------------------------------------------------


def test_slug_and_sections(tmp_path: Path) -> None:
    assert gv.slug("NVIDIA H200") == "NVIDIA-H200" and gv.slug("(none)") == "none" and gv.slug("") == "gpu"
    path = tmp_path / "v.json"
    gv.save_section(path, "a", {"x": float("nan"), "y": [1, float("inf")]} and gv.clean({"x": float("nan")}))
    gv.save_section(path, "b", [1, 2])
    assert json.loads(path.read_text()) == {"a": {"x": None}, "b": [1, 2]}


def test_a_failing_part_is_recorded_and_the_step_goes_on() -> None:
    record: dict[str, Any] = {}
    with gv.part(record, "first"):
        raise RuntimeError("CUDA error: an illegal memory access\nmore")
    with gv.part(record, "second") as out:
        out["value"] = 1
    assert record["first"]["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert record["second"]["value"] == 1 and record["second"]["wall_s"] >= 0


def test_timeline_summary() -> None:
    samples = ([{"t_s": i * 0.02, "phase": "idle", "sm_clock_mhz": 345, "reasons": 0x1, "power_w": 90}
                for i in range(5)]
               + [{"t_s": 0.1 + i * 0.02, "phase": "load", "sm_clock_mhz": c, "reasons": r, "power_w": w,
                   "temp_c": 60 + i}
                  for i, (c, r, w) in enumerate([(345, 0x0, 150), (1200, 0x0, 400), (1980, 0x0, 650),
                                                  (1755, 0x4, 700), (1755, 0x4, 700), (1800, None, 690)])])
    s = gv.summarize_timeline(samples, 1980)
    assert s["idle_sm_clock_mhz"] == 345 and s["seconds_to_90pct_clock"] == pytest.approx(0.04)
    assert s["load_sm_clock_mhz"] == 1755 and s["load_power_w_max"] == 700
    assert s["power_capped_fraction"] == pytest.approx(2 / 5)  # of the samples with known reasons
    assert s["throttled_fraction"] == 0 and s["load_temp_c_max"] == 65
    assert gv.summarize_timeline([], None)["seconds_to_90pct_clock"] is None


def test_summary_table_states_the_goals() -> None:
    data = {
        "compare": {
            "matmul": [
                {"dtype": "bfloat16", "n": 8192, "suite": {"median_s": 1.40e-3}, "suite_cold": {"median_s": 1.41e-3},
                 "do_bench": {"median_s": 1.41e-3}, "timer": {"median_s": 1.45e-3},
                 "suite_over_do_bench": 0.993, "tflops": 785},
                {"dtype": "float32", "n": 4096, "suite": {"median_s": 2.8e-3}, "do_bench": {"median_s": 2.6e-3},
                 "suite_over_do_bench": 1.077, "tflops": 49},
                {"dtype": "tf32", "n": 4096, "run": {"error": "RuntimeError: boom"}},
            ],
            "hadamard": {"copy": {"bytes_per_s": 4.3e12},
                         "cases": [{"n": 4096, "gbps": 3950, "over_copy": 0.92},
                                   {"n": 8192, "gbps": 3800, "over_copy": 0.88}]},
        },
        "tiny": [{"case": "hadamard/torch-cuda/float32/n=256/threads=all", "events_s": 6e-6, "graph_s": 2.1e-6,
                  "host_enqueue_s": 6e-6, "kernel_s": 2.0e-6, "launch_bound": True, "graph_over_kernel": 1.05}],
        "clocks": {"timeline": {"tflops": 790, "summary": {"idle_sm_clock_mhz": 345, "max_sm_clock_mhz": 1980,
                                                           "seconds_to_90pct_clock": 0.1}},
                   "tf32": {"verdict": "TF32 ACTIVE: 6.0x faster"}},
    }
    facts = {"device": {"name": "NVIDIA H200", "compute_capability": "9.0", "multiprocessors": 132,
                        "l2_cache_bytes": 60 << 20}, "git": {"commit": "0123456789abcdef"}}
    steps = [{"name": "compare", "status": "ok", "wall_s": "41", "limit_s": "120", "note": ""}]
    runs = [{"name": "run-gpu-hadamard.json", "counts": {"ok": 27}, "launch_bound": 6, "failed": []}]
    lines = gv.render_summary(steps, data, facts, runs)
    text = "\n".join(lines)
    assert lines[0].startswith("== gpu_check summary: NVIDIA H200 sm_90, 132 SMs, L2 60 MiB")
    assert "commit 0123456789ab" in lines[0]
    assert "RuntimeError: boom" in text and "TF32 ACTIVE" in text
    assert "run run-gpu-hadamard.json: ok 27; launch-bound 6" in text
    assert lines[-1] == ("goals: suite within 3% of do_bench: 1/3; hadamard >= 0.90 of copy: 1/2; "
                         "graph time >= kernel time: 1/1")
    assert max(len(line) for line in lines) <= 200


def test_run_counts_read_finished_and_killed_runs(tmp_path: Path) -> None:
    from bench_suite.core.cases import Case
    from bench_suite.store.results import Measurement, Run, RunWriter

    m = Measurement(Case("hadamard", "torch-cuda", "float32", (8, 8)), "ok", samples_s=(1e-6,) * 3, number=1,
                    extra={"launch": {"launch_bound": True}})
    bad = Measurement(Case("matmul", "torch-cuda", "float32", (8, 8, 8)), "failed", reason="boom")
    writer = RunWriter(tmp_path / "run-a.json", Run("a", "m", "", {}, {}, ()))
    writer.add(m)
    writer.add(bad)
    writer.close()  # killed: only the journal is left
    (tmp_path / "peaks.json").write_text("{}")
    counts = gv.run_counts(tmp_path)
    assert counts == [{"name": "run-a.json.journal", "counts": {"ok": 1, "failed": 1, "complete": "no"},
                       "failed": ["matmul/torch-cuda/float32/n=8/threads=all: boom"], "launch_bound": 1}]


def test_steps_past_the_deadline_are_skipped_and_the_summary_still_runs(tmp_path: Path) -> None:
    stub = tmp_path / "python3"
    stub.write_text(STUB.replace("REALPY", sys.executable))
    stub.chmod(0o755)
    work = tmp_path / "work"
    p = _run({"OUT": str(tmp_path / "out"), "WORK": str(work), "PYTHON": str(stub), "TOTAL_S": "16",
              "RESERVE_S": "0", "GPU_CHECK_MAX_STEP_S": "7"})
    assert p.returncode == 1, p.stdout + p.stderr
    steps = {r["name"]: r["status"] for r in gv.read_steps(work / "steps.tsv")}
    assert steps["tiny"] == "timeout"  # hangs until its cap, leaving less than 10 s
    after = ["graphs", "peaks", "sweep-matmul", "sweep-hadamard", "cpu", "newops", "doctor", "report"]
    assert [steps[s] for s in after] == ["skipped"] * len(after)
    assert steps["summary"] == "ok" and "== gpu_check summary" in p.stdout


def test_summary_reads_the_tests_line_and_the_peaks(tmp_path: Path) -> None:
    from bench_suite.store.peaks import Peak, PeakSet, save_peaks

    out = tmp_path / "tests.txt"
    out.write_text("PASSED tests/x.py::t\n==== 41 passed, 3 skipped, 600 deselected in 30.20s ====\n")
    assert gv.tests_line(out) == "41 passed, 3 skipped, 600 deselected in 30.20s"
    assert gv.tests_line(tmp_path / "none.txt") is None
    name = "NVIDIA H200"
    peaks = (Peak("cuda:0", "bfloat16", 790e12, 4.3e12, "measured", device_name=name, backend="torch-cuda"),
             Peak("cuda:0", "bfloat16", 989.5e12, 4.8e12, "datasheet", device_name=name))
    save_peaks(PeakSet("m", "", {}, {}, peaks), tmp_path / "peaks.json")
    assert gv.peaks_lines(tmp_path / "peaks.json") == [
        "peaks TFLOP/s (% of datasheet): bfloat16 790 (80%); copy 4300 GB/s"]
    assert gv.peaks_lines(tmp_path / "missing.json") == []
