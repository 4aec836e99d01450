"""`bench-suite ab` and `calibrate`: interpreters checked before anything runs, real A/B runs
(an unchanged candidate, a slowed one), noise profiles and the smallest detectable change."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from bench_suite import load_runs
from bench_suite.analysis.compare import compare
from bench_suite.analysis.noise import detectable_change
from bench_suite.backends import PLUGINS_ENV
from bench_suite.core.cases import Case
from bench_suite.core.errors import UsageError
from bench_suite.frontends import cli
from bench_suite.measure.ab import check_interpreter, side_order
from bench_suite.store.noise import (
    NOISE_FILENAME,
    CaseNoise,
    NoiseProfile,
    load_profile,
    profiles_for_runs,
    save_profile,
)

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--backends", "numpy", "--ops", "matmul,hadamard", "--sizes", "48", "--threads", "1",
         "--time-budget", "0.3", "--quiet"]


def _wrapper(tmp_path: Path, name: str, env: dict[str, str]) -> str:
    """A CAND 'interpreter': a script that sets variables and runs this Python."""
    path = tmp_path / name
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    path.write_text(f"#!/bin/sh\n{exports}exec '{sys.executable}' \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def quiet_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    # the subject is the A/B machinery, not this machine's load (other tests run beside it)
    monkeypatch.setenv(PLUGINS_ENV, "tests.quiet:register")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_bad_interpreters_are_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a program")
    cases = {
        str(tmp_path / "missing" / "python"): "does not exist",
        str(tmp_path): "not an executable",
        str(tmp_path / "plain"): "not an executable",
        "no-such-python-here": "no such interpreter",
        "/bin/true": "cannot import",
    }
    for python, message in cases.items():
        with pytest.raises(UsageError, match=message):
            check_interpreter(python, "BASE")
    assert check_interpreter(sys.executable, "BASE")["pid"] > 0


def test_cli_ab_with_a_broken_cand_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["ab", sys.executable, str(tmp_path / "nope"), *SWEEP, "--out", str(tmp_path / "ab")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "CAND" in err
    assert not (tmp_path / "ab").exists()  # nothing ran


def test_side_order_is_seeded_and_mixed() -> None:
    case = Case("hadamard", "numpy", "float32", (8, 8), 1)
    firsts = {side_order(0, r, case)[0] for r in range(40)}
    assert firsts == {"base", "cand"}
    assert side_order(3, 5, case) == side_order(3, 5, case)


def test_ab_finds_the_slowed_op_and_only_it(tmp_path: Path, quiet_workers: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # every call sleeps 2 ms on both sides (steady on a loaded test machine); the candidate's
    # matmul calls then do as much busy work again
    steady = {PLUGINS_ENV: "tests.quiet:register,tests.slowed:register", "BENCH_SUITE_SLEEP_S": "0.002",
              "BENCH_SUITE_SLOWDOWN": "0"}
    base = _wrapper(tmp_path, "base", steady)
    cand = _wrapper(tmp_path, "cand", {**steady, "BENCH_SUITE_SLOWDOWN": "1.0", "BENCH_SUITE_SLOWED_OPS": "matmul"})
    out = tmp_path / "ab"
    rc = cli.main(["ab", base, cand, *SWEEP, "--rounds", "6", "--out", str(out), "--format", "json",
                   "--threshold", "50%"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert doc["regressions"] == ["matmul/numpy/float32/n=48/threads=1"]
    pairs = {p["case_id"]: p for p in doc["pairs"]}
    assert pairs["matmul/numpy/float32/n=48/threads=1"]["method"] == "paired rounds"
    assert pairs["matmul/numpy/float32/n=48/threads=1"]["base_rounds"] == 6
    assert pairs["hadamard/numpy/float32/n=48/threads=1"]["verdict"] != "slower"
    base, cand_run = load_runs([out / "base.json"])[0], load_runs([out / "cand.json"])[0]
    assert base.config["ab"]["session"] == cand_run.config["ab"]["session"]
    assert base.config["ab"]["side"] == "base" and cand_run.config["ab"]["side"] == "cand"
    # each side's environment is its own interpreter's, reported by its worker
    assert base.env["python"]["executable"] and "packages" in cand_run.env


def test_calibrate_saves_a_profile_that_compare_and_report_use(tmp_path: Path, quiet_workers: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    machine = tmp_path / "results" / "box"
    noise = machine / NOISE_FILENAME
    assert cli.main(["calibrate", *SWEEP, "--rounds", "3", "--machine", "box", "--out", str(noise),
                     "--keep", str(tmp_path / "aa")]) == 0
    assert "smallest change" in capsys.readouterr().out
    profile = load_profile(noise)
    assert profile.machine == "box" and {c.case_id for c in profile.cases} == {
        "matmul/numpy/float32/n=48/threads=1", "hadamard/numpy/float32/n=48/threads=1"}
    assert all(c.rounds == 3 and c.round_sd is not None for c in profile.cases)
    # the kept A/A runs, moved beside the profile, get each case's detectable change from it
    for side in ("base", "cand"):
        os.replace(tmp_path / "aa" / f"{side}.json", machine / f"{side}.json")
    runs = load_runs([machine])  # the profile is not mistaken for a run
    assert len(runs) == 2
    assert set(profiles_for_runs(runs)) == {"box"}
    c = compare([r for r in runs if r.run_id.startswith("base")], [r for r in runs if r.run_id.startswith("cand")])
    assert all(p.detectable_from == "noise profile" and p.detectable > 0 for p in c.pairs)
    assert cli.main(["report", str(machine), "-o", str(tmp_path / "rep")]) == 0
    assert "Noise floor" in (tmp_path / "rep" / "summary.md").read_text()


def test_detectable_change_shrinks_with_rounds_and_pairing() -> None:
    sd = 0.05
    five, twenty = detectable_change(sd, 5, 5, False), detectable_change(sd, 20, 20, False)
    assert 0 < twenty < five
    assert detectable_change(sd, 8, 8, True) < detectable_change(sd * 1.5, 8, 8, True)
    assert detectable_change(None, 5, 5, False) != detectable_change(None, 5, 5, False)  # NaN


def test_a_profile_round_trips_and_bad_ones_are_one_line(tmp_path: Path) -> None:
    p = NoiseProfile("box", "t", {}, {"rounds": 3}, (CaseNoise("x", 3, 1e-3, 0.02, None, True, 1),))
    save_profile(p, tmp_path / NOISE_FILENAME)
    assert load_profile(tmp_path / NOISE_FILENAME) == p
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "bench-suite/noise", "version": 9}))
    with pytest.raises(Exception, match="version 9"):
        load_profile(tmp_path / "bad.json")
