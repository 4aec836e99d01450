"""The command line: argument parsing and printing only.

Every subcommand turns its arguments into a plain call of the library and prints what comes
back. Errors a user can cause are ``BenchSuiteError``s, turned into one line and exit status 2
in :func:`main` and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench_suite.core import cases as cases_mod
from bench_suite.core.errors import BenchSuiteError, UsageError
from bench_suite.core.verdict import CORRECTIONS, DEFAULT_ALPHA, DEFAULT_CORRECTION

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


#: Rounds of a `run` of the default and full presets (quick has 4: cases.Preset.rounds):
#: enough for the spread between rounds to stand for the spread between runs, so that the
#: documented compare workflow is sound (docs/compare.md).
DEFAULT_ROUNDS = 5
#: Rounds of an `ab` by default: enough pairs for the paired test to reach significance over
#: a family of 16 cases (docs/compare.md), within 90 s on 2 cores.
DEFAULT_AB_ROUNDS = 8
#: Paired rounds `calibrate` measures: more than a comparison's, so the noise it states is
#: itself known to within about a quarter.
DEFAULT_CALIBRATE_ROUNDS = 12


def _rounds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"rounds must be 1..1000: {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed must be 0..2**63-1: {text!r}")
    return value


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--preset", default="quick", help=f"one of {', '.join(cases_mod.PRESETS)} (default: quick)")
    g.add_argument("--ops", help=f"comma-separated: {', '.join(cases_mod.OPS)}")
    g.add_argument("--backends", help=f"comma-separated: {', '.join(cases_mod.BACKENDS)}, torch-cuda:N, "
                   "torch-cuda:all (every visible GPU)")
    g.add_argument("--dtypes", help=f"comma-separated: {', '.join(cases_mod.DTYPES)}")
    g.add_argument("--sizes", help=f"comma-separated: {cases_mod.SIZES_HELP}")
    g.add_argument("--threads", help="comma-separated thread counts, or 'all' (every usable core)")
    g.add_argument("--grad-modes", help="for torch forward ops: no_grad, grad (default both)")
    g.add_argument("--activations", help=f"linear ops: {', '.join(cases_mod.ACTIVATIONS)} "
                   "(default relu; others add /act=NAME to the case id)")
    g.add_argument("--host-memory", help="h2d and d2h: pageable, pinned (default both; pinned "
                   "adds /mem=pinned to the case id)")
    g.add_argument("--create-on", help="create: device (where the array is used), host (made "
                   "there, then copied over; CUDA only, adds /on=host) (default both)")


def _add_verdict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", default="5%", help="smallest change that counts: 5%% or 0.05 (default 5%%)")
    p.add_argument("--alpha", default=str(DEFAULT_ALPHA),
                   help=f"significance level after the multiple-testing correction (default {DEFAULT_ALPHA})")
    p.add_argument("--format", choices=("text", "md", "html", "json"),
                   help="output format (default: from the -o suffix, else text)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the comparison here instead of stdout")


def create_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bench-suite",
        description="Time matmul, the Hadamard product and autograd backward across numpy, "
        "torch-cpu and torch-cuda; verify every result; report the speedups.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run a sweep and save its measurements")
    _add_sweep_args(p)
    p.add_argument("--out", help="run file (.json) or folder (default: results/<machine>/)")
    p.add_argument("--seed", type=_seed, default=0, help="input seed (default 0)")
    p.add_argument("--time-budget", type=_positive_float, help="seconds per case (default: the preset's)")
    p.add_argument("--target", type=_positive_float, default=0.01,
                   help="stop sampling when the median is known to +-this fraction (default 0.01)")
    p.add_argument("--min-samples", type=int, default=10,
                   help="samples at least, over all rounds, and at least 5 a round (default 10)")
    p.add_argument("--rounds", type=_rounds, metavar="R",
                   help="measure the sweep R times, each round in a fresh process, cases in a seeded "
                   "random order; the time budget is shared between the rounds and the ± is the "
                   "spread between them (default: the preset's, 4 for quick and 5 for the others; "
                   "1: one pass in this process)")
    p.add_argument("--machine", help="machine name to file results under (default: host name)")
    p.add_argument("--report", metavar="DIR", help="also write a report of this run to DIR")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    g = p.add_argument_group("reliability")
    g.add_argument("--isolate", action="store_true",
                   help="run each case in a fresh worker process: a crash, abort or hang fails "
                   "that case only, and the run goes on")
    g.add_argument("--case-timeout", type=_positive_float, metavar="SECONDS",
                   help="with --isolate: kill a case's worker after this long "
                   "(default 30 + 10 x the time budget)")
    g.add_argument("--resume", metavar="FILE",
                   help="continue an interrupted run (its .json, or the .json.journal of a killed "
                   "run) with its saved sweep and settings; finished cases are not run again")
    g = p.add_argument_group(
        "many devices", "torch-cuda:all gives every visible GPU its own cases. Under torchrun or "
        "srun each rank measures its own GPU (or its share of the cores) and rank 0 gathers the "
        "results into one run set")
    g.add_argument("--concurrent", action="store_true",
                   help="one process per GPU named by --backends (e.g. torch-cuda:all), all at "
                   "once, as a busy node runs (shared power and cooling); gathered like torchrun")
    g.add_argument("--gather-timeout", type=_positive_float, default=3600.0, metavar="SECONDS",
                   help="ranks: how long rank 0 waits for slower ranks after its own sweep "
                   "(default 3600); a rank silent for 60 s is given up at once")
    g.add_argument("--join-timeout", type=_positive_float, default=300.0, metavar="SECONDS",
                   help="ranks: how long they wait for each other at the start; a rank still "
                   "missing then is a bad launch (exit 2) (default 300)")
    g = p.add_argument_group("GPU timing (harmless without a GPU)")
    g.add_argument("--cold-cache", action="store_true",
                   help="flush the caches (GPU L2, CPU last level) before every call, outside the "
                   "timed region; each call is timed on its own")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="CUDA cases: capture many calls into one CUDA graph and time its replays "
                   "(kernels shorter than their launch)")
    g.add_argument("--nvml", action=argparse.BooleanOptionalAction, default=None,
                   help="sample GPU clocks, temperature, power and throttle reasons around each "
                   "CUDA case (default: on where nvidia-ml-py and a driver are present)")
    p.set_defaults(func=cmd_run, defaults_of=p.get_default)  # --resume: which options were given

    p = sub.add_parser("list", help="list the cases a sweep would run, with skip reasons")
    _add_sweep_args(p)
    p.add_argument("--ids", action="store_true", help="case ids only, one per line")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("env", help="show the machine and software environment")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--machine", help="machine name (default: host name)")
    p.set_defaults(func=cmd_env)

    p = sub.add_parser(
        "report", help="write an HTML/Markdown/CSV report with figures from run files",
        description="Write DIR/index.html (self-contained), DIR/summary.md (fits a CI job summary "
        "or a pull-request comment), DIR/results.csv and DIR/figures/*.png. Several runs (other "
        "machines or GPUs) are shown side by side.",
    )
    p.add_argument("paths", nargs="+", metavar="PATHS",
                   help="run files, journals of interrupted runs, or folders of them; also asv "
                   "results folders (.asv/results) and pytest-benchmark JSON files")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder to write the report to")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "compare", help="compare two sets of runs case by case; exit 1 on a regression",
        description="Pair the cases of BASE and CAND by id; per case the ratio of medians, its "
        "bootstrap interval, a Mann-Whitney U test and a verdict. Exit status: 0 no regression, "
        "1 at least one case significantly slower beyond the threshold, 2 bad input.",
    )
    p.add_argument("base", metavar="BASE",
                   help="run file, journal or results folder (the reference)")
    p.add_argument("cand", metavar="CAND", help="run file, journal or results folder (the candidate)")
    _add_verdict_args(p)
    p.add_argument("--combine", choices=("pool", "latest"), default="pool",
                   help="several measurements of a case on one side: pool their samples (default) "
                   "or keep the latest")
    p.add_argument("--correction", choices=CORRECTIONS, default=DEFAULT_CORRECTION,
                   help="multiple-testing correction over the cases: bh (Benjamini-Hochberg), holm "
                   f"or none (default {DEFAULT_CORRECTION})")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "ab", help="A/B two interpreters: rounds side by side in fresh processes, then compare; "
        "exit 1 on a regression",
        description="Measure the sweep with two Python interpreters (virtual environments, or "
        "wrapper scripts that set environment variables), round by round, each round a fresh "
        "process per side, the cases of a round in a seeded random order and measured on both "
        "sides back to back, so that drift of the machine hits both alike. Writes DIR/base.json "
        "and DIR/cand.json, prints the comparison (paired test on the rounds) and exits as "
        "compare does: 0 no regression, 1 a case significantly slower beyond the threshold, 2 "
        "bad input (also a BASE or CAND that cannot import bench-suite).",
    )
    p.add_argument("base", metavar="BASE", help="the reference interpreter, e.g. venv-a/bin/python")
    p.add_argument("cand", metavar="CAND", help="the candidate interpreter")
    _add_sweep_args(p)
    p.add_argument("--rounds", type=_rounds, default=DEFAULT_AB_ROUNDS, metavar="R",
                   help=f"rounds per side (default {DEFAULT_AB_ROUNDS})")
    p.add_argument("--out", metavar="DIR", help="folder for base.json and cand.json "
                   "(default: results/<machine>/ab-<date>/)")
    p.add_argument("--seed", type=_seed, default=0, help="input and order seed (default 0)")
    p.add_argument("--time-budget", type=_positive_float,
                   help="seconds per case and side, shared by the rounds (default: the preset's)")
    p.add_argument("--target", type=_positive_float, default=0.01,
                   help="per round: stop sampling when the median is known to +-this fraction")
    p.add_argument("--min-samples", type=int, default=10,
                   help="samples at least, over all rounds, and at least 5 a round (default 10)")
    p.add_argument("--case-timeout", type=_positive_float, metavar="SECONDS",
                   help="kill a case's worker after this long (default 30 + 10 x the round's budget)")
    p.add_argument("--machine", help="machine name to file results under (default: host name)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    _add_verdict_args(p)
    p.set_defaults(func=cmd_ab)

    p = sub.add_parser(
        "calibrate", help="measure each case's run-to-run noise on this machine (A/A rounds)",
        description="Run the sweep against itself (an A/A ab with this interpreter on both sides) "
        "and save each case's noise as results/<machine>/noise.json. compare and report then state, "
        "per case, the smallest change a comparison on this machine can detect.",
    )
    _add_sweep_args(p)
    p.add_argument("--rounds", type=_rounds, default=DEFAULT_CALIBRATE_ROUNDS, metavar="R",
                   help=f"paired rounds (default {DEFAULT_CALIBRATE_ROUNDS})")
    p.add_argument("--time-budget", type=_positive_float,
                   help="seconds per case and side, shared by the rounds (default: the preset's)")
    p.add_argument("--out", metavar="FILE", help="noise profile (default: results/<machine>/noise.json)")
    p.add_argument("--keep", metavar="DIR", help="also keep the two A/A run files in DIR")
    p.add_argument("--machine", help="machine name (default: host name)")
    p.add_argument("--seed", type=_seed, default=0, help="input and order seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "peaks", help="measure each device's best matmul FLOP/s and copy GB/s (for rooflines)",
        description="Per backend and dtype: the best median matmul rate over a few large sizes, "
        "and the bandwidth of a large device copy (bytes read + written); CPU on one thread and "
        "on every core. Saved with the environment, the CPU's theoretical peak and any GPU's "
        "datasheet figures; reports of runs in the same folder use them.",
    )
    p.add_argument("--backends", help="comma-separated (default: numpy, torch-cpu, and every "
                   "visible torch-cuda)")
    p.add_argument("--dtypes", help="comma-separated (default: float32,float64 on the CPU; "
                   "float64,float32,float16,bfloat16 on a GPU)")
    p.add_argument("--sizes", help="comma-separated square sizes to try (default: 1024,1536,2048 "
                   "on the CPU; 2048,4096,8192 on a GPU)")
    p.add_argument("--threads", help="CPU thread counts (default: 1,all)")
    p.add_argument("--time-budget", type=_positive_float, default=0.3,
                   help="seconds per size and per copy (default 0.3)")
    p.add_argument("--copy-mib", type=int, metavar="MIB",
                   help="size of each copy buffer in MiB (default: 256 on the CPU, 1024 on a GPU)")
    p.add_argument("--out", help="peaks file (default: results/<machine>/peaks.json)")
    p.add_argument("--machine", help="machine name (default: host name)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_peaks)

    p = sub.add_parser(
        "doctor", help="is this device normal? a short probe against healthy devices of its model",
        description="Per device (under ~30 s each): the peaks of `bench-suite peaks` (best matmul, "
        "large copy) with the state that explains a slow device (GPU: clocks, power limit, "
        "throttle reasons, ECC, PCIe link, other processes, from NVML; CPU: governor, load "
        "from other processes, BLAS kernel), each figure as a percentage of what healthy "
        "devices of the same model reach (a table shipped with bench-suite, a source for every "
        "entry), and a verdict per device with the likeliest cause. Exit status: 0 every "
        "device normal (or of a model with no reference), 1 a device below normal, 2 bad input.",
    )
    p.add_argument("--backends", help="numpy (the CPU), torch-cuda[:N] or torch-cuda:all "
                   "(default: the CPU and every visible GPU)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    p.add_argument("--reference", metavar="FILE",
                   help="a peaks.json of a healthy device (its figures become the reference for "
                   "devices of its name), or a reference table of your own")
    p.add_argument("--time-budget", type=_positive_float, default=0.25,
                   help="seconds per matmul size and per copy (default 0.25)")
    p.add_argument("--machine", help="machine name (default: host name)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "profile", help="profile one case: torch.profiler trace and top operators, or cProfile",
        description="Run one case (verified first) under torch.profiler (CPU, and CUDA activity "
        "on a GPU): writes a Chrome trace (open in chrome://tracing or Perfetto) and prints the "
        "operators and kernels with their share of time. numpy cases get a Python-level "
        "cProfile instead (its .prof file opens in snakeviz or pstats).",
    )
    p.add_argument("case_id", metavar="CASE_ID", help="e.g. matmul/torch-cpu/float32/n=512/threads=1")
    p.add_argument("--trace", metavar="FILE",
                   help="trace file (default: profiles/<case>.trace.json, .prof for numpy)")
    p.add_argument("--seed", type=_seed, default=0, help="input seed (default 0)")
    p.add_argument("--calls", type=int, help="calls to profile (default: about 0.5 s worth, 3..1000)")
    p.add_argument("--top", type=int, default=15, help="rows of the table (default 15)")
    p.set_defaults(func=cmd_profile)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bench-suite")
    except PackageNotFoundError:
        return "(not installed)"


def sweep_from_args(args: argparse.Namespace, rank: Any = None) -> tuple[cases_mod.Preset, list[cases_mod.Case]]:
    """The preset and the cases the arguments select. ``rank``: a ``launch.RankContext``,
    whose CUDA backends become the rank's own GPU."""
    preset = cases_mod.get_preset(args.preset)
    # backends apart: torch-cuda:all becomes one backend per visible GPU, or the rank's own
    filters = cases_mod.parse_filters({axis: getattr(args, axis) for axis in cases_mod.FILTER_AXES
                                       if axis != "backends"})
    filters["backends"] = _backends(args.backends, preset, rank)
    sweep = preset.sweep.with_filters(**filters)
    return preset, sweep.expand()


