"""The asv front end: classes generated from the cases, their setup/timer/track contract, and
real asv (check, run with a set commit, a failing benchmark) whose results load into the
suite's frame by case id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench_suite import backends, load_results, load_runs
from bench_suite.core import grid, ops
from bench_suite.core.cases import OPS
from bench_suite.core.errors import UsageError
from bench_suite.frontends import asv_adapter
from bench_suite.measure import harness
from tests import frontend_doubles

REPO = Path(__file__).resolve().parents[1]
ASV = shutil.which("asv")
needs_asv = pytest.mark.skipif(ASV is None or shutil.which("git") is None, reason="needs asv and git")


@pytest.fixture(autouse=True)
def _release_prepared_cases():
    yield
    asv_adapter.release()
    harness.set_synchronize(None)


def _classes(**env: str) -> dict[str, type]:
    return asv_adapter.benchmark_classes("benchmarks.fake", environ=env)


# --- generated classes ----------------------------------------------------------------------


def test_one_class_per_op_with_the_grid_as_params() -> None:
    classes = _classes(BENCH_SUITE_ASV_GPU="0")
    assert list(classes) == [asv_adapter.class_name(op) for op in OPS]
    assert list(classes) == ["Matmul", "Hadamard", "MatmulBackward", "HadamardBackward", "Linear",
                             "LinearBackward", "MlpStep", "Bmm", "H2d", "D2h", "Create"]
    cases = grid.grid_sweep("ci").expand()
    for op in OPS:
        cls = classes[asv_adapter.class_name(op)]
        assert cls.__module__ == "benchmarks.fake"
        assert cls.param_names == list(grid.axis_names(op))
        mine = [c for c in cases if c.op == op]
        # every case of the grid is one combination of the params, and names itself back
        for case in mine:
            values = grid.case_values(case)
            assert all(v in axis for v, axis in zip(values, cls.params, strict=True))
            assert grid.case_from_values(op, cls.param_names, values) == case
        assert cls.version == asv_adapter.op_version(op)
        by_flops = op.startswith(("matmul", "linear", "mlp", "bmm"))
        assert ("track_gflops" in vars(cls)) == by_flops
        assert ("track_gbps" in vars(cls)) == (not by_flops)
        assert "track_peak_gpu_mem" not in vars(cls)
    assert classes["Matmul"].track_gflops.unit == "GFLOP/s"
    assert classes["Hadamard"].track_gbps.unit == "GB/s"
    assert classes["Matmul"].params[2] == [64, 256]


def test_the_environment_selects_grid_and_backends() -> None:
    classes = _classes(BENCH_SUITE_ASV_PRESET="quick", BENCH_SUITE_ASV_BACKENDS="numpy",
                       BENCH_SUITE_ASV_GPU="0")
    assert classes["Matmul"].params[0] == ["numpy"]
    assert classes["Matmul"].params[2] == [256, 1024]
    assert classes["Matmul"].params[4] == ["no_grad"]
    with pytest.raises(UsageError, match="unknown grid 'huge'"):
        _classes(BENCH_SUITE_ASV_PRESET="huge")
    with pytest.raises(UsageError, match="unknown backend"):
        _classes(BENCH_SUITE_ASV_BACKENDS="tpu")


def test_peak_gpu_memory_is_tracked_only_where_there_is_a_gpu(tmp_path: Path) -> None:
    assert "track_peak_gpu_mem" in vars(_classes(BENCH_SUITE_ASV_GPU="1")["Matmul"])
    no_cuda = _classes(BENCH_SUITE_ASV_GPU="1", BENCH_SUITE_ASV_BACKENDS="numpy")
    assert "track_peak_gpu_mem" not in vars(no_cuda["Matmul"])
    assert not asv_adapter.gpu_present({}, dev=tmp_path)
    (tmp_path / "nvidia0").touch()
    assert asv_adapter.gpu_present({}, dev=tmp_path)
    assert not asv_adapter.gpu_present({"CUDA_VISIBLE_DEVICES": ""}, dev=tmp_path)


def test_version_follows_the_op_definition_not_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {op: asv_adapter.op_version(op) for op in OPS}
    assert len(set(versions.values())) == len(OPS)
    assert versions == {op: asv_adapter.op_version(op) for op in OPS}  # deterministic
    monkeypatch.setattr(ops, "flops", lambda case: 7)  # a changed work count is a new series
    assert asv_adapter.op_version("matmul") != versions["matmul"]
    monkeypatch.undo()
    monkeypatch.setattr(asv_adapter, "CASE_SCHEME", asv_adapter.CASE_SCHEME + 1)
    assert asv_adapter.op_version("hadamard") != versions["hadamard"]


# --- setup, timer, track --------------------------------------------------------------------


def _bench(op: str, **env: str) -> object:
    cls = _classes(**{"BENCH_SUITE_ASV_GPU": "0", **env})[asv_adapter.class_name(op)]
    return cls()


def test_setup_skips_what_is_not_a_case_or_not_in_the_grid() -> None:
    b = _bench("matmul")
    with pytest.raises(NotImplementedError, match="numpy has no autograd"):
        b.setup("numpy", "float32", 64, "1", "grad")
    with pytest.raises(NotImplementedError, match=r"threads=all is not in the 'ci' grid"):
        b.setup("numpy", "float32", 64, "all", "no_grad")


def test_setup_skips_unavailable_cases_with_the_reason() -> None:
    frontend_doubles.install(backends.FACTORIES, "unavailable")  # restored by _restore_factories
    b = _bench("hadamard")
    with pytest.raises(NotImplementedError, match="fake: this device is switched off"):
        b.setup("numpy", "float32", 64, "1", "no_grad")


@pytest.fixture(autouse=True)
def _restore_factories():
    saved = dict(backends.FACTORIES)
    yield
    backends.FACTORIES.clear()
    backends.FACTORIES.update(saved)


def test_a_wrong_result_is_a_failure_not_a_skip() -> None:
    frontend_doubles.install(backends.FACTORIES, "wrong")
    b = _bench("hadamard")
    with pytest.raises(RuntimeError, match="wrong result") as info:
        b.setup("numpy", "float32", 64, "1", "no_grad")
    assert not isinstance(info.value, NotImplementedError)


def test_time_and_track_run_the_verified_case_and_the_timer_synchronizes() -> None:
    frontend_doubles.install(backends.FACTORIES, "cuda")
    b = _bench("matmul", BENCH_SUITE_ASV_PRESET="ci", BENCH_SUITE_ASV_GPU="1")
    b.setup("torch-cuda", "float32", 64, "all", "no_grad")
    ready = b._ready
    fake = ready.backend
    assert isinstance(fake, frontend_doubles.FakeCuda)
    assert fake.peak_resets == 1  # counted from before the inputs were made
    before = fake.syncs
    t0 = type(b).timer()
    b.time_op("torch-cuda", "float32", 64, "all", "no_grad")
    t1 = type(b).timer()
    assert t1 >= t0 and fake.syncs == before + 2  # the clock waits for the device
    rate = b.track_gflops("torch-cuda", "float32", 64, "all", "no_grad")
    assert rate > 0
    peak = b.track_peak_gpu_mem("torch-cuda", "float32", 64, "all", "no_grad")
    assert peak == ops.footprint_bytes(ready.case)
    b.teardown("torch-cuda", "float32", 64, "all", "no_grad")
    syncs = fake.syncs
    type(b).timer()
    assert fake.syncs == syncs  # after teardown the timer no longer waits on that device
    # asv re-runs setup between samples: the prepared case is reused, not prepared again
    b.setup("torch-cuda", "float32", 64, "all", "no_grad")
    assert b._ready is ready and fake.peak_resets == 1


def test_peak_gpu_memory_of_a_cpu_case_is_na() -> None:
    b = _bench("matmul", BENCH_SUITE_ASV_GPU="1")
    b.setup("numpy", "float32", 64, "1", "no_grad")
    with pytest.raises(NotImplementedError, match="CUDA cases only"):
        b.track_peak_gpu_mem("numpy", "float32", 64, "1", "no_grad")


def test_the_case_holds_its_thread_count_until_released() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> set[int]:
        return {m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"}

    before = blas_threads()
    b = _bench("matmul")
    b.setup("numpy", "float32", 64, "1", "no_grad")
    assert b._ready.threads == 1 and blas_threads() == {1}
    b.teardown("numpy", "float32", 64, "1", "no_grad")
    asv_adapter.release()
    assert blas_threads() == before


# --- real asv -------------------------------------------------------------------------------


def _asv_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(tmp_path / "home")  # asv's machine file lives in $HOME
    env["ASV_PYTHONPATH"] = str(REPO)  # asv drops PYTHONPATH in benchmark processes
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = "1"
    env.pop("BENCH_SUITE_ASV_PRESET", None)
    env.pop("BENCH_SUITE_ASV_BACKENDS", None)
    return env


def _asv(args: list[str], cwd: Path, env: dict[str, str],
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asv", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def _asv_project(tmp_path: Path, benchmark_dir: Path) -> tuple[Path, str, dict[str, str]]:
    """A throwaway git repository with an asv.conf.json that benchmarks ``benchmark_dir`` on
    this interpreter (--python=same), results under tmp_path."""
    proj = tmp_path / "proj"
    proj.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main", "."], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=proj, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, check=True, text=True,
                         capture_output=True).stdout.strip()
    conf = json.loads(_strip_comments((REPO / "asv.conf.json").read_text()))
    conf.update(repo=".", benchmark_dir=str(benchmark_dir), results_dir="results", env_dir="env",
                html_dir="html")
    (proj / "asv.conf.json").write_text(json.dumps(conf))
    env = _asv_env(tmp_path)
    machine = _asv(["machine", "--yes", "--machine", "test-box"], proj, env)
    assert machine.returncode == 0, machine.stderr
    return proj, sha, env


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def test_the_repository_config_is_asv_06_and_keeps_outputs_ignored() -> None:
    conf = json.loads(_strip_comments((REPO / "asv.conf.json").read_text()))
    assert conf["project"] == "bench-suite"  # the distribution name
    assert conf["environment_type"] == "virtualenv" and conf["launch_method"] == "spawn"
    assert conf["matrix"]["req"]["torch"] == ["2.13.0"]
    assert "--no-deps --no-build-isolation" in conf["build_command"][0]
    for key in ("results_dir", "env_dir", "html_dir"):
        assert conf[key].startswith(".asv/")
    assert "/.asv/" in (REPO / ".gitignore").read_text().split()
    assert 0 < conf["default_benchmark_timeout"] <= 600


@needs_asv
@pytest.mark.slow
def test_asv_check_passes_on_the_real_benchmarks(tmp_path: Path) -> None:
    out = _asv(["check", "--python=same"], REPO, _asv_env(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


@needs_asv
@pytest.mark.slow
def test_real_asv_results_load_into_the_frame_by_case_id(tmp_path: Path) -> None:
    proj, sha, env = _asv_project(tmp_path, REPO / "benchmarks")
    run = _asv(["run", "--python=same", "--set-commit-hash", sha, "--machine", "test-box",
                "--record-samples", "--show-stderr",
                "--bench", r"^ops\.Hadamard\.time_op\('numpy', 'float32', 64, '1', 'no_grad'\)",
                "--bench", r"^ops\.Matmul\.(time_op|track_gflops)\('numpy', 'float32', 64, '1', 'no_grad'\)"],
               proj, env)
    assert run.returncode == 0, run.stdout + run.stderr
    results = proj / "results"
    assert (results / "benchmarks.json").is_file()
    [result_file] = [p for p in (results / "test-box").glob("*.json") if p.name != "machine.json"]
    assert result_file.name.startswith(sha[:8])

    df = load_results([results])
    assert set(df["source"]) == {"asv"}
    assert sorted(df["case_id"]) == [
        "hadamard/numpy/float32/n=64/threads=1",
        "matmul/numpy/float32/n=64/threads=1",
    ]
    assert (df["status"] == "ok").all()
    assert ((df["median_s"] > 0) & (df["median_s"] < 0.1)).all()
    assert (df["n_samples"] >= 10).all()  # --record-samples: asv's raw samples, not a summary
    assert set(df["machine"]) == {"test-box"} and set(df["commit"]) == {sha}
    [runobj] = load_runs([result_file])
    by_id = {m.id: m for m in runobj.measurements}
    matmul = by_id["matmul/numpy/float32/n=64/threads=1"]
    assert matmul.extra["asv"]["version"] == asv_adapter.op_version("matmul")
    assert matmul.extra["asv"]["track_gflops"] > 0
    # the frame's rate and asv's own track_gflops measure the same work
    gflops = float(df.loc[df["case_id"] == matmul.id, "gflops"].iloc[0])
    assert gflops > 0


@needs_asv
@pytest.mark.slow
def test_asv_run_fails_when_a_benchmark_fails(tmp_path: Path) -> None:
    bench = tmp_path / "failing" / "benchmarks"
    bench.mkdir(parents=True)
    (bench / "__init__.py").write_text("")
    (bench / "ops.py").write_text(
        "from bench_suite import backends as _b\n"
        "from bench_suite.frontends.asv_adapter import benchmark_classes as _classes\n"
        "from tests import frontend_doubles as _doubles\n"
        "_doubles.install(_b.FACTORIES, 'wrong')\n"
        "globals().update(_classes(__name__))\n"
    )
    proj, _sha, env = _asv_project(tmp_path, bench)
    out = _asv(["run", "--python=same", "--quick", "--dry-run", "--machine", "test-box",
                "--bench", r"Hadamard\.time_op\('numpy', 'float32', 64, '1', 'no_grad'\)"], proj, env)
    assert out.returncode != 0
    assert "wrong result" in out.stdout + out.stderr
