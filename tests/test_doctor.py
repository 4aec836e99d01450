"""``bench-suite doctor``: the GPU verdicts through a fake device and a fake NVML (healthy,
degraded PCIe link, lowered power limit, thermal throttling, other processes, unknown model),
the CPU verdict rules on made-up states, the reference table, and the real CPU probe."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import bench_suite
from bench_suite import backends
from bench_suite.analysis import catalogue, diagnosis
from bench_suite.analysis.diagnosis import FigureCheck, Finding
from bench_suite.core.errors import ResultsFileError, UsageError
from bench_suite.env import device_state
from bench_suite.frontends import cli
from bench_suite.measure import doctor
from bench_suite.measure.doctor import DoctorConfig
from bench_suite.store import peaks as peaks_file
from tests.fake_gpu_node import H100, FakeGpu, FakeNvml

#: A probe sized for fakes: one small matmul (its reference is cheap), a 64 MiB copy.
FAST = DoctorConfig(time_budget_s=0.05, gpu_sizes=(512,), gpu_copy_bytes=64 << 20,
                    cpu_sizes=(128,), cpu_copy_bytes=8 << 20, nvml_interval_s=0)


def gpu_check(nvml: FakeNvml, gpu: FakeGpu, reference: diagnosis.ReferenceTable | None = None) -> diagnosis.DeviceCheck:
    report = doctor.run_doctor([gpu.name], FAST, reference, machine="node1",
                               backend_for=lambda _n: gpu, nvml=nvml)
    (check,) = report.devices
    assert nvml.inits == nvml.shutdowns == (0 if nvml.state["fail_init"] else 1)
    return check


@pytest.fixture(autouse=True)
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 2)


def test_a_healthy_h100_is_normal() -> None:
    check = gpu_check(FakeNvml(), FakeGpu(flops_per_s=790e12, bytes_per_s=3.05e12))
    assert check.verdict == "normal" and check.cause == ""
    assert check.model == H100 and check.reference_title == "H100 SXM5 80GB"
    matmul, copy = check.figures
    assert matmul.name == "matmul_bfloat16" and matmul.reference == pytest.approx(794.5e12)
    assert matmul.pct == pytest.approx(100 * 790 / 794.5, rel=0.02) and not matmul.low
    assert copy.pct == pytest.approx(100 * 3.05 / 3.0, rel=0.02)
    assert "ml-engineering" in matmul.source
    # hitting the power cap under a dense matmul is a note, not a fault
    assert [f.text for f in check.findings] == ["at its power cap under load (690 W): expected for "
                                                "dense matmuls at full power"]
    assert check.state["pcie_max_width"] == 16 and check.state["load"]["pcie_width"] == 16


def test_a_degraded_pcie_link_is_below_normal() -> None:
    check = gpu_check(FakeNvml(pcie_width=8), FakeGpu(flops_per_s=790e12))
    assert check.verdict == "below normal"
    assert check.cause == "PCIe link at x8 of x16"
    gen = gpu_check(FakeNvml(pcie_gen=3), FakeGpu(flops_per_s=790e12))
    assert gen.verdict == "below normal" and gen.cause == "PCIe link at Gen3 of Gen5 under load"


def test_a_lowered_power_limit_explains_a_slow_matmul() -> None:
    check = gpu_check(FakeNvml(power_limit_w=500, power_w=499), FakeGpu(flops_per_s=640e12))
    assert check.verdict == "below normal"
    assert check.cause == "power limit lowered to 500 W (default 700 W)"
    assert check.figures[0].low and not check.figures[1].low


def test_thermal_throttling_explains_a_slow_matmul() -> None:
    nvml = FakeNvml(reasons=0x20 | 0x4, temp_c=91, sm=1410)
    check = gpu_check(nvml, FakeGpu(flops_per_s=600e12))
    assert check.verdict == "below normal" and check.cause == "throttled: thermal (up to 91 °C)"
    assert check.state["load"]["reasons"]["sw_thermal_slowdown"] == 1.0


def test_other_processes_explain_a_slow_device_first() -> None:
    nvml = FakeNvml(processes=[os.getpid(), 4242], power_limit_w=600)
    check = gpu_check(nvml, FakeGpu(flops_per_s=500e12, bytes_per_s=2.0e12))
    assert check.verdict == "below normal"
    assert check.cause == "1 other process on the GPU (pid 4242, 2.0 GiB)"
    # the lowered limit is still reported, as a fault of its own
    assert any(f.fault and f.text.startswith("power limit lowered to 600 W") for f in check.findings)


def test_a_slow_device_with_a_clean_state_says_so() -> None:
    check = gpu_check(FakeNvml(reasons=0), FakeGpu(flops_per_s=500e12))
    assert check.verdict == "below normal"
    assert check.cause.startswith("not explained by the device state")


def test_an_unknown_model_still_prints_and_points_to_peaks() -> None:
    check = gpu_check(FakeNvml(name="NVIDIA Fake 9000"), FakeGpu(model="NVIDIA Fake 9000"))
    assert check.verdict == "unknown model" and check.reference_title == ""
    assert all(f.reference is None and f.measured for f in check.figures)  # measured all the same
    assert "bench-suite peaks --backends torch-cuda:0" in check.advice
    # a fault still makes it below normal
    faulty = gpu_check(FakeNvml(name="NVIDIA Fake 9000", pcie_width=4), FakeGpu(model="NVIDIA Fake 9000"))
    assert faulty.verdict == "below normal" and faulty.cause == "PCIe link at x4 of x16"


def test_ecc_errors_and_row_remapping_are_faults() -> None:
    check = gpu_check(FakeNvml(ecc_uncorrected=2, remap=(0, 1, 1, 0)), FakeGpu(flops_per_s=790e12))
    assert check.verdict == "below normal"
    assert check.cause == "2 uncorrectable ECC errors since the driver loaded"
    assert "row remapping pending: the GPU needs a reset" in [f.text for f in check.findings]


def test_without_nvml_the_figures_still_judge() -> None:
    check = gpu_check(FakeNvml(fail_init=True), FakeGpu(flops_per_s=790e12))
    assert check.verdict == "normal"
    assert check.state == {"available": False, "reason": "NVML unavailable: NVMLError: Driver Not Loaded"}
    assert check.findings[-1].text.startswith("device state not read")


def test_a_peaks_file_is_a_reference_for_its_device(tmp_path: Path) -> None:
    unknown = "NVIDIA Fake 9000"
    ps = peaks_file.PeakSet("healthy", "2026-01-01", {}, {}, (
        peaks_file.Peak("cuda:0", "bfloat16", 400e12, 2e12, "measured", device_name=unknown,
                      backend="torch-cuda"),))
    path = peaks_file.save_peaks(ps, tmp_path / "healthy.json")
    table = diagnosis.load_reference(path)
    slow = gpu_check(FakeNvml(name=unknown), FakeGpu(model=unknown, flops_per_s=300e12,
                                                     bytes_per_s=2e12), table)
    assert slow.verdict == "below normal" and slow.figures[0].pct == pytest.approx(75, rel=0.02)
    assert str(path) in slow.figures[0].source


def test_the_reference_table_has_a_source_for_every_entry() -> None:
    table = diagnosis.packaged_reference()
    assert {"h100-sxm", "h200-sxm"} <= set(table.gpus)
    assert table.gpus["h100-sxm"].figures["matmul_bfloat16"].value == pytest.approx(794.5e12)
    assert table.gpus["h200-sxm"].figures["matmul_bfloat16"].value == pytest.approx(790e12)
    assert table.gpus["h100-sxm"].figures["copy"].value == pytest.approx(3.0e12)
    assert table.gpus["h200-sxm"].figures["copy"].value == pytest.approx(4.3e12)
    for key, model in table.gpus.items():
        assert key in {s.key for s in catalogue.CATALOGUE}, key
        for ref in model.figures.values():
            assert ref.source.startswith("https://") and ref.note
    assert table.cpu.figures["matmul_float32"].derived == "theoretical"
    assert table.for_gpu("NVIDIA H200") is table.gpus["h200-sxm"]


@pytest.mark.parametrize(("change", "message"), [
    ({"normal_at_least": 2}, "expected a fraction"),
    ({"gpus": {"x": {"figures": {"copy": {"value": 1e12, "unit": "B/s"}}}}}, "needs its source"),
    ({"gpus": {"x": {"figures": {"copy": {"value": -1, "unit": "B/s", "source": "s"}}}}}, "positive"),
    ({"version": 9}, "version 9"),
])
def test_a_malformed_reference_table_is_one_line(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = json.loads((Path(bench_suite.__file__).parent / "data" / diagnosis.REFERENCE_FILE).read_text())
    data.update(change)
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsFileError, match=message):
        diagnosis.load_reference(path)


def test_judge_rules() -> None:
    ok = FigureCheck("matmul_bfloat16", "matmul", "FLOP/s", 95.0, 100.0)
    low = FigureCheck("copy", "copy", "B/s", 80.0, 100.0)
    none = FigureCheck("copy", "copy", "B/s", 80.0, None)
    clock = Finding("memory clock at 1593 of 2619 MHz under load", explains=frozenset({"copy"}))
    fault = Finding("PCIe link at x8 of x16", fault=True, explains=frozenset({"h2d"}))
    assert diagnosis.judge([ok], [], True) == ("normal", "")
    assert diagnosis.judge([ok, low], [fault, clock], True) == ("below normal", clock.text)
    assert diagnosis.judge([ok], [fault], True) == ("below normal", fault.text)
    assert diagnosis.judge([none], [], False) == ("unknown model", "")
    unmeasured = FigureCheck("matmul_bfloat16", "matmul", "FLOP/s", None, 100.0, note="n=512 failed")
    assert diagnosis.judge([unmeasured], [], True) == ("below normal", "matmul could not be measured: n=512 failed")


def test_cpu_findings() -> None:
    state = {"governor": "powersave", "driver": "acpi-cpufreq", "cpu": {"simd": ["avx2", "fma", "avx512f"]},
             "blas": [{"user_api": "blas", "internal_api": "openblas", "architecture": "Haswell"}],
             "load": {"cores": 8, "other_cores": 3.2, "steal_cores": 0.0}}
    texts = [f.text for f in diagnosis.cpu_findings(state)]
    assert texts == ["other processes used 3.2 of 8 cores during the probe",
                     "CPU frequency governor 'powersave' (acpi-cpufreq)",
                     "openblas runs its 'Haswell' kernel on a CPU with AVX-512 (OPENBLAS_CORETYPE set, "
                     "or an old OpenBLAS?)"]
    calm = {"governor": "powersave", "driver": "intel_pstate", "cpu": {"simd": ["avx2", "fma"]},
            "blas": [{"user_api": "blas", "internal_api": "openblas", "architecture": "Haswell"}],
            "load": {"cores": 8, "other_cores": 0.1, "steal_cores": 1.5}}
    assert [f.text for f in diagnosis.cpu_findings(calm)] == [
        "the hypervisor took 1.5 of 8 cores (steal time)"]
    assert "no optimized BLAS" in diagnosis.cpu_findings({"blas": []})[0].text


def test_cpu_probe_gives_a_verdict() -> None:
    report = doctor.run_doctor(["numpy"], FAST, machine="vm")
    (cpu,) = report.devices
    assert cpu.device == "cpu" and cpu.verdict in diagnosis.VERDICTS
    names = [f.label for f in cpu.figures]
    assert names[:2] == ["matmul float32, 1 core", "matmul float64, 1 core"]
    assert any(f.name == "copy" for f in cpu.figures)
    assert "load" in cpu.state and "blas" in cpu.state
    doc = json.loads(diagnosis.as_json(report))
    assert doc["schema"] == "bench-suite/doctor" and doc["exit_status"] == report.exit_status


# --- the command line -----------------------------------------------------------------------


def test_cli_doctor_json_and_exit_status(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    gpus = {"torch-cuda:0": FakeGpu("torch-cuda:0", flops_per_s=790e12),
            "torch-cuda:1": FakeGpu("torch-cuda:1", flops_per_s=600e12)}
    monkeypatch.setitem(backends.FACTORIES, "torch-cuda", lambda name: gpus[name])
    monkeypatch.setattr(device_state, "_pynvml", lambda: FakeNvml(power_limit_w=450))
    monkeypatch.setattr(doctor, "DoctorConfig", lambda time_budget_s: FAST)
    rc = cli.main(["doctor", "--backends", "torch-cuda:all", "--json", "--quiet"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 == out["exit_status"]
    assert [(d["device"], d["verdict"]) for d in out["devices"]] == [
        ("cuda:0", "below normal"), ("cuda:1", "below normal")]
    assert out["devices"][1]["cause"] == "power limit lowered to 450 W (default 700 W)"
    rc = cli.main(["doctor", "--backends", "torch-cuda:1", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1 and "verdict: below normal: power limit lowered to 450 W" in text
    assert "% of reference" in text and "H100 SXM5 80GB" in text


def test_cli_doctor_all_normal_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(backends.FACTORIES, "torch-cuda", lambda name: FakeGpu(name, flops_per_s=790e12))
    monkeypatch.setattr(device_state, "_pynvml", lambda: FakeNvml())
    monkeypatch.setattr(doctor, "DoctorConfig", lambda time_budget_s: FAST)
    assert cli.main(["doctor", "--backends", "torch-cuda:0", "--quiet"]) == 0
    assert "verdict: normal" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["--backends", "torch-cuda:5"], "torch-cuda:5: only 2 visible"),
    (["--backends", "torch-cuda,torch-cuda:0"], "named twice"),
    (["--backends", "cuda"], "unknown backend"),
    (["--reference", "/no/such/file.json"], "no such file"),
])
def test_cli_doctor_bad_input_is_one_line_exit_2(argv: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unknown_cuda_index_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(backends.DEVICE_COUNTERS, "torch-cuda", lambda: 0)
    with pytest.raises(UsageError, match="no CUDA device is visible"):
        doctor.check_backends(["torch-cuda"])
    assert doctor.default_backends() == ("numpy",)


def test_a_probe_that_fails_is_the_devices_verdict_not_a_crash() -> None:
    class Broken(FakeGpu):
        def copy_buffers(self, nbytes: int, seed: int) -> Any:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    check = gpu_check(FakeNvml(), Broken())
    assert check.verdict == "below normal"
    assert check.cause == ("the probe failed: RuntimeError: CUDA error: an illegal memory access "
                           "was encountered")
    assert all(f.measured is None for f in check.figures)