def _backends(text: str | None, preset: cases_mod.Preset, rank: Any) -> tuple[str, ...] | None:
    from bench_suite import backends
    from bench_suite.measure import launch

    names = cases_mod.parse_backends(text, allow_all=True) if text else None
    if rank is not None:
        return launch.localize_backends(names or preset.sweep.backends, rank, backends.device_count)
    return backends.expand_devices(names) if names else None


# --- commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.env import collect as env_mod
    from bench_suite.measure import launch, runner

    if args.case_timeout is not None and not args.isolate and not args.resume:
        raise UsageError("--case-timeout needs --isolate")
    rank = launch.from_environment()  # torchrun, srun or --concurrent: one line on a bad launch
    if rank is not None and rank.world_size > 1:
        if args.resume:
            raise UsageError("--resume continues one process's run: under a launcher, start the "
                             "launch again (each rank's own file keeps what it measured)")
        return _run_rank(args, rank)
    if args.concurrent:
        return _run_concurrent(args)
    if args.resume:
        return _resume(args)
    preset, cases = sweep_from_args(args)
    timing = SamplingPlan(
        target_rel_ci=args.target,
        min_samples=args.min_samples,
        time_budget_s=args.time_budget or preset.time_budget_s,
    )
    machine = env_mod.machine_name(args.machine)
    run_id = runner.new_run_id()
    path = runner.resolve_out(args.out, machine, run_id)
    gpu = _gpu_options(args)
    options = runner.RunOptions(seed=args.seed, timing=timing, gpu=gpu)
    config = {"preset": args.preset, "argv": args.argv, "cases": len(cases)}  # + options: start_run
    measure = rounds = None
    count = args.rounds or preset.rounds
    if count > 1:
        from bench_suite.measure.isolation import plan_rounds

        rounds = plan_rounds(options, count, args.isolate, args.case_timeout, args.seed)
    elif args.isolate:
        from bench_suite.measure.isolation import IsolatedMeasure

        measure = IsolatedMeasure(options, args.case_timeout)
        config.update(measure.config())
    return _measure_and_print(
        args, lambda progress: runner.run_sweep(cases, path, options, machine, config, progress,
                                                measure_case=measure, rounds=rounds))


