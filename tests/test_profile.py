"""``bench-suite profile``: torch.profiler for torch cases, cProfile for numpy."""

from __future__ import annotations

import json
import pstats
from pathlib import Path

import pytest

from bench_suite.core.cases import parse_case_id
from bench_suite.core.errors import OutputError, UsageError
from bench_suite.frontends import cli
from bench_suite.measure import profiling


def test_torch_cpu_profile_writes_a_chrome_trace(tmp_path: Path) -> None:
    case = parse_case_id("matmul/torch-cpu/float32/n=32/threads=1")
    trace = tmp_path / "t" / "mm.trace.json"
    r = profiling.profile_case(case, trace=trace, calls=5)
    assert r.tool == "torch.profiler" and r.calls == 5 and r.trace_path == str(trace)
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == "aten::mm" for e in events)
    t = r.table
    assert list(t.columns) == list(profiling.TABLE_COLUMNS)
    assert set(t["activity"]) == {"cpu"}  # no CUDA activity on the CPU
    mm = t[t["name"] == "aten::mm"].iloc[0]
    assert mm.calls == 5 and mm.self_s > 0
    assert t["share"].sum() == pytest.approx(1.0)
    assert t["share"].is_monotonic_decreasing
    assert r.rel_error < 1e-4 and r.check == "full"


def test_numpy_profile_is_python_level(tmp_path: Path) -> None:
    case = parse_case_id("matmul_backward/numpy/float32/n=16/threads=1")
    r = profiling.profile_case(case, trace=tmp_path / "np.prof", calls=7)
    assert r.tool == "cProfile"
    stats = pstats.Stats(str(tmp_path / "np.prof"))  # a valid pstats dump
    assert stats.total_calls >= 7  # type: ignore[attr-defined]
    top = r.table.iloc[0]
    assert top.activity == "python" and top.calls == 7 and "numpy_backend.py" in top["name"]
    assert r.table["share"].sum() == pytest.approx(1.0)
    assert not r.table["name"].str.contains("disable").any()


def test_default_trace_path_and_call_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    case = parse_case_id("hadamard/numpy/float32/n=16/threads=1")
    r = profiling.profile_case(case)
    assert Path(r.trace_path) == Path("profiles/hadamard__numpy__float32__n=16__threads=1.prof")
    assert (tmp_path / r.trace_path).is_file()
    assert profiling.MIN_CALLS <= r.calls <= profiling.MAX_CALLS
    assert profiling.default_trace_path(parse_case_id("matmul/torch-cpu/float32/n=8/threads=all/grad"),
                                        "torch.profiler").name.endswith("grad.trace.json")


def test_unprofilable_cases(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="numpy has no bfloat16"):
        profiling.profile_case(parse_case_id("matmul/numpy/bfloat16/n=8/threads=1"),
                               trace=tmp_path / "x.prof")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write the trace"):
        profiling.profile_case(parse_case_id("matmul/numpy/float32/n=8/threads=1"),
                               trace=blocker / "x.prof")


def test_cli_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "h.json"
    assert cli.main(["profile", "hadamard/torch-cpu/float32/n=32/threads=1", "--trace", str(trace),
                     "--calls", "3", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "aten::mul" in out and "verified" in out and str(trace) in out
    assert trace.is_file()


@pytest.mark.parametrize("argv", [
    ["profile", "nonsense"],
    ["profile", "matmul/numpy/float32/n=8/threads=1", "--calls", "0"],
    ["profile", "matmul/numpy/float32/n=8/threads=1", "--top", "0"],
    ["profile", "matmul/torch-cuda:7/float32/n=8/threads=all"],
])
def test_cli_profile_bad_input(argv: list[str], capsys: pytest.CaptureFixture[str],
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert not list(tmp_path.iterdir())  # no empty profiles/ folder left behind
    err = capsys.readouterr().err
    assert err.startswith("bench-suite: error:") and err.count("\n") == 1


@pytest.mark.gpu
def test_cuda_profile_has_kernels(tmp_path: Path) -> None:
    case = parse_case_id("matmul/torch-cuda/float32/n=256/threads=all")
    r = profiling.profile_case(case, trace=tmp_path / "cuda.json", calls=5)
    cuda = r.table[r.table["activity"] == "cuda"]
    assert not cuda.empty and cuda["self_s"].sum() > 0
    assert r.table.iloc[0].activity == "cuda"  # the GPU's time first
    assert cuda["share"].sum() == pytest.approx(1.0)
