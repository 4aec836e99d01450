"""The report's tables against numbers computed by hand from tests/report_data.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench_suite.report import tables
from bench_suite.store.results import to_frame
from tests.report_data import gpubox_measurements, laptop_measurements, meas, run, two_runs


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return to_frame(two_runs())


def one(df: pd.DataFrame, **where: object) -> pd.Series:
    """The single row of ``df`` matching every ``column=value``."""
    mask = pd.Series(True, index=df.index)
    for col, value in where.items():
        mask &= df[col] == value
    rows = df[mask]
    assert len(rows) == 1, f"{len(rows)} rows match {where}"
    return rows.iloc[0]


def test_time_table_rates_from_work_counts(frame: pd.DataFrame) -> None:
    t = tables.time_table(frame)
    r = one(t, series="laptop", op="matmul", backend="numpy", size="n=64", threads_label="1")
    assert r["median_s"] == pytest.approx(4e-4)
    assert r["gflops"] == pytest.approx(2 * 64**3 / 4e-4 / 1e9)  # 1.31072
    assert r["rate"] == pytest.approx(1.31072) and r["rate_unit"] == "GFLOP/s"
    h = one(t, series="laptop", op="hadamard", backend="torch-cpu", size="n=64",
            threads_label="all", grad_mode="no_grad")
    assert h["rate"] == pytest.approx(3 * 64 * 64 * 4 / 5e-6 / 1e9) and h["rate_unit"] == "GB/s"
    # failed and skipped cases have no time: they are listed elsewhere, not here
    assert not ((t["op"] == "hadamard") & (t["size"] == "n=128")).any()
    assert set(tables.PEAK_COLUMNS).isdisjoint(t.columns)


def test_speedups_at_equal_dtype_size_threads(frame: pd.DataFrame) -> None:
    sp = tables.speedup_table(frame)
    mm = sp[(sp["op"] == "matmul") & (sp["grad_mode"] == "no_grad")]
    assert one(mm, series="laptop", pair="torch-cpu / numpy", size="n=64",
               threads_label="1")["speedup"] == pytest.approx(4e-4 / 2e-4)
    assert one(mm, series="laptop", pair="torch-cpu / numpy", size="n=64",
               threads_label="all")["speedup"] == pytest.approx(1.0)
    box = mm[(mm["series"] == "gpubox") & (mm["threads_label"] == "all")]
    assert one(box, pair="torch-cpu / numpy")["speedup"] == pytest.approx(1e-4 / 5e-5)
    assert one(box, pair="torch-cuda / numpy")["speedup"] == pytest.approx(1e-4 / 1e-5)
    assert one(box, pair="torch-cuda / torch-cpu")["speedup"] == pytest.approx(5e-5 / 1e-5)
    # a GPU is never paired with a 1-thread CPU case, and no pair crosses machines
    assert not ((sp["candidate"] == "torch-cuda") & (sp["threads_label"] == "1")).any()
    assert set(sp[sp["series"] == "laptop"]["candidate"]) == {"torch-cpu"}
    # torch's graph-recording forward has no numpy twin
    assert not (sp[sp["op"] == "matmul"]["grad_mode"] == "grad").any()


def test_speedup_interval_and_noise(frame: pd.DataFrame) -> None:
    sp = tables.speedup_table(frame)
    r = one(sp, series="laptop", op="matmul", size="n=128", threads_label="all")
    assert r["speedup"] == pytest.approx(1e-3 / 0.8e-3)
    # five samples: each median's interval is min..max of its samples
    assert r["speedup_low"] == pytest.approx(0.5e-3 / 0.88e-3)
    assert r["speedup_high"] == pytest.approx(3e-3 / 0.72e-3)
    assert bool(r["noisy"])  # the numpy cell is noisy, so the ratio is flagged
    assert not bool(one(sp, series="laptop", op="matmul", size="n=128", threads_label="1")["noisy"])
    assert not bool(one(sp, series="laptop", op="matmul", size="n=64", threads_label="all",
                        grad_mode="no_grad")["noisy"])


def test_thread_scaling_speedup_and_efficiency(frame: pd.DataFrame) -> None:
    sc = tables.thread_scaling(frame)
    lap = sc[(sc["series"] == "laptop") & (sc["threads_label"] == "all")]
    r = one(lap, op="matmul", backend="numpy", size="n=64")
    assert int(r["threads"]) == 4
    assert r["speedup"] == pytest.approx(4.0) and r["efficiency"] == pytest.approx(1.0)
    r = one(lap, op="matmul", backend="torch-cpu", size="n=64", grad_mode="no_grad")
    assert r["speedup"] == pytest.approx(2.0) and r["efficiency"] == pytest.approx(0.5)
    r = one(lap, op="matmul", backend="torch-cpu", size="n=64", grad_mode="grad")
    assert r["speedup"] == pytest.approx(2.2e-4 / 1.25e-4)
    assert r["efficiency"] == pytest.approx(2.2e-4 / 1.25e-4 / 4)
    r = one(lap, op="matmul", backend="numpy", size="n=128")
    assert r["speedup"] == pytest.approx(3.2) and bool(r["noisy"])
    r = one(lap, op="hadamard", backend="numpy", size="n=64")
    assert r["speedup"] == pytest.approx(1.0) and r["efficiency"] == pytest.approx(0.25)
    base = one(sc, series="laptop", op="matmul", backend="numpy", size="n=64", threads_label="1")
    assert base["speedup"] == 1.0 and base["efficiency"] == 1.0
    # GPUs have no thread axis; a group without a 1-thread case has no baseline
    assert "torch-cuda" not in set(sc["backend"])
    assert not ((sc["series"] == "gpubox") & (sc["op"] == "matmul_backward")).any()


def test_backward_over_forward_with_work_ratio(frame: pd.DataFrame) -> None:
    bf = tables.backward_forward(frame)
    lap = bf[bf["series"] == "laptop"]
    expect = {("matmul_backward", "numpy", "1"): 8.8e-4 / 4e-4,
              ("matmul_backward", "torch-cpu", "1"): 5e-4 / 2e-4,
              ("matmul_backward", "numpy", "all"): 2.5e-4 / 1e-4,
              ("matmul_backward", "torch-cpu", "all"): 2e-4 / 1e-4,
              ("hadamard_backward", "numpy", "1"): 5e-5 / 2e-5,
              ("hadamard_backward", "torch-cpu", "1"): 3e-5 / 1e-5}
    got = {(r.op, r.backend, r.threads_label): r.ratio for r in lap.itertuples()}
    assert got == pytest.approx(expect)
    for op, theory in (("matmul_backward", 2.0), ("hadamard_backward", 5 / 3)):
        values = bf[bf["op"] == op]["theory"].tolist()
        assert values == pytest.approx([theory] * len(values)) and values
    # the forward is the plain (no_grad) one, never the graph-recording forward
    r = one(bf, series="gpubox", backend="torch-cuda")
    assert r["forward_s"] == pytest.approx(1e-5) and r["ratio"] == pytest.approx(2.5)


def test_autograd_over_hand_derived(frame: pd.DataFrame) -> None:
    ah = tables.autograd_vs_hand(frame)
    got = {(r.series, r.op, r.backend, r.threads_label): r.ratio for r in ah.itertuples()}
    assert got == pytest.approx({
        ("laptop", "matmul_backward", "torch-cpu", "1"): 5e-4 / 8.8e-4,
        ("laptop", "matmul_backward", "torch-cpu", "all"): 2e-4 / 2.5e-4,
        ("laptop", "hadamard_backward", "torch-cpu", "1"): 3e-5 / 5e-5,
        ("gpubox", "matmul_backward", "torch-cuda", "all"): 2.5e-5 / 2e-4,
    })


def test_grad_cost(frame: pd.DataFrame) -> None:
    gc = tables.grad_cost(frame)
    got = {(r.series, r.backend, r.threads_label): r.ratio for r in gc.itertuples()}
    assert got == pytest.approx({("laptop", "torch-cpu", "1"): 1.1,
                                 ("laptop", "torch-cpu", "all"): 1.25,
                                 ("gpubox", "torch-cuda", "all"): 2.0})


def test_noisy_cells_and_problems(frame: pd.DataFrame) -> None:
    n = tables.noisy_cells(frame)
    assert list(n["case_id"]) == ["matmul/numpy/float32/n=128/threads=all",
                                  "matmul/torch-cpu/float32/n=128/threads=all"]
    # numpy: wide quartiles (IQR = median) and interval; torch: tight quartiles but its
    # interval (min..max of five samples) is +-10%, over the 5% limit
    assert list(n["rel_iqr"]) == pytest.approx([(2e-3 - 1e-3) / 1e-3, 0.0])
    assert list(n["rel_ci"]) == pytest.approx([2.0, 0.1])
    p = tables.problems(frame)
    assert sorted(zip(p["series"], p["status"], p["case_id"], strict=True)) == [
        ("gpubox", "skipped", "hadamard/torch-cuda/float32/n=64/threads=all"),
        ("laptop", "failed", "hadamard/torch-cpu/float32/n=128/threads=1"),
    ]
    g = tables.problem_groups(frame)
    assert list(g["status"]) == ["failed", "skipped"]  # failures first
    assert list(g["reason"]) == ["wrong result: rel_error 0.5 > tolerance 1e-4",
                                 "not enough GPU memory"]
    assert list(g["count"]) == [1, 1]


def test_problem_groups_count_shared_reasons() -> None:
    ms = [meas("matmul", "numpy", 64, 1e-4)] + [
        meas("matmul", "torch-cuda", n, None, threads=None, status="skipped", reason="no CUDA")
        for n in (16, 32, 64)]
    g = tables.problem_groups(to_frame([run("m", ms)]))
    assert len(g) == 1 and g["count"].iloc[0] == 3 and len(g["case_ids"].iloc[0]) == 3


def test_headline_at_largest_size(frame: pd.DataFrame) -> None:
    h = tables.headline(frame)
    lap = h[(h["series"] == "laptop") & (h["op"] == "matmul")]
    assert set(lap["size"]) == {"n=128"}
    got = {r.what: (r.value, r.threads) for r in lap.itertuples()}
    assert got["torch-cpu / numpy"][0] == pytest.approx(1.25)
    assert got["numpy: all threads / 1"][0] == pytest.approx(3.2)
    assert got["numpy: all threads / 1"][1] == 4
    assert got["torch-cpu: all threads / 1"][0] == pytest.approx(2.0)
    box = {r.what: r.value for r in h[(h["series"] == "gpubox") & (h["op"] == "matmul")].itertuples()}
    assert box == pytest.approx({"torch-cpu / numpy": 2.0, "torch-cuda / numpy": 10.0,
                                 "torch-cuda / torch-cpu": 5.0, "numpy: all threads / 1": 3.0,
                                 "torch-cpu: all threads / 1": 3.0})


def test_runs_of_one_machine_are_separate_series() -> None:
    a = run("box", laptop_measurements(), run_id="a")
    b = run("box", laptop_measurements(), run_id="b")
    sp = tables.speedup_table(to_frame([a, b]))
    assert set(sp["series"]) == {"box (a)", "box (b)"}
    # each run is paired with itself only: as many rows as one run alone gives, twice
    alone = tables.speedup_table(to_frame([run("box", laptop_measurements())]))
    assert len(sp) == 2 * len(alone)


def test_the_same_run_loaded_twice_counts_once() -> None:
    r = run("box", gpubox_measurements())
    assert len(tables.time_table(to_frame([r, r]))) == len(tables.time_table(to_frame([r])))


def test_dim_of_non_square_shapes() -> None:
    from bench_suite.core.cases import Case
    from bench_suite.store.results import Measurement

    ms = [Measurement(Case("matmul", "numpy", "float32", (2, 4, 8), 1), "ok", samples_s=(1e-6,)),
          Measurement(Case("hadamard", "numpy", "float32", (2, 8), 1), "ok", samples_s=(1e-6,))]
    df = tables.prepare(to_frame([run("m", ms)]))
    assert list(df["dim"]) == [pytest.approx(4.0), pytest.approx(4.0)]


def test_roofline_columns_carried_when_present(frame: pd.DataFrame) -> None:
    f = frame.assign(peak_gflops=100.0, peak_gbps=50.0, pct_of_peak=12.5,
                     attainable_gflops=80.0)
    t = tables.time_table(f)
    assert {"peak_gflops", "peak_gbps", "pct_of_peak", "attainable_gflops"} <= set(t.columns)
    assert set(t["pct_of_peak"]) == {12.5}
    p = tables.peaks(f)
    assert set(p["device"]) == {"cpu", "cuda:0"} and set(p["peak_gflops"]) == {100.0}
    assert tables.peaks(frame).empty
    assert "pct_of_peak" in tables.run_summary(f).columns
    assert "pct_of_peak" not in tables.run_summary(frame).columns


def test_run_summary_baseline_ignores_grad_mode(frame: pd.DataFrame) -> None:
    s = tables.run_summary(frame[frame["machine"] == "laptop"])
    r = s[s["case_id"] == "matmul/torch-cpu/float32/n=64/threads=1/grad"].iloc[0]
    assert r["speedup_vs_numpy"] == pytest.approx(4e-4 / 2.2e-4)
    failed = s[s["status"] == "failed"].iloc[0]
    assert math.isnan(failed["speedup_vs_numpy"]) and failed["reason"].startswith("wrong result")


def test_run_summary_is_in_the_tables_order_not_the_run_order() -> None:
    # a run's rounds take the cases in a random order; the summary reads like every table
    ms = [meas("hadamard", "torch-cpu", 256, 2e-5), meas("matmul", "numpy", 1024, 1e-2),
          meas("matmul", "numpy", 256, 1e-3), meas("hadamard", "numpy", 256, 3e-5)]
    ids = list(tables.run_summary(to_frame([run("m", ms)]))["case_id"])
    assert ids == ["matmul/numpy/float32/n=256/threads=1", "matmul/numpy/float32/n=1024/threads=1",
                   "hadamard/numpy/float32/n=256/threads=1", "hadamard/torch-cpu/float32/n=256/threads=1"]


def test_empty_frame_gives_empty_tables() -> None:
    f = to_frame([run("m", [meas("matmul", "torch-cuda", 64, None, threads=None,
                                 status="skipped", reason="no CUDA")])])
    for fn in (tables.time_table, tables.speedup_table, tables.thread_scaling,
               tables.backward_forward, tables.autograd_vs_hand, tables.grad_cost,
               tables.noisy_cells, tables.headline):
        assert fn(f).empty, fn.__name__
    assert len(tables.problem_groups(f)) == 1


def test_launch_bound_cases_are_listed_and_noted() -> None:
    from bench_suite.report import render
    from bench_suite.store.results import to_frame
    from tests.report_data import meas, run

    bound = meas("hadamard", "torch-cuda", 256, 5e-6, None,
                 extra={"launch": {"launch_bound": True}, "nvml": {"power_capped": True, "throttled": False}})
    fine = meas("matmul", "torch-cuda", 4096, 2e-3, None, extra={"launch": {"launch_bound": False}})
    cpu = meas("hadamard", "numpy", 256, 1e-5, 1)
    frame = to_frame([run("gpubox", [bound, fine, cpu], gpu="NVIDIA H200")])
    assert frame["launch_bound"].tolist()[:2] == [True, False] and frame["launch_bound"].isna().tolist()[2]
    cells = tables.launch_bound_cells(frame)
    assert cells["case_id"].tolist() == [bound.id]
    summary = tables.run_summary(frame)
    notes = {r.case_id: tables.row_notes(r) for r in summary.itertuples(index=False)}
    # in the tables' order: matmul first, then hadamard on numpy (1 thread) before CUDA (all)
    assert list(notes) == [fine.id, cpu.id, bound.id]
    assert notes == {bound.id: ["launch-bound", "power-capped"], fine.id: [], cpu.id: []}
    lines = tables.gpu_notes(summary)
    assert lines[0].startswith("1 case launch-bound:") and "--cuda-graphs" in lines[0]
    assert lines[1].startswith("1 case power-capped:") and "not throttling" in lines[1]
    md = render.to_markdown(render.build_report([run("gpubox", [bound, fine, cpu])], with_figures=False))
    assert "Launch-bound cases" in md and "--cuda-graphs" in md
    md = render.to_markdown(render.build_report([run("gpubox", [fine, cpu])], with_figures=False))
    assert "Launch-bound" not in md


def test_a_contended_case_says_why() -> None:
    from bench_suite.report.run_summary import _busy

    assert _busy(0.8) == "machine busy (0.8 cores)"
    # too little load to show: the case's own threads waited for a core
    assert _busy(0.0) == _busy(None) == _busy(math.nan) == "machine busy (its threads waited for a core)"
