"""The CLI end to end on small sizes, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench_suite import load_results
from bench_suite.core import cases
from bench_suite.frontends.cli import create_parser, main

TINY = ["--sizes", "16,32", "--threads", "1", "--time-budget", "0.03", "--min-samples", "3", "--quiet",
        "--rounds", "1"]


def test_run_writes_a_loadable_run_with_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    code = main(["run", "--backends", "numpy,torch-cpu,torch-cuda", "--out", str(out), "--machine", "ci-box", *TINY])
    assert code == 0
    files = list(out.glob("*.json"))
    assert len(files) == 1
    df = load_results(files)
    # 4 ops x 2 sizes: numpy 8; torch-cpu: 2 forward ops x 2 grad modes + 2 backward = 6 x 2 = 12;
    # torch-cuda the same 12, skipped here without a GPU
    blocks = df[df["op"].isin(cases.BUILDING_BLOCKS)]
    assert len(blocks) == 8 + 12 + 12
    # quick's newer ops, 2 sizes each (its parts keep their own grad modes and variants):
    # linear, bmm, linear_backward, mlp_step 3 backends each; create 2 + the CUDA host fill;
    # h2d and d2h one case on each CPU backend, both host memories on CUDA
    assert len(df) - len(blocks) == 2 * (4 * 3 + 4 + 2 * 4)
    assert set(df["machine"]) == {"ci-box"}
    cpu = df[df.backend != "torch-cuda"]
    assert (cpu[~cpu["op"].isin(cases.LINK_OPS)]["status"] == "ok").all()
    assert (cpu[cpu["op"].isin(cases.LINK_OPS)]["status"] == "skipped").all()
    printed = capsys.readouterr().out
    assert "matmul/numpy/float32/n=16/threads=1" in printed
    assert f"saved {len(df)} measurements" in printed
    doc = json.loads(files[0].read_text())
    assert doc["complete"] is True and doc["config"]["preset"] == "quick"
    assert doc["config"]["argv"][:3] == ["run", "--backends", "numpy,torch-cpu,torch-cuda"]
    assert doc["env"]["machine"] == "ci-box"


def test_run_to_an_explicit_file(tmp_path: Path) -> None:
    target = tmp_path / "mine.json"
    assert main(["run", "--backends", "numpy", "--ops", "hadamard", "--out", str(target), *TINY]) == 0
    assert target.exists()
    assert list(load_results([target])["case_id"]) == [
        "hadamard/numpy/float32/n=16/threads=1", "hadamard/numpy/float32/n=32/threads=1"]


def test_list_shows_skip_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--backends", "numpy", "--dtypes", "bfloat16,float32", "--sizes", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "matmul/numpy/bfloat16/n=8/threads=1" in out and "skip: numpy has no bfloat16" in out
    assert "matmul/numpy/float32/n=8/threads=1" in out


def test_list_ids(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--ids", "--backends", "numpy", "--ops", "matmul", "--sizes", "8", "--threads", "1"]) == 0
    assert capsys.readouterr().out.split() == ["matmul/numpy/float32/n=8/threads=1"]


def test_env_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--json", "--machine", "m1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["machine"] == "m1"
    assert info["cpu"]["usable_cores"] >= 1
    assert info["packages"]["numpy"]
    assert "torch" in info and "version" in info["torch"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--ops", "conv"], "unknown op 'conv'; valid: matmul"),
        (["run", "--backends", "cuda"], "unknown backend 'cuda'"),
        (["run", "--dtypes", "int8"], "unknown dtype 'int8'"),
        (["run", "--sizes", "0"], "out of range"),
        (["run", "--sizes", "-5"], "out of range"),
        (["run", "--sizes", "1,,2"], "malformed size list"),
        (["run", "--sizes", "abc"], "malformed size"),
        (["run", "--threads", "zero"], "malformed thread count"),
        (["run", "--preset", "huge"], "unknown preset"),
        (["run", "--time-budget", "-1"], "positive number"),
        (["run", "--seed", "x"], "not an integer"),
        (["run", "--machine", "a/b"], "invalid machine name"),
        (["list", "--grad-modes", "sometimes"], "unknown grad mode"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unwritable_output_is_exit_2_before_measuring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert main(["run", "--backends", "numpy", "--out", str(blocker / "sub"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "cannot write results" in err and len(err.strip().splitlines()) == 1


def test_parser_is_importable_for_tests() -> None:
    args = create_parser().parse_args(["run", "--preset", "quick"])
    assert args.preset == "quick" and args.func.__name__ == "cmd_run"


def test_help_does_not_import_torch_or_matplotlib() -> None:
    code = ("import sys\nfrom bench_suite.frontends.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_python_dash_m_works() -> None:
    r = subprocess.run([sys.executable, "-m", "bench_suite", "list", "--ids", "--backends", "numpy",
                        "--ops", "matmul", "--sizes", "8", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "matmul/numpy/float32/n=8/threads=1"


def test_progress_in_a_log_is_one_line_per_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--backends", "numpy", "--ops", "hadamard", "--dtypes", "float32,tf32", "--sizes", "8",
                 "--threads", "1", "--time-budget", "0.02", "--rounds", "1", "--out", str(tmp_path / "r.json")])
    assert code == 0
    err = capsys.readouterr().err  # not a terminal: no live bar, a line per finished case
    assert "[1/2] hadamard/numpy/float32/n=8/threads=1: " in err
    assert "[2/2] hadamard/numpy/tf32/n=8/threads=1: skipped: tf32 is float32 on CUDA tensor cores" in err


def test_summary_says_which_cases_were_launch_bound(capsys: pytest.CaptureFixture[str]) -> None:
    from bench_suite.frontends.cli import _print_summary
    from tests.report_data import meas, run

    bound = meas("hadamard", "torch-cuda", 256, 5e-6, None, extra={"launch": {"launch_bound": True}})
    _print_summary(run("gpubox", [bound, meas("hadamard", "numpy", 256, 1e-5, 1)]))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "hadamard/torch-cuda" in line)
    assert row.rstrip(" │").endswith("launch-bound")
    assert "1 case launch-bound: the host took as long to queue the calls" in out
    assert "rerun with --cuda-graphs" in out
