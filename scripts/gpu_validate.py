#!/usr/bin/env python3
"""Checks of the suite's CUDA paths against independent tools, for ``scripts/gpu_check.sh``.

One subcommand per step of the GPU check; each adds its section to one JSON file
(``--json``, default ``validate.json``) and prints a few lines. ``summary`` prints the short
table that ``gpu_check.sh`` shows last.

    preflight  --facts FILE --work DIR  does torch see CUDA? device facts, commit; the GPU's
                                        name for file names (``DIR/gpu-name``). Without CUDA:
                                        one line and exit status 2, within seconds
    clocks                              NVML timeline (every 20 ms) of an idle card, then 2 s
                                        of bf16 n=8192 matmuls; and a TF32 probe
    compare                             bf16, fp16, fp32 and tf32 matmuls at n=4096 and 8192
                                        timed by the suite (warm and cold), triton's do_bench
                                        (median) and torch.utils.benchmark's Timer, side by
                                        side; Hadamard fp32 GB/s at n=4096 and 8192 over the
                                        measured device copy bandwidth
    tiny                                small cases: CUDA-event time, CUDA-graph time, the
                                        host's enqueue time and the profiler's kernel time
    summary    --steps FILE [--facts F --tests F --out F]
                                        the short table, from the steps' records, the JSON,
                                        the run files and peaks.json beside it

Goals checked (``summary``): the suite within 3% of do_bench; Hadamard at least 0.90 of the
copy bandwidth; a graph's time per call never below the profiler's kernel time.

Runs from the copied tree (``PYTHONPATH=$PWD``); needs torch with CUDA; triton and
nvidia-ml-py where present (their parts are skipped, and say so, where not). Every part that
fails records its error and the others go on. Never changes clocks, power limits or modes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Goals (issue #11): |suite / do_bench - 1| within this; Hadamard / copy at least this; a
#: graph's time per call at least this fraction of the profiler's kernel time.
GOAL_VS_DO_BENCH = 0.03
GOAL_HADAMARD_OVER_COPY = 0.90
GOAL_GRAPH_OVER_KERNEL = 0.97

COMPARE_DTYPES = ("bfloat16", "float16", "float32", "tf32")
COMPARE_SIZES = (4096, 8192)
HADAMARD_SIZES = (4096, 8192)
#: Tiny cases: (op, dtype, n); the launch-bound kind (hadamard, half-precision matmul and the
#: backward ops at n <= 1024).
TINY_CASES = (("hadamard", "float32", 256), ("hadamard", "float32", 1024),
              ("matmul", "float16", 256), ("matmul", "bfloat16", 1024),
              ("matmul_backward", "float32", 256), ("hadamard_backward", "float32", 1024))
TIMELINE_IDLE_S, TIMELINE_LOAD_S, TIMELINE_INTERVAL_S = 3.0, 2.0, 0.02
PROFILED_CALLS = 200


# --- small helpers (no torch: unit-tested on any machine) ----------------------------------


def slug(name: str) -> str:
    """A GPU name as a machine name and folder: ``NVIDIA H200`` -> ``NVIDIA-H200``."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")
    return out[:100] or "gpu"


def load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_section(path: Path, name: str, section: Any) -> None:
    """Add or replace one section of the JSON file (written whole, then renamed)."""
    data = load_json(path)
    data[name] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    return str(value)


def clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


