"""The environment record: machine names, the commit of a copy without git, and TF32 read
through torch's new precision API without ever crashing."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench_suite.core.errors import UsageError
from bench_suite.env import collect as env
from bench_suite.frontends import cli

# --- machine names ------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "name"), [
    ("(none)", "none"), ("", "unknown"), ("---", "unknown"), ("gpu box 7", "gpu-box-7"),
    ("node01.cluster", "node01.cluster"), ("_x_", "x"), ("a" * 150, "a" * 100), ("ü", "unknown"),
])
def test_a_host_name_that_is_not_a_valid_name_is_sanitized(
        monkeypatch: pytest.MonkeyPatch, host: str, name: str) -> None:
    monkeypatch.delenv("BENCH_SUITE_MACHINE", raising=False)
    monkeypatch.setattr(env.socket, "gethostname", lambda: host)
    assert env.machine_name() == name
    assert env.MACHINE_RE.fullmatch(env.machine_name())
    assert env.collect(torch=False)["machine"] == name


@pytest.mark.parametrize("given", ["(none)", "a b", "", "../x"])
def test_an_explicit_invalid_machine_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    with pytest.raises(UsageError, match="invalid machine name"):
        env.machine_name(given)
    if given:
        monkeypatch.setenv("BENCH_SUITE_MACHINE", given)
        with pytest.raises(UsageError, match="invalid machine name"):
            env.machine_name()


def test_cli_with_host_name_none_files_results_under_a_valid_name(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BENCH_SUITE_MACHINE", raising=False)
    monkeypatch.setattr(env.socket, "gethostname", lambda: "(none)")
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "--backends", "numpy", "--ops", "hadamard", "--sizes", "8", "--threads", "1",
                     "--time-budget", "0.02", "--rounds", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert len(list((tmp_path / "results" / "none").glob("*.json"))) == 1


# --- the commit of a copy without .git ----------------------------------------------------


def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*_a: Any, **_k: Any) -> Any:
        raise FileNotFoundError("git")

    monkeypatch.setattr(env.subprocess, "run", missing)


def test_commit_comes_from_the_environment_where_git_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_git(monkeypatch)
    monkeypatch.delenv(env.COMMIT_ENV, raising=False)
    assert env.git_info() == {}
    monkeypatch.setenv(env.COMMIT_ENV, " 0123456789ABCDEF0123456789abcdef01234567 ")
    assert env.git_info() == {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": None,
                              "source": "BENCH_SUITE_COMMIT"}
    monkeypatch.setenv(env.COMMIT_ENV, "$(git rev-parse HEAD)")  # unexpanded: not a commit
    info = env.git_info()
    assert "commit" not in info and info["given"] == "$(git rev-parse HEAD)"


def test_commit_from_the_environment_outside_a_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = subprocess.run

    def not_a_repo(args: list[str], **kw: Any) -> Any:
        return real(args, **{**kw, "cwd": tmp_path})  # git exists, but no repository here

    monkeypatch.setattr(env.subprocess, "run", not_a_repo)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv(env.COMMIT_ENV, "abc1234")
    assert env.git_info()["commit"] == "abc1234"


def test_git_wins_where_it_knows_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.COMMIT_ENV, "abc1234")
    info = env.git_info()
    if not info.get("source"):  # this checkout is a git repository
        assert info["commit"] != "abc1234" and "dirty" in info


# --- TF32 and the new precision API -------------------------------------------------------


@pytest.fixture
def new_api_tf32() -> Iterator[Any]:
    """``torch.backends.cuda.matmul.fp32_precision = "tf32"``, as torch >= 2.9 recommends:
    from then on, reading the legacy ``allow_tf32`` raises, on the CPU build too."""
    torch = pytest.importorskip("torch")
    matmul = torch.backends.cuda.matmul
    try:
        before = matmul.fp32_precision
    except AttributeError:
        pytest.skip("this torch has no fp32_precision API")
    matmul.fp32_precision = "tf32"
    try:
        yield torch
    finally:
        matmul.fp32_precision = before


def test_reading_the_legacy_flag_raises_after_the_new_api_was_used(new_api_tf32: Any) -> None:
    with pytest.raises(RuntimeError):
        _ = new_api_tf32.backends.cuda.matmul.allow_tf32


def test_torch_info_reads_the_new_api_first_and_never_crashes(new_api_tf32: Any) -> None:
    info = env.torch_info()
    assert info["matmul_fp32_precision"] == "tf32" and info["tf32_matmul"] is True
    assert info["allow_tf32_matmul"] is None  # it raised: unknown, not a crash
    for key in ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction"):
        assert isinstance(info[key], bool)
    json.dumps(info)


def test_env_run_and_peaks_start_with_tf32_set_through_the_new_api(
        new_api_tf32: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["env", "--json", "--machine", "m"]) == 0
    assert json.loads(capsys.readouterr().out)["torch"]["tf32_matmul"] is True
    # one round: measured in this process, where the flag was set (rounds run in fresh ones)
    assert cli.main(["run", "--backends", "torch-cpu", "--ops", "hadamard", "--sizes", "8", "--threads", "1",
                     "--grad-modes", "no_grad", "--time-budget", "0.02", "--rounds", "1", "--quiet", "--machine", "m",
                     "--out", str(tmp_path / "run.json")]) == 0
    assert cli.main(["peaks", "--backends", "numpy", "--dtypes", "float32", "--sizes", "64", "--threads", "1",
                     "--time-budget", "0.02", "--copy-mib", "16", "--quiet", "--machine", "m",
                     "--out", str(tmp_path / "peaks.json")]) == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["env"]["torch"]["matmul_fp32_precision"] == "tf32"


@pytest.mark.parametrize(("record", "tf32"), [
    ({"matmul_fp32_precision": "tf32", "allow_tf32_matmul": None}, True),
    ({"matmul_fp32_precision": "ieee", "fp32_precision": "tf32"}, False),
    ({"matmul_fp32_precision": "none", "fp32_precision": "tf32"}, True),
    ({"matmul_fp32_precision": "none", "fp32_precision": "none", "allow_tf32_matmul": False,
      "float32_matmul_precision": "highest"}, False),
    ({"allow_tf32_matmul": True}, True),  # files from before the new API
    ({"allow_tf32_matmul": False, "float32_matmul_precision": "high"}, True),
    ({"float32_matmul_precision": "highest"}, False),
    ({}, None),
])
def test_tf32_outcome_from_any_record(record: dict[str, Any], tf32: bool | None) -> None:
    assert env.tf32_matmul_enabled(record) is tf32


def test_gpu_facts_include_the_l2_size(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")

    class Props:
        name, total_memory, major, minor, multi_processor_count = "NVIDIA H200", 141 << 30, 9, 0, 132
        L2_cache_size = 60 << 20

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(env, "nvml_info", lambda i: {"driver": "580.159.04"})
    facts = env.gpu_info(0)
    assert facts["l2_cache_bytes"] == 60 << 20 and facts["multiprocessors"] == 132
    assert facts["compute_capability"] == "9.0" and facts["driver"] == "580.159.04"
