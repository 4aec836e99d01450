"""Peaks, the GPU catalogue, the CPU's theoretical peak and the roofline columns."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench_suite import load_runs
from bench_suite.analysis import catalogue, roofline
from bench_suite.core.cases import Case
from bench_suite.core.errors import ResultsFileError
from bench_suite.store import peaks as peaks_file
from bench_suite.store.peaks import Peak, PeakSet
from bench_suite.store.results import Measurement, Run, save_run, to_frame

# --- the catalogue ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "key"), [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", "h100-nvl"),
    ("NVIDIA H200", "h200-sxm"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
    ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
    ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("Tesla V100-SXM2-32GB", "v100-sxm2"),
    ("Tesla V100-PCIE-16GB", "v100-pcie"),
    ("nvidia  h100 80gb hbm3", "h100-sxm"),  # case and spacing do not matter
])
def test_exact_names(name: str, key: str) -> None:
    match = catalogue.lookup_gpu(name)
    assert match is not None and match.spec.key == key and match.how == "exact"


@pytest.mark.parametrize(("name", "key"), [
    ("NVIDIA H100 SXM5 94GB", "h100-sxm"),
    ("H100 PCIe 80GB", "h100-pcie"),
    ("NVIDIA H200 NVL 141GB", "h200-nvl"),
    ("NVIDIA A100-SXM-80GB", "a100-sxm-80gb"),
    ("A100 PCIe 80GB", "a100-pcie-80gb"),
    ("Tesla V100S-PCIE-32GB ", "v100s-pcie"),
])
def test_fuzzy_names(name: str, key: str) -> None:
    match = catalogue.lookup_gpu(name)
    assert match is not None and match.spec.key == key


@pytest.mark.parametrize("name", ["", "NVIDIA L40S", "NVIDIA GeForce RTX 4090 Laptop GPU",
                                  "Tesla T4", "AMD Instinct MI300X", "NVIDIA GH200 480GB"])
def test_unknown_gpus(name: str) -> None:
    assert catalogue.lookup_gpu(name) is None
    assert catalogue.datasheet_peaks(name) == []


def test_catalogue_figures_are_sane() -> None:
    keys = set()
    for spec in catalogue.CATALOGUE:
        assert spec.key not in keys
        keys.add(spec.key)
        assert spec.source.startswith("https://")
        assert 1e11 <= spec.bytes_per_s <= 1e13
        assert set(spec.flops) <= set(peaks_file.PEAK_DTYPES)
        # dense figures: a tensor-core 16-bit rate is never below fp32, fp64 never above fp32
        assert spec.flops["float16"] >= spec.flops["float32"] >= spec.flops["float64"]
    h100 = {p.dtype: p for p in catalogue.datasheet_peaks("NVIDIA H100 80GB HBM3", "cuda:1")}
    assert h100["bfloat16"].flops_per_s == pytest.approx(989.5e12)
    assert h100["float32"].bytes_per_s == pytest.approx(3.35e12)
    assert h100["float32"].device == "cuda:1" and h100["float32"].source == "datasheet"
    assert "https://" in h100["float32"].note
    assert "bfloat16" not in {p.dtype for p in catalogue.datasheet_peaks("Tesla V100-PCIE-16GB")}


# --- the CPU ------------------------------------------------------------------------------

INTEL = {"model": "Intel(R) Xeon(R) Platinum 8480+", "usable_cores": 4, "mhz": 2000.0,
         "simd": ["avx2", "fma", "avx512f"]}


def test_cpu_theoretical_peak_arithmetic() -> None:
    spec = roofline.cpu_spec(INTEL, clock_hz=3e9, clock_source="test")
    assert spec is not None
    assert spec.flops_per_cycle("float32") == 64 and spec.flops_per_cycle("float64") == 32
    assert spec.flops_per_s("float32", 1) == pytest.approx(192e9)
    peaks = roofline.cpu_theoretical_peaks(spec, "m", dtypes=("float32",), bytes_per_s=20e9)
    assert [(p.threads, p.flops_per_s) for p in peaks] == [(1, pytest.approx(192e9)),
                                                           (4, pytest.approx(768e9))]
    assert all(p.source == "theoretical" and p.bytes_per_s == 20e9 for p in peaks)
    assert "512-bit" in peaks[0].note and "test" in peaks[0].note


@pytest.mark.parametrize(("model", "flags", "fp32", "bf16"), [
    ("AMD EPYC 9654", ["avx2", "fma", "avx512f", "avx512_bf16"], 32, 64),  # Zen 4
    ("Intel Xeon", ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"], 64, 1024),
    ("Intel Core i7-9700", ["avx", "avx2", "fma"], 32, 32),
    ("Intel Xeon E5-2670", ["avx"], 16, 16),
    ("Neoverse", ["asimd"], 16, 16),
])
def test_cpu_vector_width_and_units(model: str, flags: list[str], fp32: int, bf16: int) -> None:
    spec = roofline.cpu_spec({"model": model, "usable_cores": 2, "simd": flags}, clock_hz=1e9)
    assert spec is not None
    assert spec.flops_per_cycle("float32") == fp32
    assert spec.flops_per_cycle("bfloat16") == bf16


def test_cpu_clock_sources(tmp_path: Path) -> None:
    sysfs = tmp_path / "max"
    sysfs.write_text("3500000\n")
    assert roofline.cpu_clock_hz(2600.0, str(sysfs)) == (3.5e9, pytest.approx(
        "cpufreq cpuinfo_max_freq (maximum, turbo included)"))
    hz, source = roofline.cpu_clock_hz(2600.0, str(tmp_path / "absent"))
    assert hz == 2.6e9 and "/proc/cpuinfo" in source
    assert roofline.cpu_clock_hz(None, str(tmp_path / "absent")) == (None, "unknown")
    assert roofline.cpu_spec({"usable_cores": 0}) is None


# --- the roofline -------------------------------------------------------------------------


def test_attainable() -> None:
    assert roofline.attainable(100.0, 1e12, 1e10) == 1e12  # compute-bound: above the ridge
    assert roofline.attainable(10.0, 1e12, 1e10) == pytest.approx(1e11)  # memory-bound
    assert roofline.ridge_point(1e12, 1e10) == 100.0
    assert roofline.attainable(10.0, 1e12, None) == 1e12  # no memory roof
    assert roofline.attainable(10.0, None, 1e10) == pytest.approx(1e11)
    assert math.isnan(roofline.attainable(10.0, None, None))


def meas(op: str, backend: str, n: int, median_s: float, threads: int | None = 1,
         dtype: str = "float32", device_name: str = "cpu model") -> Measurement:
    shape = (n, n, n) if op.startswith("matmul") else (n, n)
    case = Case(op, backend, dtype, shape, threads)
    return Measurement(case, "ok", samples_s=(median_s * 0.99, median_s, median_s * 1.01),
                       number=1, threads=threads, device_name=device_name, stop="converged")


def a_run(ms: list[Measurement], machine: str = "box", cores: int = 2) -> Run:
    env = {"machine": machine, "cpu": {"model": "Intel Xeon", "usable_cores": cores,
                                       "mhz": 2000.0, "simd": ["avx2", "fma"]}}
    return Run("r1", machine, "2026-01-01T00:00:00+00:00", env, {}, tuple(ms))


def test_roofline_columns_against_measured_and_datasheet() -> None:
    ms = [
        meas("matmul", "numpy", 64, 1e-5, threads=2),  # 2*64^3 FLOPs in 10 us: 52.4288 GFLOP/s
        meas("hadamard", "numpy", 64, 1e-6, threads=2),  # 3*64*64*4 bytes in 1 us: 49.152 GB/s
        meas("matmul", "numpy", 64, 1e-5, threads=1),  # no 1-thread peak: scaled from 2 cores
        meas("matmul", "torch-cuda", 64, 1e-6, threads=None, device_name="NVIDIA H100 80GB HBM3"),
        meas("matmul", "numpy", 64, 1e-5, threads=2, dtype="float64"),  # no peak at all
    ]
    peaks = [Peak("cpu", "float32", 100e9, 10e9, "measured", machine="box", backend="numpy",
                  threads=2),
             Peak("cpu", "float32", 80e9, 12e9, "measured", machine="box", backend="torch-cpu",
                  threads=2),
             Peak("cpu", "float32", 1e12, 10e9, "measured", machine="other", threads=2)]
    df = roofline.add_roofline_columns(to_frame([a_run(ms)]), peaks)
    assert set(roofline.ROOFLINE_COLUMNS) <= set(df.columns)
    mm, had, one, gpu, f64 = (df.iloc[i] for i in range(5))
    # the best FLOP/s over backends, the best bandwidth over backends, this machine only
    assert mm.peak_gflops == pytest.approx(100) and mm.peak_gbps == pytest.approx(12)
    assert mm.attainable_gflops == pytest.approx(100)  # intensity 10.67 x 12 GB/s > 100
    assert mm.pct_of_peak == pytest.approx(52.4288)
    # memory-bound: the percentage is achieved GB/s over the bandwidth
    assert had.intensity == pytest.approx(1 / 12)
    assert had.attainable_gflops == pytest.approx(12 / 12)
    assert had.pct_of_peak == pytest.approx(100 * 49.152 / 12)
    assert one.peak_gflops == pytest.approx(50) and "scaled 1/2" in one.peak_source
    assert one.pct_of_peak == pytest.approx(100 * 52.4288 / 50)
    # the GPU: no measured peak, the datasheet found by name
    assert math.isnan(gpu.pct_of_peak)
    assert gpu.datasheet_gflops == pytest.approx(67e3) and gpu.datasheet_gbps == pytest.approx(3350)
    # n=64 is memory-bound on an H100: intensity 128/12 FLOP/B x 3350 GB/s < 67 TFLOP/s
    assert gpu.attainable_datasheet_gflops == pytest.approx(128 / 12 * 3350)
    assert gpu.pct_of_datasheet == pytest.approx(100 * 524.288 / (128 / 12 * 3350))
    assert gpu.datasheet_source == "datasheet"
    assert math.isnan(f64.peak_gflops) and math.isnan(f64.pct_of_peak) and f64.peak_source == ""
    assert df["pct_of_peak"].dtype == "float64"


def test_roofline_columns_without_catalogue_and_empty() -> None:
    ms = [meas("matmul", "torch-cuda", 64, 1e-6, threads=None, device_name="NVIDIA L4")]
    frame = to_frame([a_run(ms)])
    assert math.isnan(roofline.add_roofline_columns(frame, catalogue=False).iloc[0].datasheet_gflops)
    assert roofline.add_roofline_columns(frame).iloc[0].datasheet_gflops == pytest.approx(30.3e3)
    empty = roofline.add_roofline_columns(frame.iloc[:0])
    assert empty.empty and "pct_of_peak" in empty.columns
    assert "pct_of_peak" not in frame.columns  # the input is not changed


# --- peaks files and discovery ------------------------------------------------------------


def a_peakset(machine: str = "box") -> PeakSet:
    return PeakSet(machine, "2026-01-01T00:00:00+00:00", {"machine": machine}, {"x": 1}, (
        Peak("cpu", "float32", 300e9, 20e9, "measured", "best of n=64", "cpu model", machine,
             "numpy", 2, {"best_n": 64}),
        Peak("cpu", "float32", 330e9, None, "theoretical", "theory", "cpu model", machine,
             threads=2),
    ))


def test_peaks_file_round_trip(tmp_path: Path) -> None:
    ps = a_peakset()
    path = peaks_file.save_peaks(ps, tmp_path / "sub" / "peaks.json")
    back = peaks_file.load_peaks(path)
    assert back.peaks == ps.peaks and back.machine == "box" and back.config == {"x": 1}
    assert back.peaks[0].details == {"best_n": 64}
    data = json.loads(path.read_text())
    assert data["schema"] == "bench-suite/peaks" and data["version"] == 1


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(schema="bench-suite/run"), "not a bench-suite peaks file"),
    (lambda d: d.update(version=99), "version 99"),
    (lambda d: d.update(peaks={}), "'peaks' must be a list"),
    (lambda d: d["peaks"][0].update(flops_per_s=-1), "flops_per_s"),
    (lambda d: d["peaks"][0].update(source="guess"), "source"),
    (lambda d: d["peaks"][0].update(threads=True), "threads"),
])
def test_bad_peaks_files(tmp_path: Path, mutate: object, message: str) -> None:
    data = a_peakset().to_dict()
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "peaks.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError, match=message):
        peaks_file.load_peaks(path)


def test_peak_record_validates() -> None:
    with pytest.raises(ValueError):
        Peak("cpu", "float32", math.inf, None, "measured")
    with pytest.raises(ValueError):
        Peak("cpu", "float32", 1.0, None, "rumour")


def test_report_finds_peaks_beside_runs_and_loaders_skip_them(tmp_path: Path) -> None:
    run = a_run([meas("matmul", "numpy", 64, 1e-5, threads=2)])
    save_run(run, tmp_path / "r1.json")
    peaks_file.save_peaks(a_peakset(), tmp_path / "peaks.json")
    runs = load_runs([tmp_path])  # the folder holds a peaks file: it is not read as a run
    assert [r.run_id for r in runs] == ["r1"]
    peaks = roofline.peaks_for_runs(runs)
    assert {p.source for p in peaks} == {"measured", "theoretical"}
    df = roofline.add_roofline_columns(to_frame(runs), peaks)
    assert df.iloc[0].peak_gflops == pytest.approx(300)
    assert df.iloc[0].datasheet_gflops == pytest.approx(330)  # the file's, not the env's


def test_report_without_peaks_file_uses_the_environment() -> None:
    run = a_run([meas("matmul", "numpy", 64, 1e-5, threads=2)], cores=2)
    peaks = roofline.peaks_for_runs([run])
    assert {p.source for p in peaks} == {"theoretical"}
    df = roofline.add_roofline_columns(to_frame([run]), peaks)
    # AVX2 + FMA: 32 FLOP/cycle/core x 2 cores x 2 GHz
    assert df.iloc[0].datasheet_gflops == pytest.approx(128)
    assert df.iloc[0].datasheet_source == "theoretical (no memory roof)"
    assert math.isnan(df.iloc[0].pct_of_peak)


def test_roofline_figure() -> None:
    from bench_suite.report.roofline_plot import roofline_figure

    ms = [meas("matmul", "numpy", 64, 1e-5, threads=2), meas("hadamard", "torch-cpu", 64, 1e-6, 1),
          meas("matmul", "torch-cuda", 64, 1e-6, threads=None, device_name="NVIDIA H100 80GB HBM3")]
    frame = to_frame([a_run(ms)])
    bare = roofline_figure(frame)  # no peaks: points only
    assert bare is not None and len(bare.axes) == 2
    df = roofline.add_roofline_columns(frame, [a_peakset().peaks[0]])
    fig = roofline_figure(df)
    assert fig is not None
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any(label.startswith("measured roof · float32") for label in labels)
    assert any(label.startswith("datasheet roof · float32") for label in labels)
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in fig.axes)
    nothing = frame.assign(status="failed")
    assert roofline_figure(nothing) is None


def test_roofline_registered_with_the_report() -> None:
    from bench_suite.report import figures, render

    assert "roofline" in {s.name for s in figures.registered()}
    from bench_suite.report.roofline_plot import roofline_columns

    assert roofline_columns in render.FRAME_HOOKS


@pytest.mark.parametrize(("precision", "tf32", "want"), [
    ("highest", False, 19.5e3), ("highest", True, 156e3), ("high", False, 156e3)])
def test_gpu_datasheet_from_the_run_environment(precision: str, tf32: bool, want: float) -> None:
    run = a_run([meas("matmul", "torch-cuda:1", 2048, 1e-3, threads=None, device_name="")])
    env = dict(run.env, torch={"float32_matmul_precision": precision, "allow_tf32_matmul": tf32,
                               "gpus": [{"index": 0, "name": "NVIDIA L4"},
                                        {"index": 1, "name": "NVIDIA A100-SXM4-80GB"}]})
    run = Run(run.run_id, run.machine, run.created_at, env, {}, run.measurements)
    peaks = roofline.peaks_for_runs([run])
    a100 = {p.dtype: p for p in peaks if p.device == "cuda:1"}
    assert a100["float32"].flops_per_s == pytest.approx(want * 1e9)
    assert ("TF32" in a100["float32"].note) == (want > 20e3)
    # the run's own record of its card wins, even where the measurement has no device name
    df = roofline.add_roofline_columns(to_frame([run]), peaks)
    assert df.iloc[0].datasheet_gflops == pytest.approx(want)
    assert df.iloc[0].datasheet_gbps == pytest.approx(2039)
