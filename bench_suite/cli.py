"""The command line: argument parsing and printing only.

Every subcommand turns its arguments into a plain call of the library and prints what comes
back. Errors a user can cause are ``BenchSuiteError``s, turned into one line and exit status 2
in :func:`main` and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench_suite import cases as cases_mod
from bench_suite.errors import BenchSuiteError, UsageError

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
    g.add_argument("--backends", help=f"comma-separated: {', '.join(cases_mod.BACKENDS)}, torch-cuda:N")
    g.add_argument("--dtypes", help=f"comma-separated: {', '.join(cases_mod.DTYPES)}")
    g.add_argument("--sizes", help="comma-separated: N (square), MxKxN (matmul) or MxN (hadamard)")
    g.add_argument("--threads", help="comma-separated thread counts, or 'all' (every usable core)")
    g.add_argument("--grad-modes", help="for torch forward ops: no_grad, grad (default both)")


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
    p.add_argument("--min-samples", type=int, default=10, help="samples at least (default 10)")
    p.add_argument("--machine", help="machine name to file results under (default: host name)")
    p.add_argument("--report", metavar="DIR", help="also write a report of this run to DIR")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list the cases a sweep would run, with skip reasons")
    _add_sweep_args(p)
    p.add_argument("--ids", action="store_true", help="case ids only, one per line")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("env", help="show the machine and software environment")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--machine", help="machine name (default: host name)")
    p.set_defaults(func=cmd_env)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bench-suite")
    except PackageNotFoundError:
        return "(not installed)"


def sweep_from_args(args: argparse.Namespace) -> tuple[cases_mod.Preset, list[cases_mod.Case]]:
    preset = cases_mod.get_preset(args.preset)
    sweep = preset.sweep.with_filters(
        ops=cases_mod.parse_names(args.ops, cases_mod.OPS, "op") if args.ops else None,
        backends=cases_mod.parse_backends(args.backends) if args.backends else None,
        dtypes=cases_mod.parse_names(args.dtypes, cases_mod.DTYPES, "dtype") if args.dtypes else None,
        sizes=cases_mod.parse_sizes(args.sizes) if args.sizes else None,
        threads=cases_mod.parse_threads(args.threads) if args.threads else None,
        grad_modes=(cases_mod.parse_names(args.grad_modes, cases_mod.GRAD_MODES, "grad mode")
                    if args.grad_modes else None),
    )
    return preset, sweep.expand()


# --- commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from bench_suite import env as env_mod
    from bench_suite import runner
    from bench_suite.timing import TimingConfig

    preset, cases = sweep_from_args(args)
    timing = TimingConfig(
        target_rel_ci=args.target,
        min_samples=args.min_samples,
        time_budget_s=args.time_budget or preset.time_budget_s,
    )
    machine = env_mod.machine_name(args.machine)
    run_id = runner.new_run_id()
    path = runner.resolve_out(args.out, machine, run_id)
    options = runner.RunOptions(seed=args.seed, timing=timing)
    config = {"preset": args.preset, "argv": sys.argv[1:], "cases": len(cases)}
    progress = None if args.quiet else _RichProgress()
    try:
        with progress or _nullcontext():
            run = runner.run_sweep(cases, path, options, machine, config, progress)
    except runner.RunInterrupted as stop:
        print(f"interrupted: {len(stop.run.measurements)} measurements saved to {stop.run.path}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_summary(run)
    print(f"\nsaved {len(run.measurements)} measurements to {run.path}")
    if args.report:
        _write_report([run], Path(args.report))
    return EXIT_OK


def _write_report(runs: list[Any], out: Path) -> None:
    from bench_suite.report import render

    written = render.write_report(runs, out)
    print(f"report: {written}")


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
    from bench_suite import env as env_mod

    from bench_suite.backends.torch_backend import torch_installed

    info = env_mod.collect(args.machine, torch=torch_installed())
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    _print_tree(info)
    return EXIT_OK


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


def _print_summary(run: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from bench_suite.report import tables
    from bench_suite.report.format import fmt_rate, fmt_ratio, fmt_time
    from bench_suite.results import to_frame

    summary = tables.run_summary(to_frame([run]))
    table = Table(title=f"run {run.run_id} on {run.machine}", title_justify="left")
    for col in ("case", "median", "±", "rate", "vs numpy", "note"):
        table.add_column(col, justify="left" if col in ("case", "note") else "right",
                         no_wrap=col == "case")
    skipped: dict[str, int] = {}
    for row in summary.itertuples(index=False):
        if row.status == "ok":
            note = "noisy" if row.noisy else ""
            table.add_row(row.case_id, fmt_time(row.median_s), f"{row.rel_ci:.1%}",
                          fmt_rate(row.rate, row.rate_unit), fmt_ratio(row.speedup_vs_numpy), note)
        elif row.status == "skipped":
            skipped[row.reason] = skipped.get(row.reason, 0) + 1
        else:
            table.add_row(row.case_id, "-", "", "", "", f"failed: {row.reason}")
    # not a terminal (CI logs, pipes): wide enough that case ids are never cut
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for reason, count in skipped.items():
        console.print(f"skipped {count} case{'s' if count > 1 else ''}: {reason}")


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _RichProgress:
    """Live progress on stderr: a bar, the case in flight, and a line per failed case."""

    def __enter__(self) -> _RichProgress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
        self._progress.advance(self._task)


# --- entry point --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = create_parser()
    args = parser.parse_args(argv)
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
