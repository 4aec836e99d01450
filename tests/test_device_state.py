"""What explains a slow device, read from fakes of NVML, /proc/stat and cpufreq."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_suite.env import device_state, system
from tests.fake_gpu_node import FakeNvml


def test_static_state_marks_our_own_process() -> None:
    nvml = FakeNvml(processes=[11, 22], power_limit_w=500)
    state = device_state.read_gpu_static(nvml, ("handle", 0), own_pid=11)
    assert state["power_limit_w"] == 500 and state["default_power_limit_w"] == 700
    assert [(p["pid"], p["own"]) for p in state["processes"]] == [(11, True), (22, False)]
    assert state["ecc_uncorrected_volatile"] == 0 and state["ecc_uncorrected_aggregate"] is None
    assert state["remapped_rows"] == {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False}
    assert state["pcie_max_width"] == 16 and state["pci_bus_id"] == "00000000:1B:00.0"


def test_a_missing_counter_is_none_not_an_error() -> None:
    class Old(FakeNvml):
        nvmlDeviceGetRemappedRows = None  # an old driver
        nvmlDeviceGetCurrentClocksEventReasons = None

        def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: object) -> int:
            return 0x40

    state = device_state.read_gpu_static(Old(), None)
    assert state["remapped_rows"] is None
    assert device_state.sample_gpu(Old(), None)["reasons"] == 0x40  # the older name still read


def test_summary_reads_clocks_and_link_under_load() -> None:
    idle = {"util_pct": 0, "sm_clock_mhz": 345, "mem_clock_mhz": 1593, "pcie_gen": 1, "pcie_width": 16,
            "reasons": 0x1, "power_w": 70, "temp_c": 30}
    busy = {"util_pct": 100, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "pcie_gen": 5, "pcie_width": 16,
            "reasons": 0x4, "power_w": 700, "temp_c": 70}
    s = device_state.summarize_samples([idle, busy, busy, idle])
    assert (s["samples"], s["under_load"]) == (4, 2)
    assert (s["sm_clock_mhz"], s["mem_clock_mhz"], s["pcie_gen"]) == (1980, 2619, 5)
    # the power cap is reported, but it is not throttling (dense GEMMs hold it routinely)
    assert s["reasons"] == {"sw_power_cap": 1.0} and s["throttled_fraction"] == 0.0
    assert device_state.summarize_samples([idle])["sm_clock_mhz"] == 345  # nothing under load: all


def test_sampler_thread_collects_samples() -> None:
    with device_state.GpuStateSampler(FakeNvml(), None, interval_s=0.001) as sampler:
        import time

        time.sleep(0.05)
    state = sampler.state()
    assert state["available"] and state["load"]["samples"] >= 3


def test_cpu_load_from_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    lines = {0: "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 100 500 0 0 0 0\ncpu1 100 0 0 500 0 0 0 0\n"
                "cpu2 0 0 0 0 0 0 0 0\n",
             1: "cpu  0 0 0 0 0 0 0 0\ncpu0 250 0 150 500 0 0 0 10\ncpu1 200 0 0 550 0 0 0 0\n"
                "cpu2 999 0 0 0 0 0 0 0\n"}
    stat.write_text(lines[0])
    t = iter([0.0, 2.0])
    own = iter([1.0, 1.5])
    monkeypatch.setattr(device_state, "_own_cpu_s", lambda: next(own))
    monkeypatch.setattr(device_state.os, "sysconf", lambda name: 100)
    with device_state.CpuLoadMeter([0, 1], str(stat), clock=lambda: next(t)) as meter:
        stat.write_text(lines[1])
    # cpus 0-1 were busy 300 jiffies = 3 s over 2 s; we used 0.5 s of it; cpu2 is not ours
    assert meter.result["other_cores"] == pytest.approx(1.25)
    assert meter.result["steal_cores"] == pytest.approx(0.05) and meter.result["cores"] == 2


def test_cpufreq_state(tmp_path: Path) -> None:
    for cpu, (gov, cur) in enumerate([("performance", "3000000"), ("performance", "2000000"),
                                      ("powersave", "1000000")]):
        d = tmp_path / f"cpu{cpu}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
        (d / "scaling_driver").write_text("acpi-cpufreq\n")
        (d / "scaling_cur_freq").write_text(cur + "\n")
        (d / "cpuinfo_max_freq").write_text("3500000\n")
    s = system.cpu_frequency_state([0, 1, 2], str(tmp_path))
    assert s["governor"] == "performance" and s["governors"] == {"performance": 2, "powersave": 1}
    assert (s["driver"], s["cur_mhz"], s["max_mhz"]) == ("acpi-cpufreq", 2000.0, 3500.0)
    assert system.cpu_frequency_state([0], str(tmp_path / "none"))["governor"] is None