def _run_options(args: argparse.Namespace, preset: cases_mod.Preset) -> Any:
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.measure import runner

    timing = SamplingPlan(target_rel_ci=args.target, min_samples=args.min_samples,
                          time_budget_s=args.time_budget or preset.time_budget_s)
    return runner.RunOptions(seed=args.seed, timing=timing, gpu=_gpu_options(args))


def _run_rank(args: argparse.Namespace, rank: Any) -> int:
    """One rank of a torchrun/srun/--concurrent launch: its own device and cores, its own
    file; rank 0 gathers the run set and prints it."""
    from bench_suite.measure import distributed, launch

    cpus = launch.assign_cpu_share(rank)  # before the sweep: "threads=all" is the rank's share
    preset, cases = sweep_from_args(args, rank)
    options = _run_options(args, preset)
    config = {"preset": args.preset, "argv": args.argv, "cases": len(cases), "distributed": {"cpu_share": cpus}}
    measure = rounds = None
    count = args.rounds or preset.rounds
    if count > 1:  # each round in fresh processes, on this rank's device and cores
        from bench_suite.measure.isolation import plan_rounds

        rounds = plan_rounds(options, count, args.isolate, args.case_timeout, args.seed)
    elif args.isolate:
        from bench_suite.measure.isolation import IsolatedMeasure

        measure = IsolatedMeasure(options, args.case_timeout)
        config.update(measure.config())
    progress = None if args.quiet or rank.rank != 0 else _RichProgress()
    with progress or contextlib.nullcontext():
        outcome = distributed.run_rank(
            rank, cases, args.out, options, args.machine, config, progress, measure,
            gather_timeout_s=args.gather_timeout, join_timeout_s=args.join_timeout, rounds=rounds)
    if outcome.publish_problem:
        print(f"rank {rank.rank}: {outcome.publish_problem}; every measurement is in "
              f"{outcome.run.path}", file=sys.stderr)
    if outcome.runset is None:
        print(f"rank {rank.rank}: saved {len(outcome.run.measurements)} measurements to "
              f"{outcome.run.path}" + (" (interrupted)" if outcome.interrupted else ""), file=sys.stderr)
        return EXIT_INTERRUPTED if outcome.interrupted else (1 if outcome.publish_problem else EXIT_OK)
    rs = outcome.runset
    _print_runset(rs)
    if args.report:
        _write_report(list(rs.runs), Path(args.report), args.argv)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return 1 if rs.missing else EXIT_OK