@contextlib.contextmanager
def part(record: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """A part of a step: its results go in ``record[name]``; an exception is recorded there
    (with the last lines of its traceback) and the step goes on."""
    out: dict[str, Any] = {}
    record[name] = out
    t0 = time.perf_counter()
    try:
        yield out
    except Exception as exc:
        out["error"] = error_text(exc)
        out["traceback"] = traceback.format_exc().strip().splitlines()[-6:]
        print(f"  {name}: ERROR {out['error']}", flush=True)
    finally:
        out["wall_s"] = round(time.perf_counter() - t0, 3)


def fmt_s(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def fmt_num(value: Any, spec: str = ".3g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def summarize_timeline(samples: Sequence[Mapping[str, Any]], max_sm: float | None) -> dict[str, Any]:
    """What an NVML timeline shows: the idle clock, how long the clock took to reach 90% of
    its maximum once the load began, the clock, power and reasons under load."""
    from bench_suite.env.nvml import POWER_CAP, THROTTLING, reason_names

    def phase(name: str) -> list[Mapping[str, Any]]:
        return [s for s in samples if s.get("phase") == name]

    def median(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
        vals = sorted(float(s[key]) for s in rows if isinstance(s.get(key), (int, float)))
        return vals[len(vals) // 2] if vals else None

    idle, load = phase("idle"), phase("load")
    ramp = None
    if load and max_sm:
        t_start = load[0]["t_s"]
        for s in load:
            if isinstance(s.get("sm_clock_mhz"), (int, float)) and s["sm_clock_mhz"] >= 0.9 * max_sm:
                ramp = round(s["t_s"] - t_start, 3)
                break
    known = [s for s in load if s.get("reasons") is not None]
    capped = sum(bool(POWER_CAP.intersection(reason_names(s["reasons"]))) for s in known)
    throttled = sum(bool(THROTTLING.intersection(reason_names(s["reasons"]))) for s in known)
    powers = [float(s["power_w"]) for s in load if isinstance(s.get("power_w"), (int, float))]
    return {
        "samples": len(samples), "max_sm_clock_mhz": max_sm,
        "idle_sm_clock_mhz": median(idle, "sm_clock_mhz"),
        "load_sm_clock_mhz": median(load, "sm_clock_mhz"),
        "load_mem_clock_mhz": median(load, "mem_clock_mhz"),
        "seconds_to_90pct_clock": ramp,
        "load_power_w_median": median(load, "power_w"),
        "load_power_w_max": max(powers) if powers else None,
        "load_temp_c_max": max((s["temp_c"] for s in load if isinstance(s.get("temp_c"), (int, float))),
                               default=None),
        "power_capped_fraction": capped / len(known) if known else None,
        "throttled_fraction": throttled / len(known) if known else None,
    }


# --- steps that need torch and CUDA ---------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def cmd_preflight(args: argparse.Namespace) -> int:
    """Fail within seconds, in one line, where there is nothing to check."""
    try:
        torch = _torch()
    except ImportError as exc:
        print(f"gpu_check: torch cannot be imported ({error_text(exc)}): nothing to check")
        return 2
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
        print(f"gpu_check: no CUDA GPU here ({why}; torch {torch.__version__}): nothing to check")
        return 2
    from bench_suite.env import collect as env_mod

    name = torch.cuda.get_device_name(0)
    gpu = slug(name)
    facts: dict[str, Any] = {"gpu": gpu, "name": name}
    try:
        facts["env"] = env_mod.collect(gpu, torch=True)
    except Exception as exc:  # recorded: the facts below still help
        facts["env_error"] = error_text(exc)
    props = torch.cuda.get_device_properties(0)
    facts["device"] = {
        "name": name, "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "l2_cache_bytes": int(getattr(props, "L2_cache_size", 0) or 0) or None,
        "total_memory_bytes": int(props.total_memory),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "triton": _version("triton"), "nvidia-ml-py": _version("nvidia-ml-py"),
    }
    facts["nvidia_smi"] = _nvidia_smi()
    git = env_mod.git_info()
    facts["git"] = git
    args.facts.parent.mkdir(parents=True, exist_ok=True)
    args.facts.write_text(json.dumps(clean(facts), indent=1, default=_json_default) + "\n", encoding="utf-8")
    if args.work:
        (args.work / gpu).mkdir(parents=True, exist_ok=True)
        (args.work / "gpu-name").write_text(gpu + "\n", encoding="utf-8")
    d = facts["device"]
    gpus = (facts.get("env") or {}).get("torch", {}).get("gpus") or [{}]
    print(f"gpu: {name} (sm_{d['compute_capability'].replace('.', '')}, {d['multiprocessors']} SMs, "
          f"L2 {(d['l2_cache_bytes'] or 0) >> 20} MiB, {d['total_memory_bytes'] / 2**30:.0f} GiB), "
          f"driver {gpus[0].get('driver')}, torch {d['torch']}, CUDA {d['cuda']}, triton {d['triton']}")
    commit = git.get("commit")
    print(f"commit: {commit} ({git.get('source', 'git')})" if commit else
          "commit: UNKNOWN (pass BENCH_SUITE_COMMIT=$(git rev-parse HEAD) in the command)")
    print(f"machine name: {gpu}")
    return 0


def _version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> str | None:
    query = ("name,driver_version,pstate,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,"
             "temperature.gpu,persistence_mode,compute_mode,ecc.mode.current")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {error_text(exc)}"
    return (out.stdout or out.stderr).strip()[:2000]


def _cuda_backend() -> Any:
    from bench_suite.backends import get_backend

    return get_backend("torch-cuda")


def _suite_time(ready: Any, cold: bool = False, graphs: bool = False, budget: float = 0.5) -> dict[str, Any]:
    """The suite's own timing of a ready case (``measure.gpu.options.time_case``): median per call."""
    from bench_suite.core import stats
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.measure.gpu.options import TimingMode, time_case

    config = SamplingPlan(time_budget_s=budget, target_rel_ci=0.005, min_samples=10)
    options = TimingMode(cold_cache=cold, cuda_graphs=graphs, nvml=False)
    timing, extra = time_case(ready.case, ready.backend, ready.prepared, config, time.perf_counter_ns, options)
    s = stats.summarize(timing.samples_s)
    return {"median_s": s.median, "rel_ci": s.rel_ci, "samples": s.n, "number": timing.number,
            "stop": timing.stop, "launch": extra.get("launch"), "warmup": extra.get("warmup"),
            "cuda_graph": extra.get("cuda_graph")}


def _do_bench(fn: Callable[[], object]) -> dict[str, Any]:
    try:
        from triton.testing import do_bench
    except ImportError as exc:
        return {"skipped": f"triton not importable: {error_text(exc)}"}
    ms = do_bench(fn, warmup=25, rep=200, return_mode="median")
    return {"median_s": float(ms) * 1e-3, "how": "triton.testing.do_bench(warmup=25, rep=200, "
            "return_mode='median'): events per call, L2 cleared before each"}


def _timer(fn: Callable[[], object]) -> dict[str, Any]:
    from torch.utils.benchmark import Timer

    m = Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.3)
    return {"median_s": float(m.median), "blocks": len(m.times), "number_per_run": m.number_per_run,
            "how": "torch.utils.benchmark.Timer.blocked_autorange(min_run_time=0.3): host clock, "
                   "CUDA synchronized"}


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return a / b
    return None


def cmd_compare(args: argparse.Namespace) -> int:
    from bench_suite.core import ops
    from bench_suite.core.cases import Case
    from bench_suite.measure import harness
    from bench_suite.measure.peaks import PeaksConfig, measure_copy

    backend = _cuda_backend()
    record: dict[str, Any] = {"matmul": [], "hadamard": {}}
    for n in COMPARE_SIZES:
        for dtype in COMPARE_DTYPES:
            case = Case("matmul", "torch-cuda", dtype, (n, n, n))
            row: dict[str, Any] = {"case": case.id, "dtype": dtype, "n": n, "flops": ops.flops(case)}
            record["matmul"].append(row)
            with part(row, "run") as out, harness.ready(case, 0, backend) as ready:
                out["rel_error"] = ready.rel_error
                row["suite"] = _suite_time(ready)
                row["suite_cold"] = _suite_time(ready, cold=True)
                with part(row, "do_bench_part"):
                    row["do_bench"] = _do_bench(ready.call)
                with part(row, "timer_part"):
                    row["timer"] = _timer(ready.call)
            suite = (row.get("suite") or {}).get("median_s")
            cold = (row.get("suite_cold") or {}).get("median_s")
            db = (row.get("do_bench") or {}).get("median_s")
            tm = (row.get("timer") or {}).get("median_s")
            row["suite_over_do_bench"] = _ratio(suite, db)
            row["suite_cold_over_do_bench"] = _ratio(cold, db)
            row["suite_over_timer"] = _ratio(suite, tm)
            row["tflops"] = ops.flops(case) / suite / 1e12 if suite else None
            print(f"  matmul {dtype:>8} n={n}: suite {fmt_s(suite)} (cold {fmt_s(cold)}), do_bench "
                  f"{fmt_s(db)}, Timer {fmt_s(tm)}; suite/do_bench {fmt_num(row['suite_over_do_bench'], '.3f')}"
                  f", {fmt_num(row['tflops'], '.0f')} TFLOP/s", flush=True)
            save_section(args.json, "compare", clean(record))
    had = record["hadamard"]
    with part(had, "copy") as out:
        bw, details = measure_copy(backend, None, PeaksConfig(time_budget_s=0.5, copy_bytes=1 << 30))
        out.update(bytes_per_s=bw, **details)
        print(f"  device copy (2 x 1 GiB, read + written): {fmt_num((bw or 0) / 1e9, '.0f')} GB/s", flush=True)
    copy_bw = had["copy"].get("bytes_per_s")
    had["cases"] = []
    for n in HADAMARD_SIZES:
        case = Case("hadamard", "torch-cuda", "float32", (n, n))
        row = {"case": case.id, "n": n, "bytes": ops.bytes_moved(case)}
        had["cases"].append(row)
        with part(row, "run"):
            with harness.ready(case, 0, backend) as ready:
                row["suite"] = _suite_time(ready)
            median = row["suite"]["median_s"]
            row["gbps"] = ops.bytes_moved(case) / median / 1e9
            row["over_copy"] = _ratio(ops.bytes_moved(case) / median, copy_bw)
            print(f"  hadamard float32 n={n}: {row['gbps']:.0f} GB/s = "
                  f"{fmt_num(row['over_copy'], '.3f')} of the copy", flush=True)
        save_section(args.json, "compare", clean(record))
    return 0


def kernel_time_per_call(call: Callable[[], object], sync: Callable[[], None],
                         calls: int = PROFILED_CALLS) -> dict[str, Any]:
    """The GPU's busy time per call by the profiler: the summed durations of the device
    activities (kernels, memsets, copies) of ``calls`` calls, divided by ``calls``."""
    torch = _torch()
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        call()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        sync()
    cuda_type = torch.autograd.DeviceType.CUDA
    total_us, kernels, names = 0.0, 0, set()
    for e in prof.events():
        if getattr(e, "device_type", None) == cuda_type:
            total_us += float(e.time_range.elapsed_us())
            kernels += 1
            names.add(e.name)
    method = "events"
    if kernels == 0:  # older profilers: device time only in the averages
        method = "key_averages"
        for e in prof.key_averages():
            if getattr(e, "device_type", None) == cuda_type:
                total_us += float(getattr(e, "self_device_time_total", 0.0) or 0.0)
                kernels += int(e.count)
                names.add(e.key)
    return {"kernel_s": total_us * 1e-6 / calls if kernels else None, "calls": calls,
            "device_activities": kernels, "kernels": sorted(names)[:8], "method": method}


def cmd_tiny(args: argparse.Namespace) -> int:
    from bench_suite.core.cases import Case
    from bench_suite.measure import harness

    backend = _cuda_backend()
    rows: list[dict[str, Any]] = []
    for op, dtype, n in TINY_CASES:
        shape = (n, n, n) if op.startswith("matmul") else (n, n)
        case = Case(op, "torch-cuda", dtype, shape)
        row: dict[str, Any] = {"case": case.id}
        rows.append(row)
        with part(row, "run"):
            with harness.ready(case, 0, backend) as ready:
                plain = _suite_time(ready, budget=0.3)
                graphs = _suite_time(ready, graphs=True, budget=0.3)
                kernel = kernel_time_per_call(ready.call, ready.synchronize)
            launch = plain.get("launch") or {}
            row.update(
                events_s=plain["median_s"], graph_s=graphs["median_s"],
                host_enqueue_s=launch.get("host_enqueue_s"), launch_bound=launch.get("launch_bound"),
                host_over_device=launch.get("ratio"), kernel_s=kernel["kernel_s"], profiler=kernel,
                graph=graphs.get("cuda_graph"),
                graph_over_kernel=_ratio(graphs["median_s"], kernel["kernel_s"]),
            )
            print(f"  {case.id}: events {fmt_s(row['events_s'])}, graphs {fmt_s(row['graph_s'])}, host "
                  f"enqueue {fmt_s(row['host_enqueue_s'])}, kernel {fmt_s(row['kernel_s'])}, "
                  f"launch-bound {row['launch_bound']}", flush=True)
        save_section(args.json, "tiny", clean(rows))
    return 0


def cmd_clocks(args: argparse.Namespace) -> int:
    record: dict[str, Any] = {}
    with part(record, "timeline") as out:
        out.update(nvml_timeline(TIMELINE_IDLE_S, TIMELINE_LOAD_S, TIMELINE_INTERVAL_S))
        t = out.get("summary", {})
        print(f"  NVML: idle {t.get('idle_sm_clock_mhz')} MHz -> 90% of {t.get('max_sm_clock_mhz')} MHz in "
              f"{t.get('seconds_to_90pct_clock')} s; load {t.get('load_sm_clock_mhz')} MHz, "
              f"{t.get('load_power_w_median')} W, power-capped {fmt_num(t.get('power_capped_fraction'), '.0%')}, "
              f"throttled {fmt_num(t.get('throttled_fraction'), '.0%')}; "
              f"{fmt_num(out.get('tflops'), '.0f')} TFLOP/s", flush=True)
    save_section(args.json, "clocks", clean(record))
    with part(record, "tf32") as out:
        out.update(tf32_probe())
        print(f"  TF32 probe: {out.get('verdict')}", flush=True)
    save_section(args.json, "clocks", clean(record))
    return 0


def nvml_timeline(idle_s: float, load_s: float, interval_s: float, n: int = 8192) -> dict[str, Any]:
    """NVML every ``interval_s``: ``idle_s`` of an idle card, then bf16 n x n matmuls for
    ``load_s`` (synchronized every 10 calls), then a short tail."""
    torch = _torch()
    from bench_suite.env.nvml import NvmlSampler, nvml_session

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    z = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    out: dict[str, Any] = {"n": n, "dtype": "bfloat16", "interval_s": interval_s}
    calls = 0
    with nvml_session(0, interval_s=interval_s) as sampler:
        nv = sampler if isinstance(sampler, NvmlSampler) else None
        if nv is None:
            out["nvml"] = sampler
        if nv is not None:
            nv.phase("idle")
        time.sleep(idle_s)
        if nv is not None:
            nv.phase("load")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < load_s:
            for _ in range(10):
                torch.matmul(x, y, out=z)
            calls += 10
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if nv is not None:
            nv.phase("after")
        time.sleep(0.3)
    out.update(calls=calls, seconds=elapsed, tflops=calls * 2 * n**3 / elapsed / 1e12)
    if nv is not None:
        samples = [{k: v for k, v in s.items() if k != "reason_names"} for s in nv.samples]
        out["samples"] = samples
        out["summary"] = summarize_timeline(samples, nv.max_sm_clock())
    return out


def tf32_probe(n: int = 4096) -> dict[str, Any]:
    """float32 n x n matmul with fp32_precision "ieee" and "tf32": time and error against
    float64. TF32 is active when it is much faster and its error is TF32's (about 1e-4..1e-3)."""
    torch = _torch()
    from bench_suite.backends.torch_backend import set_tf32_matmul
    from bench_suite.env import collect as env_mod

    out: dict[str, Any] = {"n": n, "before": env_mod.precision_info(torch)}
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", generator=g)
    b = torch.randn(n, n, device="cuda", generator=g)
    ref = a.double() @ b.double()
    for mode in ("ieee", "tf32"):
        restore = set_tf32_matmul(torch, mode == "tf32")
        try:
            c = a @ b
            err = float((c.double() - ref).norm() / ref.norm())
            times = []
            for _ in range(3):
                c = a @ b
            for _ in range(10):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                a @ b
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
            times.sort()
            out[mode] = {"rel_error": err, "median_s": times[len(times) // 2],
                         "tflops": 2 * n**3 / times[len(times) // 2] / 1e12}
        finally:
            restore()
    out["after"] = env_mod.precision_info(torch)
    out["restored"] = out["after"].get("matmul_fp32_precision") == out["before"].get("matmul_fp32_precision")
    ieee, tf32 = out["ieee"], out["tf32"]
    speedup = ieee["median_s"] / tf32["median_s"]
    active = tf32["rel_error"] > 10 * ieee["rel_error"] and speedup > 1.5
    out["speedup"] = speedup
    out["active"] = active
    # the suite's own tf32 case, verified and timed, and the setting restored after it
    from bench_suite.core.cases import Case
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.measure.gpu.options import TimingMode
    from bench_suite.measure.runner import RunOptions, run_case

    m = run_case(Case("matmul", "torch-cuda", "tf32", (n, n, n)), _cuda_backend(),
                 RunOptions(timing=SamplingPlan(time_budget_s=0.3), gpu=TimingMode(nvml=False)))
    out["suite_case"] = {"status": m.status, "reason": m.reason, "rel_error": m.rel_error,
                         "median_s": m.summary.median if m.status == "ok" else None,
                         "tflops": m.flops / m.summary.median / 1e12 if m.status == "ok" else None,
                         "restored": env_mod.precision_info(torch).get("matmul_fp32_precision")
                         == out["before"].get("matmul_fp32_precision")}
    out["verdict"] = (f"{'TF32 ACTIVE' if active else 'TF32 NOT ACTIVE'}: {speedup:.1f}x faster than "
                      f"ieee, error {tf32['rel_error']:.2g} vs {ieee['rel_error']:.2g}; suite tf32 case "
                      f"{m.status} {fmt_num(out['suite_case']['tflops'], '.0f')} TFLOP/s, setting "
                      f"{'restored' if out['restored'] and out['suite_case']['restored'] else 'NOT restored'}")
    return out


# --- the summary ----------------------------------------------------------------------------


def read_steps(path: Path) -> list[dict[str, Any]]:
    """``gpu_check.sh``'s step records: name, status, rc, wall seconds, limit, note (tabs)."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = line.split("\t")
        if len(parts) < 5:
            continue
        rows.append({"name": parts[0], "status": parts[1], "rc": parts[2], "wall_s": parts[3],
                     "limit_s": parts[4], "note": parts[5] if len(parts) > 5 else ""})
    return rows


def tests_line(path: Path | None) -> str | None:
    """pytest's last summary line ("== 41 passed, 3 skipped in 30.2s =="), from its output."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if re.search(r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b", line) and " in " in line:
            return line.strip("= ").strip()
    return lines[-1].strip() if lines else None


def peaks_lines(path: Path) -> list[str]:
    """Measured peaks beside the datasheet's, one line (from ``bench-suite peaks``' file)."""
    if not path.is_file():
        return []
    from bench_suite.measure.peaks import peaks_table
    from bench_suite.store.peaks import load_peaks

    try:
        table = peaks_table(load_peaks(path))
    except Exception as exc:
        return [f"peaks: unreadable ({error_text(exc)})"]
    parts = []
    for r in table.itertuples(index=False):
        pct = r.pct_of_reference
        parts.append(f"{r.dtype} {r.gflops / 1e3:.0f}" + (f" ({pct:.0f}%)" if pct == pct else ""))
    gbps = [r.gbps for r in table.itertuples(index=False) if r.gbps == r.gbps]
    copy = f"; copy {max(gbps):.0f} GB/s" if gbps else ""
    return ["peaks TFLOP/s (% of datasheet): " + ", ".join(parts) + copy] if parts else []


def render_summary(steps: Sequence[Mapping[str, Any]], data: Mapping[str, Any],
                   facts: Mapping[str, Any], runs: Sequence[Mapping[str, Any]] = (),
                   extra_lines: Sequence[str] = ()) -> list[str]:
    """The short table printed last: steps, device, and the figures each goal is judged by."""
    out = []
    d = facts.get("device") or {}
    git = facts.get("git") or {}
    out.append(f"== gpu_check summary: {d.get('name', '?')} sm_{str(d.get('compute_capability', '?')).replace('.', '')}"
               f", {d.get('multiprocessors', '?')} SMs, L2 {(d.get('l2_cache_bytes') or 0) >> 20} MiB, torch "
               f"{d.get('torch', '?')}, CUDA {d.get('cuda', '?')}; commit {str(git.get('commit') or 'UNKNOWN')[:12]}")
    out.append(f"{'step':<15}{'status':<9}{'wall':>6}{'limit':>7}  note")
    for s in steps:
        out.append(f"{s['name']:<15}{s['status']:<9}{s['wall_s']:>5}s{s['limit_s']:>6}s  {s.get('note', '')}"[:120])
    goals: list[str] = []
    cmp_ = data.get("compare") or {}
    mm = cmp_.get("matmul") or []
    if mm:
        out.append("matmul       suite    cold  do_bench   Timer  s/db   TFLOP/s")
        within = 0
        for r in mm:
            ratio = r.get("suite_over_do_bench")
            within += isinstance(ratio, (int, float)) and abs(ratio - 1) <= GOAL_VS_DO_BENCH
            out.append(f"{r.get('dtype', '?'):>8} {r.get('n', '?'):>5} "
                       f"{fmt_s((r.get('suite') or {}).get('median_s')):>8}"
                       f"{fmt_s((r.get('suite_cold') or {}).get('median_s')):>8}"
                       f"{fmt_s((r.get('do_bench') or {}).get('median_s')):>9}"
                       f"{fmt_s((r.get('timer') or {}).get('median_s')):>8}"
                       f"{fmt_num(ratio, '.3f'):>6}{fmt_num(r.get('tflops'), '.0f'):>9}"
                       + (f"  {(r.get('run') or {}).get('error')}" if (r.get('run') or {}).get('error') else ""))
        goals.append(f"suite within {GOAL_VS_DO_BENCH:.0%} of do_bench: {within}/{len(mm)}")
    had = cmp_.get("hadamard") or {}
    if had:
        bw = (had.get("copy") or {}).get("bytes_per_s")
        cases = had.get("cases") or []
        parts = [f"n={c.get('n')} {fmt_num(c.get('gbps'), '.0f')} GB/s = {fmt_num(c.get('over_copy'), '.2f')}"
                 for c in cases]
        out.append(f"hadamard fp32 over copy ({fmt_num((bw or 0) / 1e9, '.0f')} GB/s): " + "; ".join(parts))
        good = sum(isinstance(c.get("over_copy"), (int, float)) and c["over_copy"] >= GOAL_HADAMARD_OVER_COPY
                   for c in cases)
        goals.append(f"hadamard >= {GOAL_HADAMARD_OVER_COPY:.2f} of copy: {good}/{len(cases)}")
    tiny = data.get("tiny") or []
    if tiny:
        out.append("tiny case                                   events  graphs    host  kernel  bound  g/k")
        good = 0
        for r in tiny:
            gk = r.get("graph_over_kernel")
            good += isinstance(gk, (int, float)) and gk >= GOAL_GRAPH_OVER_KERNEL
            out.append(f"{str(r.get('case', '?'))[:42]:<42}{fmt_s(r.get('events_s')):>8}{fmt_s(r.get('graph_s')):>8}"
                       f"{fmt_s(r.get('host_enqueue_s')):>8}{fmt_s(r.get('kernel_s')):>8}"
                       f"{str(r.get('launch_bound'))[:5]:>7}{fmt_num(gk, '.2f'):>5}"
                       + (f" {(r.get('run') or {}).get('error')}" if (r.get('run') or {}).get('error') else ""))
        goals.append(f"graph time >= kernel time: {good}/{len(tiny)}")
    clocks = data.get("clocks") or {}
    t = (clocks.get("timeline") or {})
    if t:
        s = t.get("summary") or {}
        out.append(f"clocks: idle {s.get('idle_sm_clock_mhz')} MHz, 90% of max {s.get('max_sm_clock_mhz')} MHz "
                   f"after {s.get('seconds_to_90pct_clock')} s of load; load {s.get('load_sm_clock_mhz')} MHz, "
                   f"{s.get('load_power_w_median')} W (max {s.get('load_power_w_max')}), power-capped "
                   f"{fmt_num(s.get('power_capped_fraction'), '.0%')}, throttled "
                   f"{fmt_num(s.get('throttled_fraction'), '.0%')}; bf16 n=8192 {fmt_num(t.get('tflops'), '.0f')} "
                   f"TFLOP/s" + (f"; {t['error']}" if t.get("error") else "")
                   + (f"; NVML: {t['nvml']}" if t.get("nvml") else ""))
    tf = clocks.get("tf32") or {}
    if tf:
        out.append("tf32: " + str(tf.get("verdict") or tf.get("error")))
    out.extend(extra_lines)
    for r in runs:
        out.append(f"run {r['name']}: " + ", ".join(f"{k} {v}" for k, v in r["counts"].items())
                   + (f"; launch-bound {r['launch_bound']}" if r.get("launch_bound") else "")
                   + (f"; failed: {r['failed'][0]}" if r.get("failed") else ""))
    if goals:
        out.append("goals: " + "; ".join(goals))
    return out


def run_counts(folder: Path) -> list[dict[str, Any]]:
    """ok/failed/skipped counts of each run file in ``folder`` (journals of killed runs too)."""
    from bench_suite.store.results import read_run_file

    out = []
    for path in sorted(folder.glob("run-*.json*")):
        try:
            run = read_run_file(path)
        except Exception as exc:
            out.append({"name": path.name, "counts": {"unreadable": error_text(exc)}})
            continue
        counts: dict[str, Any] = {}
        for m in run.measurements:
            counts[m.status] = counts.get(m.status, 0) + 1
        if not run.complete:
            counts["complete"] = "no"
        failed = [f"{m.id}: {m.reason}"[:160] for m in run.measurements if m.status == "failed"]
        bound = sum(1 for m in run.measurements
                    if isinstance(m.extra.get("launch"), Mapping) and m.extra["launch"].get("launch_bound") is True)
        out.append({"name": path.name, "counts": counts, "failed": failed, "launch_bound": bound})
    return out


def cmd_summary(args: argparse.Namespace) -> int:
    data = load_json(args.json)
    facts = load_json(args.facts) if args.facts else {}
    runs = run_counts(args.json.parent) if args.json.parent.is_dir() else []
    extra = peaks_lines(args.json.parent / "peaks.json")
    tests = tests_line(args.tests)
    if tests:
        extra.insert(0, f"tests (-m gpu): {tests}")
    lines = render_summary(read_steps(args.steps), data, facts, runs, extra)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


# --- entry point ----------------------------------------------------------------------------


def create_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_validate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=Path("validate.json"), help="the results file")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("preflight")
    s.add_argument("--facts", type=Path, required=True)
    s.add_argument("--work", type=Path)
    s.set_defaults(func=cmd_preflight)
    for name, func in (("clocks", cmd_clocks), ("compare", cmd_compare), ("tiny", cmd_tiny)):
        sub.add_parser(name).set_defaults(func=func)
    s = sub.add_parser("summary")
    s.add_argument("--steps", type=Path, required=True)
    s.add_argument("--facts", type=Path)
    s.add_argument("--tests", type=Path, help="pytest's output (its last summary line is shown)")
    s.add_argument("--out", type=Path)
    s.set_defaults(func=cmd_summary)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = create_parser().parse_args(argv)
    if args.command not in ("preflight", "summary"):
        torch = _torch()
        if not torch.cuda.is_available():
            print(f"gpu_validate {args.command}: no CUDA GPU visible to torch {torch.__version__}")
            return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
