"""The newer ops through every front end with the same ids: the CLI's run, list, report and
compare; asv's generated classes and a real asv run; pytest-benchmark's plugin (the training
step through ``pedantic``, its weights restored before every round)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_suite import backends, load_results, load_runs
from bench_suite.core import grid
from bench_suite.core.cases import OPS, Case, get_preset, parse_case_id
from bench_suite.frontends import asv_adapter
from bench_suite.frontends.cli import main
from bench_suite.measure import harness
from tests.test_asv_frontend import _asv, _asv_project, needs_asv
from tests.test_pytest_plugin import BENCH_FILE, FAST, _pytest

TINY = ["--sizes", "16", "--threads", "1", "--time-budget", "0.02", "--min-samples", "3",
        "--quiet", "--rounds", "2"]  # two fresh worker processes: the new ops' records cross them


@pytest.fixture(autouse=True)
def _release_prepared_cases():
    saved = dict(backends.FACTORIES)
    yield
    asv_adapter.release()
    harness.set_synchronize(None)
    backends.FACTORIES.clear()
    backends.FACTORIES.update(saved)


# --- the CLI --------------------------------------------------------------------------------


def test_list_shows_the_ids_and_why_copies_skip_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--ops", "h2d,linear", "--backends", "numpy,torch-cuda", "--sizes",
                 "8", "--threads", "1", "--activations", "gelu", "--host-memory", "pinned"]) == 0
    out = capsys.readouterr().out
    assert "h2d/numpy/float32/n=8/threads=all/mem=pinned " in out  # one case, the reason
    assert "skip: numpy arrays cannot live on a GPU" in out
    assert "h2d/torch-cuda/float32/n=8/threads=all/mem=pinned" in out
    assert "linear/numpy/float32/n=8/threads=1/act=gelu" in out
    assert main(["list", "--ids", "--ops", "bmm,create", "--backends", "torch-cuda",
                 "--sizes", "32,2x4x8x16", "--create-on", "host"]) == 0
    assert sorted(capsys.readouterr().out.split()) == [  # quick's bmm: the plain forward
        "bmm/torch-cuda/float32/b=16,n=32/threads=all",
        "bmm/torch-cuda/float32/b=2,m=4,k=8,n=16/threads=all",
        "create/torch-cuda/float32/n=32/threads=all/on=host",
    ]
    assert main(["list", "--ops", "linear", "--activations", "swish"]) == 2
    assert "unknown activation 'swish'" in capsys.readouterr().err


def test_run_report_and_compare_the_new_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ops = "linear,linear_backward,mlp_step,bmm,create,h2d"
    args = ["run", "--ops", ops, "--backends", "numpy,torch-cpu", "--activations", "relu,tanh",
            *TINY]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main([*args, "--out", str(a), "--report", str(tmp_path / "rep")]) == 0
    assert main([*args, "--out", str(b)]) == 0
    capsys.readouterr()
    [run] = load_runs([a])
    by_id = {m.id: m for m in run.measurements}
    assert by_id["linear/torch-cpu/float32/n=16/threads=1/act=tanh"].status == "ok"
    assert by_id["mlp_step/numpy/float32/n=16/threads=1"].extra["phases"]["update"]["samples_s"]
    assert by_id["bmm/numpy/float32/b=16,n=16/threads=1"].status == "ok"
    assert by_id["create/torch-cpu/float32/n=16/threads=1"].check == "ks"
    assert by_id["h2d/numpy/float32/n=16/threads=all"].status == "skipped"
    assert not [m.id for m in run.measurements if m.status == "failed"]
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "### mlp\\_step" in summary and "Where the training step" in summary
    assert "numpy arrays cannot live on a GPU" in summary
    # compare pairs the new ids (a huge threshold: tiny cases on a shared machine are noise)
    out = tmp_path / "cmp.json"
    assert main(["compare", str(a), str(b), "--threshold", "1000%", "--format", "json",
                 "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    text = json.dumps(data)
    assert "linear/numpy/float32/n=16/threads=1/act=tanh" in text
    assert "mlp_step/torch-cpu/float32/n=16/threads=1" in text


def test_resume_keeps_the_saved_variant_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    assert main(["run", "--ops", "linear", "--backends", "numpy", *TINY, "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(path), "--activations", "gelu"]) == 2
    assert "drop --activations" in capsys.readouterr().err


# --- grids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ci", "quick", "default"])
def test_every_grid_case_names_itself_back_through_asv_parameters(name: str) -> None:
    cases = grid.grid_sweep(name).expand()
    assert {c.op for c in cases} == set(OPS)
    for case in cases:
        names = grid.axis_names(case.op)
        assert grid.case_from_values(case.op, names, grid.case_values(case)) == case
        assert parse_case_id(case.id) == case


def test_asv_classes_of_the_new_ops() -> None:
    classes = asv_adapter.benchmark_classes("benchmarks.fake", environ={"BENCH_SUITE_ASV_GPU": "0"})
    assert classes["Linear"].param_names == ["backend", "dtype", "size", "threads", "grad_mode",
                                             "activation"]
    assert classes["MlpStep"].param_names == ["backend", "dtype", "size", "threads"]
    assert classes["H2d"].param_names == ["backend", "dtype", "size", "threads", "host_memory"]
    assert classes["Create"].param_names == ["backend", "dtype", "size", "threads", "create_on"]
    assert classes["Bmm"].params[2] == [64]  # a batch of 16 64 x 64 products
    assert "track_gflops" in vars(classes["MlpStep"]) and "track_gbps" in vars(classes["D2h"])
    with pytest.raises(NotImplementedError, match="numpy arrays cannot live on a GPU"):
        classes["H2d"]().setup("numpy", "float32", 64, "all", "pageable")


def test_asv_setup_restores_the_training_step_before_every_call() -> None:
    classes = asv_adapter.benchmark_classes("benchmarks.fake", environ={"BENCH_SUITE_ASV_GPU": "0"})
    bench = classes["MlpStep"]()
    params = ("numpy", "float32", 64, "1")
    bench.setup(*params)
    ready = bench._ready
    resets: list[int] = []
    reset = ready.prepared.reset
    ready.prepared.reset = lambda: (resets.append(1), reset())[1]  # type: ignore[misc]
    for _ in range(3):  # asv: setup, one timed call, teardown, ...
        bench.teardown(*params)
        bench.setup(*params)
        bench.time_op(*params)
    assert len(resets) == 3
    assert bench.track_gflops(*params) > 0


@needs_asv
@pytest.mark.slow
def test_real_asv_runs_the_new_ops_with_the_same_ids(tmp_path: Path) -> None:
    proj, sha, env = _asv_project(tmp_path, Path(__file__).resolve().parents[1] / "benchmarks")
    run = _asv(["run", "--python=same", "--set-commit-hash", sha, "--machine", "test-box",
                "--record-samples", "--show-stderr",
                "--bench", r"^ops\.Linear\.time_op\('numpy', 'float32', 64, '1', 'no_grad', 'relu'\)",
                "--bench", r"^ops\.MlpStep\.time_op\('numpy', 'float32', 64, '1'\)",
                "--bench", r"^ops\.Create\.time_op\('numpy', 'float32', 64, '1', 'device'\)"],
               proj, env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    df = load_results([proj / "results"])
    assert sorted(df["case_id"]) == ["create/numpy/float32/n=64/threads=1",
                                     "linear/numpy/float32/n=64/threads=1",
                                     "mlp_step/numpy/float32/n=64/threads=1"]
    assert (df["status"] == "ok").all() and (df["median_s"] > 0).all()


# --- pytest-benchmark -----------------------------------------------------------------------


@pytest.mark.slow
def test_pytest_benchmark_times_the_new_ops_with_the_same_ids(tmp_path: Path) -> None:
    out = tmp_path / "pb.json"
    res = _pytest([str(BENCH_FILE), "-p", "no:xdist", "-q", *FAST, "--suite-backends", "numpy",
                   "--suite-ops", "linear,mlp_step,bmm", "--suite-sizes", "16",
                   "--suite-activations", "relu,gelu", "--benchmark-json", str(out)])
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    expected = [c.id for c in grid.grid_sweep("ci").with_filters(
        backends=("numpy",), ops=("linear", "mlp_step", "bmm"), sizes=(16,),
        activations=("relu", "gelu")).expand()]
    assert [b["param"] for b in data["benchmarks"]] == expected
    assert "linear/numpy/float32/n=16/threads=1/act=gelu" in expected
    step = next(b for b in data["benchmarks"] if b["param"].startswith("mlp_step"))
    assert step["extra_info"]["timed"].startswith("one call per round")
    assert step["stats"]["rounds"] == step["extra_info"]["pedantic_rounds"] >= 3
    assert step["stats"]["iterations"] == 1
    df = load_results([out])
    assert list(df["case_id"]) == expected and (df["status"] == "ok").all()


def test_the_quick_preset_runs_its_new_cases_on_this_machine() -> None:
    """Every newer-op case of ``quick`` that a CPU machine runs is verified here (tiny sizes:
    the preset's own shapes are the lead's to time)."""
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.measure.runner import RunOptions, run_case

    fast = RunOptions(timing=SamplingPlan(time_budget_s=0.02, min_samples=3, warmup_s=0))
    quick = get_preset("quick").sweep.with_filters(sizes=(16,), backends=("numpy", "torch-cpu"))
    for case in quick.expand():
        if case.op in ("matmul", "hadamard", "matmul_backward", "hadamard_backward"):
            continue
        m = run_case(case, backends.get_backend(case.backend), fast)
        assert m.status in ("ok", "skipped"), (case.id, m.reason)
        assert (m.status == "skipped") == (case.op in ("h2d", "d2h")), case.id
        assert isinstance(Case.from_dict(case.to_dict()), Case)