def _run_concurrent(args: argparse.Namespace) -> int:
    from bench_suite import backends
    from bench_suite.core.cases import is_cuda_backend
    from bench_suite.measure import launch, runner

    if args.resume:
        raise UsageError("--concurrent starts a new run: it cannot --resume one")
    if not args.backends:
        raise UsageError("--concurrent runs one process per GPU: name them with --backends "
                         "(e.g. torch-cuda:all)")
    names = backends.expand_devices(cases_mod.parse_backends(args.backends, allow_all=True))
    cpu = [b for b in names if not is_cuda_backend(b)]
    if cpu:
        raise UsageError(f"--concurrent runs one process per GPU: drop {', '.join(cpu)} from "
                         "--backends (run CPU backends without --concurrent)")
    if backends.device_count("torch-cuda") == 0:
        raise UsageError("--concurrent: no GPU is visible (CUDA_VISIBLE_DEVICES, a CUDA build "
                         "of torch?)")
    devices = launch.cuda_devices(names)
    print(f"concurrent: {len(devices)} processes, one per GPU ({', '.join(map(str, devices))})",
          file=sys.stderr)
    result = launch.run_concurrent(args.argv, devices, runner.new_run_id())
    for r, rc in enumerate(result.exit_codes):
        if rc != 0:
            print(f"concurrent: rank {r} (GPU {devices[r]}) {_describe_rc(rc)}", file=sys.stderr)
    codes = [rc if rc >= 0 else 1 for rc in result.exit_codes]
    return max(codes) if codes else EXIT_OK


def _describe_rc(rc: int) -> str:
    if rc >= 0:
        return f"exited with status {rc}"
    import signal

    try:
        return f"was killed by {signal.Signals(-rc).name}"
    except ValueError:
        return f"was killed by signal {-rc}"


def _print_runset(rs: Any) -> None:
    from rich.table import Table

    from bench_suite.report import fleet
    from bench_suite.report.document import Document
    from bench_suite.report.renderer import to_text
    from bench_suite.store.env_record import LaunchRecord
    from bench_suite.store.results import to_frame

    console = _stdout_console()
    t = Table(title=f"run set {rs.run_id}: {rs.world_size} ranks ({rs.launcher})", title_justify="left")
    for col in ("rank", "host", "devices", "status", "ok / skipped / failed", "file"):
        t.add_column(col, justify="right" if col == "rank" else "left")
    runs = {LaunchRecord.of(r.config).rank: r for r in rs.runs}
    for st in rs.ranks:
        run = runs.get(st.rank)
        devs, counts = "-", "-"
        if run is not None:
            devs = ", ".join(dict.fromkeys(m.case.backend for m in run.measurements)) or "-"
            counts = " / ".join(str(sum(m.status == s for m in run.measurements))
                                for s in ("ok", "skipped", "failed"))
        t.add_row(str(st.rank), st.host or "?", devs, st.status, counts, st.path)
    console.print(t)
    table = fleet.fleet_table(to_frame(rs.runs))
    section = fleet.fleet_section(table, fleet.device_summary(table))
    if section is not None:
        sys.stdout.write(to_text(Document("", (section,))))
    for st in rs.missing:
        print(f"{'missing' if st.status == 'lost' else 'incomplete'}: {st.describe()}", file=sys.stderr)
    print(f"\nsaved a run set of {len(rs.runs)} of {rs.world_size} ranks "
          f"({sum(len(r.measurements) for r in rs.runs)} measurements) to {rs.path}")


#: ``run`` options that define a sweep or its settings: a resumed run keeps its saved ones.
_SAVED_WITH_THE_RUN = ("preset", "ops", "backends", "dtypes", "sizes", "threads", "grad_modes",
                       "activations", "host_memory", "create_on",
                       "out", "seed", "time_budget", "target", "min_samples", "machine",
                       "cold_cache", "cuda_graphs", "nvml", "rounds")


def _resume(args: argparse.Namespace) -> int:
    from bench_suite.measure import resume
    from bench_suite.measure.isolation import IsolatedMeasure

    given = [k for k in _SAVED_WITH_THE_RUN if getattr(args, k) != args.defaults_of(k)]
    if given:
        raise UsageError(f"--resume continues the run with its saved sweep and settings; "
                         f"drop --{given[0].replace('_', '-')}")
    state = resume.load_resumable(args.resume)
    if args.case_timeout is not None and not (args.isolate or state.isolate):
        raise UsageError("--case-timeout needs --isolate")
    measure = rounds = None
    timeout = args.case_timeout or state.case_timeout_s
    if state.rounds > 1:
        from bench_suite.measure.isolation import plan_rounds

        rounds = plan_rounds(state.options, state.rounds, args.isolate or state.isolate, timeout,
                             state.order_seed)
    elif args.isolate or state.isolate:
        measure = IsolatedMeasure(state.options, timeout)
    print(f"resuming run {state.run.run_id}: {state.progress_text}", file=sys.stderr)
    return _measure_and_print(
        args, lambda progress: resume.resume_run(
            state, progress, measure, config=measure.config() if measure else None, rounds=rounds))


def _measure_and_print(args: argparse.Namespace, execute: Callable[[Any], Any]) -> int:
    """Run ``execute(progress)`` under the progress display; print its summary, or where an
    interrupted run was saved; write the report if asked."""
    from bench_suite.measure.runner import RunInterrupted

    progress = None if args.quiet else _RichProgress()
    try:
        with progress or contextlib.nullcontext():
            run = execute(progress)
    except RunInterrupted as stop:
        _print_interrupted(stop.run)
        return EXIT_INTERRUPTED
    _print_summary(run)
    print(f"\nsaved {len(run.measurements)} measurements to {run.path}")
    if args.report:
        _write_report([run], Path(args.report), args.argv)
    return EXIT_OK


def _print_interrupted(run: Any) -> None:
    import shlex

    print(f"interrupted: {len(run.measurements)} measurements saved to {run.path}\n"
          f"continue with: bench-suite run --resume {shlex.quote(run.path)}", file=sys.stderr)


def _write_report(runs: list[Any], out: Path, argv: Sequence[str]) -> None:
    import shlex

    from bench_suite.report import render

    written = render.write_report(runs, out, command="bench-suite " + shlex.join(argv))
    print(f"report: {written}")


def cmd_report(args: argparse.Namespace) -> int:
    from bench_suite.store.loading import load_runs

    _write_report(load_runs(args.paths), Path(args.out), args.argv)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from bench_suite.backends import get_backend

    _preset, cases = sweep_from_args(args)
    if args.ids:
        for case in cases:
            print(case.id)
        return EXIT_OK
    backends = {name: get_backend(name) for name in dict.fromkeys(c.backend for c in cases)}
    runnable = 0
    for case in cases:
        avail = backends[case.backend].availability(case)
        runnable += avail.ok
        print(f"{case.id:<60} {'run' if avail.ok else 'skip: ' + avail.reason}")
    print(f"\n{len(cases)} cases, {runnable} runnable here", file=sys.stderr)
    return EXIT_OK


def cmd_env(args: argparse.Namespace) -> int:
    from bench_suite.backends.torch_backend import torch_installed
    from bench_suite.env import collect as env_mod

    info = env_mod.collect(args.machine, torch=torch_installed())
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    _print_tree(info)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from bench_suite.analysis import compare

    options = compare.CompareOptions(
        threshold=compare.parse_threshold(args.threshold), alpha=compare.parse_alpha(args.alpha),
        combine=args.combine, correction=args.correction,
    )
    return _print_comparison(compare.compare_paths(args.base, args.cand, options), args)


def cmd_ab(args: argparse.Namespace) -> int:
    from bench_suite.analysis import compare
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.env import collect as env_mod
    from bench_suite.measure import ab, runner

    options = compare.CompareOptions(threshold=compare.parse_threshold(args.threshold),
                                     alpha=compare.parse_alpha(args.alpha))
    if args.rounds < 2:
        raise UsageError("ab needs --rounds 2 or more (the rounds are what it compares)")
    preset, cases = sweep_from_args(args)
    timing = SamplingPlan(target_rel_ci=args.target, min_samples=args.min_samples,
                          time_budget_s=args.time_budget or preset.time_budget_s)
    machine = env_mod.machine_name(args.machine)
    folder = Path(args.out) if args.out else Path("results") / machine / f"ab-{runner.new_run_id()}"
    config = {"preset": args.preset, "argv": args.argv, "cases": len(cases)}
    progress = None if args.quiet else _RichProgress()
    try:
        with progress or contextlib.nullcontext():
            result = ab.run_ab(cases, args.base, args.cand, folder, runner.RunOptions(args.seed, timing),
                               args.rounds, machine, config, progress, args.case_timeout)
    except runner.RunInterrupted:
        print(f"interrupted: both sides' measurements so far are saved under {folder}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"saved {folder / 'base.json'} and {folder / 'cand.json'}", file=sys.stderr)
    return _print_comparison(compare.compare(
        [result.base], [result.cand], options, args.base, args.cand), args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from bench_suite.analysis.noise import summarize_profile
    from bench_suite.core.timing import SamplingPlan
    from bench_suite.env import collect as env_mod
    from bench_suite.measure import ab, runner
    from bench_suite.store.noise import NOISE_FILENAME

    if args.rounds < 3:
        raise UsageError("calibrate needs --rounds 3 or more")
    preset, cases = sweep_from_args(args)
    timing = SamplingPlan(time_budget_s=args.time_budget or preset.time_budget_s)
    machine = env_mod.machine_name(args.machine)
    out = Path(args.out) if args.out else Path("results") / machine / NOISE_FILENAME
    progress = None if args.quiet else _RichProgress()
    with progress or contextlib.nullcontext():
        profile = ab.calibrate(cases, runner.RunOptions(args.seed, timing), args.rounds, out, machine,
                               Path(args.keep) if args.keep else None, progress)
    _print_noise(summarize_profile(profile, DEFAULT_ROUNDS, DEFAULT_AB_ROUNDS), machine)
    print(f"\nsaved the noise of {len(profile.cases)} cases to {out}")
    return EXIT_OK


def _print_noise(rows: list[dict[str, Any]], machine: str) -> None:
    from rich.table import Table

    from bench_suite.report.format import fmt_time

    def pct(x: float | None) -> str:
        return "-" if x is None or x != x else f"{x * 100:.1f}%"

    t = Table(title=f"noise on {machine}: smallest change a comparison can detect (90% power, alpha {DEFAULT_ALPHA})",
              title_justify="left")
    for col in ("case", "median", "rounds spread", "pairs spread",
                f"run vs run ({DEFAULT_ROUNDS} rounds)", f"ab ({DEFAULT_AB_ROUNDS} rounds)", "note"):
        t.add_column(col, justify="left" if col in ("case", "note") else "right", no_wrap=col == "case")
    for r in rows:
        busy = r["contended_rounds"]
        note = ", ".join(n for n, on in (("bimodal", r["bimodal"]),
                                         (f"{busy} round{'s' if busy != 1 else ''} contended", busy)) if on)
        t.add_row(r["case_id"], fmt_time(r["median_s"]), pct(r["round_sd"]), pct(r["pair_sd"]),
                  pct(r["detectable_runs"]), pct(r["detectable_ab"]), note)
    _stdout_console().print(t)


def _print_comparison(result: Any, args: argparse.Namespace) -> int:
    """Write a comparison as asked (format, -o) and turn it into the exit status."""
    from bench_suite.report import comparison

    fmt = comparison.format_for(args.output, args.format)
    text = comparison.render(result, fmt)
    if args.output:
        comparison.write_output(text, Path(args.output))
        print(f"{comparison.headline(result)}\nwrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_REGRESSION if result.has_regression else EXIT_OK


def _gpu_options(args: argparse.Namespace) -> Any:
    from bench_suite.measure.gpu.options import TimingMode

    return TimingMode(cold_cache=args.cold_cache, cuda_graphs=args.cuda_graphs, nvml=args.nvml)


def cmd_peaks(args: argparse.Namespace) -> int:
    from bench_suite.backends import expand_devices
    from bench_suite.env import collect as env_mod
    from bench_suite.measure import peaks
    from bench_suite.store.peaks import save_peaks

    backends = (expand_devices(cases_mod.parse_backends(args.backends, allow_all=True))
                if args.backends else peaks.default_backends())
    config = peaks.PeaksConfig(
        sizes=_square_sizes(args.sizes) if args.sizes else None,
        dtypes=cases_mod.parse_names(args.dtypes, cases_mod.DTYPES, "dtype") if args.dtypes else None,
        threads=cases_mod.parse_threads(args.threads) if args.threads else (1, None),
        time_budget_s=args.time_budget,
        copy_bytes=_copy_bytes(args.copy_mib),
    )
    machine = env_mod.machine_name(args.machine)
    path = Path(args.out) if args.out else peaks.default_path(machine)

    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    result = peaks.measure_peaks(backends, config, machine, _silent if args.quiet else progress)
    save_peaks(result, path)
    _print_peaks(peaks.peaks_table(result), result)
    print(f"\nsaved {len(result.peaks)} peaks to {path}")
    return EXIT_OK


def _copy_bytes(mib: int | None) -> int | None:
    if mib is None:
        return None
    if not 1 <= mib <= 1 << 20:
        raise UsageError(f"--copy-mib must be 1..{1 << 20}, not {mib}")
    return mib << 20


def _silent(_line: str) -> None:
    return None


def _square_sizes(text: str) -> tuple[int, ...]:
    sizes = cases_mod.parse_sizes(text)
    if not all(isinstance(s, int) for s in sizes):
        raise UsageError(f"peaks takes square sizes only (N,N,...), not {text!r}")
    return tuple(int(s) for s in sizes)  # type: ignore[arg-type]


def _print_peaks(table: Any, result: Any) -> None:
    from rich.table import Table

    t = Table(title=f"peaks of {result.machine}", title_justify="left")
    for col in ("device", "backend", "dtype", "threads", "GFLOP/s", "best n", "GB/s (copy)",
                "reference", "% of ref", "implied clock"):
        t.add_column(col, justify="left" if col in ("device", "backend", "dtype", "reference") else "right")
    for r in table.itertuples(index=False):
        t.add_row(r.device, r.backend, r.dtype, str(r.threads), f"{r.gflops:,.1f}", str(r.best_n),
                  "-" if r.gbps != r.gbps else f"{r.gbps:,.1f}",
                  f"{r.reference} {r.reference_gflops:,.1f}" if r.reference else "-",
                  "-" if r.pct_of_reference != r.pct_of_reference else f"{r.pct_of_reference:.0f}%",
                  "-" if r.implied_clock_ghz != r.implied_clock_ghz else f"{r.implied_clock_ghz:.2f} GHz")
    console = _stdout_console()
    console.print(t)
    for note in result.config.get("notes", []):
        console.print(f"not measured: {note}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from bench_suite import backends
    from bench_suite.analysis import diagnosis
    from bench_suite.measure import doctor

    names = (backends.expand_devices(cases_mod.parse_backends(args.backends, allow_all=True))
             if args.backends else doctor.default_backends())
    doctor.check_backends(names)
    table = diagnosis.load_reference(args.reference)

    def progress(line: str) -> None:
        print(line, file=sys.stderr)

    report = doctor.run_doctor(names, doctor.DoctorConfig(time_budget_s=args.time_budget), table,
                               args.machine, _silent if args.quiet else progress)
    if args.json:
        print(diagnosis.as_json(report))
    else:
        _print_doctor(report)
    return report.exit_status


def _print_doctor(report: Any) -> None:
    from bench_suite.report.doctor_document import doctor_document
    from bench_suite.report.renderer import to_text

    sys.stdout.write(to_text(doctor_document(report)))


def cmd_profile(args: argparse.Namespace) -> int:
    from bench_suite.measure import profiling

    if args.calls is not None and not 1 <= args.calls <= 100_000:
        raise UsageError(f"--calls must be 1..100000, not {args.calls}")
    if not 1 <= args.top <= 1000:
        raise UsageError(f"--top must be 1..1000, not {args.top}")
    case = cases_mod.parse_case_id(args.case_id)
    result = profiling.profile_case(case, seed=args.seed, trace=args.trace, calls=args.calls)
    _print_profile(result, args.top)
    return EXIT_OK


def _print_profile(result: Any, top: int) -> None:
    from rich.table import Table

    from bench_suite.report.format import fmt_time

    console = _stdout_console()
    t = Table(title=f"{result.tool}: {result.case.id}, {result.calls} calls "
              f"({fmt_time(result.wall_s / result.calls)} per call)", title_justify="left")
    t.add_column("name")
    t.add_column("activity")
    t.add_column("calls", justify="right")
    t.add_column("self time", justify="right")
    t.add_column("share", justify="right")
    t.add_column("total time", justify="right")
    for r in result.table.head(top).itertuples(index=False):
        t.add_row(r.name[:70], r.activity, str(r.calls), fmt_time(r.self_s), f"{r.share:.1%}",
                  fmt_time(r.total_s))
    console.print(t)
    print(f"verified: relative error {result.rel_error:.3g} ({result.check})")
    print(f"trace: {result.trace_path}")


# --- printing -----------------------------------------------------------------------------


def _print_tree(obj: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, (dict, list)) and value:
                print(f"{pad}{key}:")
                _print_tree(value, indent + 1)
            else:
                print(f"{pad}{key}: {value}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                print(f"{pad}-")
                _print_tree(item, indent + 1)
            else:
                print(f"{pad}- {item}")


def _stdout_console() -> Any:
    from rich.console import Console

    # not a terminal (CI logs, pipes): wide enough that case ids and tables are never cut
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _print_summary(run: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    from bench_suite.report.run_summary import summary_view

    view = summary_view(run)
    table = Table(title=escape(view.title), title_justify="left")
    for col in view.columns:
        table.add_column(col, justify="left" if view.left_aligned(col) else "right", no_wrap=col == "case")
    for row in view.rows:
        table.add_row(*(escape(cell) for cell in row))
    console = _stdout_console()
    console.print(table)
    for line in view.footnotes:
        console.print(line, soft_wrap=True, markup=False)


class _RichProgress:
    """Live progress on stderr: a bar, the case in flight, and a line per failed case."""

    def __enter__(self) -> _RichProgress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True, highlight=False)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task("starting", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total, description="")

    def case_started(self, case: Any) -> None:
        self._progress.update(self._task, description=case.id)

    def case_finished(self, m: Any) -> None:
        if m.status == "failed":
            self._progress.console.print(f"[red]failed[/red] {m.id}: {m.reason}", markup=True)
        elif not self.console.is_terminal:  # a log (CI, a GPU machine's output): one line a case
            from bench_suite.report.format import fmt_time

            done = int(self._progress.tasks[0].completed) + 1
            what = fmt_time(m.summary.median) if m.status == "ok" else f"skipped: {m.reason}"
            self.console.print(f"[{done}/{self._progress.tasks[0].total}] {m.id}: {what}", markup=False,
                               soft_wrap=True)
        self._progress.advance(self._task)


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = create_parser()
    args = parser.parse_args(argv)
    # the command line as given, for the run's config and the report's "made by" line
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except BenchSuiteError as exc:
        print(f"bench-suite: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench-suite: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `bench-suite list | head`
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
