"""The one codec (``store.codec``): every document round-trips, a wrong field is reported
with its file and JSON path, the worker protocol refuses malformed messages, and the
environment records read any shape without an error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench_suite.core import stats
from bench_suite.core.cases import Case
from bench_suite.core.errors import ResultsFileError
from bench_suite.core.timing import SamplingPlan
from bench_suite.measure import worker
from bench_suite.measure.gpu.options import TimingMode
from bench_suite.measure.runner import RunOptions
from bench_suite.store import codec
from bench_suite.store.env_record import EnvRecord, LaunchRecord
from bench_suite.store.noise import CaseNoise, NoiseProfile, load_profile, save_profile
from bench_suite.store.peaks import Peak, PeakSet, load_peaks, save_peaks
from bench_suite.store.results import (
    Measurement,
    Round,
    Run,
    RunWriter,
    journal_path,
    read_run_file,
    run_from_dict,
    save_run,
)
from bench_suite.store.runset import RankStatus, RunSet, runset_from_dict

CASE = Case("matmul", "numpy", "float32", (8, 8, 8), threads=1)


def _run(**kw: Any) -> Run:
    rounds = (Round((1e-3, 1.1e-3), 4, 2, "converged", 0, "t0", 0.01, 0.1, 0.0, 0.02, 1, False),
              Round((1.2e-3,), 4, 2, "budget", 1, "t1", 0.02, None, None, None, 0, True))
    ms = (Measurement(CASE, "ok", rel_error=1e-7, tolerance=1e-4, check="full", threads=1,
                      peak_mem_bytes=768, device_name="cpu", started_at="t0", wall_s=0.5,
                      extra={"nvml": {"throttled": False}}, rounds=rounds),
          Measurement(Case("hadamard", "numpy", "float32", (8, 8)), "skipped", "no reason"),
          Measurement(Case("hadamard", "numpy", "float64", (8, 8)), "ok",
                      given_summary=stats.Summary(3, 1e-3, math.nan, 2e-3, 1e-3, 1e-3, 1e-3, 0.0, 1e-3, 1e-3)))
    base = dict(run_id="r1", machine="box", created_at="2026-01-01T00:00:00+00:00",
                env={"hostname": "box", "cpu": {"usable_cores": 2}}, config={"seed": 3},
                measurements=ms, finished_at="2026-01-01T00:01:00+00:00")
    base.update(kw)
    return Run(**base)  # type: ignore[arg-type]


# --- round trips ------------------------------------------------------------------------------


def _same(a: Run, b: Run) -> None:
    assert a.to_dict() == b.to_dict()


def test_a_run_file_round_trips_byte_for_byte(tmp_path: Path) -> None:
    run = _run()
    path = tmp_path / "r.json"
    save_run(run, path)
    back = read_run_file(path)
    _same(run, back)
    assert math.isnan(back.measurements[2].given_summary.q1)  # type: ignore[union-attr]
    # the saved form is the one it always was: json.dumps(indent=1), strict, a final newline
    assert path.read_text() == json.dumps(run.to_dict(), allow_nan=False, indent=1) + "\n"
    save_run(back, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_a_journal_round_trips(tmp_path: Path) -> None:
    run = _run(measurements=(), complete=False)
    w = RunWriter(tmp_path / "j.json", run)
    for m in _run().measurements:
        w.add(m)
    w.close()
    back = read_run_file(journal_path(tmp_path / "j.json"))
    assert [m.to_dict() for m in back.measurements] == [m.to_dict() for m in _run().measurements]
    assert not back.complete
    lines = journal_path(tmp_path / "j.json").read_text().splitlines()
    assert msgspec.json.decode(lines[0], type=codec.RunHeader).run_id == "r1"
    assert msgspec.json.decode(lines[1], type=codec.JournalEntry).measurement.status == "ok"


def test_a_version_1_measurement_decodes_as_one_round() -> None:
    doc = _run().to_dict()
    doc["version"] = 1
    m = doc["measurements"][0]
    del m["rounds"]
    m.update(samples_s=[1e-3, 2e-3], number=5, warmup_calls=1, stop="budget")
    back = run_from_dict(doc, "v1.json")
    (r,) = back.measurements[0].rounds
    assert r.samples_s == (1e-3, 2e-3) and r.number == 5 and r.stop == "budget"


def test_peaks_noise_and_run_sets_round_trip(tmp_path: Path) -> None:
    ps = PeakSet("box", "t", {"machine": "box"}, {"x": 1}, (
        Peak("cpu", "float32", 3e11, 2e10, "measured", "n", "model", "box", "numpy", 2, {"n": 64}),
        Peak("cuda:0", "*", None, 6e10, "link"),
    ))
    assert load_peaks(save_peaks(ps, tmp_path / "peaks.json")).peaks == ps.peaks
    profile = NoiseProfile("box", "t", {}, {"rounds": 3}, (CaseNoise("x", 3, math.nan, 0.02, None),))
    save_profile(profile, tmp_path / "noise.json")
    back = load_profile(tmp_path / "noise.json")
    assert back.cases[0].round_sd == 0.02 and math.isnan(back.cases[0].median_s)
    rs = RunSet("set", "t0", "t1", 2, "torchrun",
                (RankStatus(0, "a", "complete", 3), RankStatus(1, "b", "lost", 0, "/x", "gone")),
                (_run(config={"distributed": {"rank": 0, "host": "a"}}),))
    got = runset_from_dict(json.loads(json.dumps(rs.to_dict())), "set.json")
    assert got.ranks == rs.ranks and got.world_size == 2
    _same(got.runs[0], rs.runs[0])


def test_options_are_saved_and_read_back_in_one_place() -> None:
    opts = RunOptions(seed=7, timing=SamplingPlan(min_samples=5, time_budget_s=0.5),
                      gpu=TimingMode(cold_cache=True, flush_bytes=1 << 20, nvml=False))
    config = json.loads(json.dumps(opts.to_config()))
    assert set(config) == {"seed", "timing", "gpu_options"}
    assert RunOptions.from_config(config, "r.json") == opts
    assert RunOptions.from_config({}, "r.json") == RunOptions()  # everything has its default
    # a setting a newer version added is ignored; a missing one keeps its default
    config["timing"] = {"min_samples": 5.0, "some_new_setting": 1}
    assert RunOptions.from_config(config, "r.json").timing == SamplingPlan(min_samples=5)
    request = codec.decode(codec.MeasureRequest, {"protocol": codec.PROTOCOL, "case": CASE.to_dict(),
                                                  **opts.request_fields()}, "worker request")
    assert RunOptions.from_request(request) == opts


# --- errors: the file and the JSON path ------------------------------------------------------------


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["measurements"][0]["rounds"][1].update(samples_s=[1e-3, "x"]),
     "measurements[0].rounds[1].samples_s[1]: expected numbers, found 'x'"),
    (lambda d: d["measurements"][0]["rounds"][0].update(samples_s=[2e6]),
     "measurements[0].rounds[0].samples_s[0]: sample 2000000.0 is not a finite non-negative time"),
    (lambda d: d["measurements"][1].update(threads=True), "measurements[1].threads: expected a count"),
    (lambda d: d["measurements"][1].update(status="great"),
     "measurements[1]: status: 'great' is not one of ok, failed, skipped"),
    (lambda d: d["measurements"][0].update(extra=[1]), "measurements[0].extra: expected an object, got array"),
    (lambda d: d.update(machine=None), "machine: expected a string, got null"),
    (lambda d: d.pop("run_id"), "run_id: missing"),
    (lambda d: d["measurements"][0]["rounds"][0].update(contended="no"),
     "measurements[0].rounds[0].contended: expected true or false"),
    (lambda d: d["measurements"][0].update(reason="x" * 100_001), "measurements[0].reason: string too long"),
])
def test_a_wrong_field_is_named_by_file_and_json_path(tmp_path: Path, edit: Any, message: str) -> None:
    doc = _run().to_dict()
    edit(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    for read in (read_run_file, lambda p: run_from_dict(json.loads(p.read_text()), str(p))):
        with pytest.raises(ResultsFileError) as info:
            read(path)
        assert str(info.value) == f"{path}: {message}" or str(info.value).startswith(f"{path}: {message}")
        assert "\n" not in str(info.value)


def test_fast_and_slow_decoding_agree() -> None:
    """Text goes straight to msgspec; what it refuses is parsed again to word the error. Text
    and the parsed object give the same document, and the same error."""
    text = json.dumps(_run().to_dict())
    assert codec.decode(codec.RunDoc, text, "x") == codec.decode(codec.RunDoc, json.loads(text), "x")
    bad = text.replace('"status": "skipped"', '"status": 5')
    errors = []
    for source in (bad, json.loads(bad)):
        with pytest.raises(ResultsFileError) as info:
            codec.decode(codec.RunDoc, source, "x.json")
        errors.append(str(info.value))
    assert errors[0] == errors[1] == "x.json: measurements[1].status: expected a string, got int"


def test_strict_json_keeps_its_words() -> None:
    for text, words in (('{"a": NaN}', "not a valid JSON number"), ('{"a": 1e999}', "out of range"),
                        ("[" * 5000 + "]" * 5000, "nested too deeply"), ('{"a": ', "not valid JSON")):
        with pytest.raises(ResultsFileError, match=words):
            codec.decode(codec.RunDoc, text, "x.json")


# --- the worker protocol ------------------------------------------------------------------------


@pytest.mark.parametrize(("request_", "message"), [
    ({"protocol": 99, "case": CASE.to_dict()}, "worker request: protocol 99, not 1"),
    ({"protocol": 1}, "worker request: case: missing"),
    ({"protocol": 1, "case": CASE.to_dict(), "seed": -1}, "worker request: seed: expected a count"),
    ({"protocol": 1, "case": CASE.to_dict(), "timing": {"min_samples": 0.5}},
     "worker request: timing: min_samples: expected a whole number, got 0.5"),
    ({"protocol": 1, "case": CASE.to_dict(), "round": "first"}, "worker request: round: expected a count"),
    ({"protocol": 1, "case": {"op": "conv"}}, "worker request: case: "),
    ([1, 2], "worker request: expected an object, got array"),
])
def test_the_worker_refuses_a_malformed_request_in_one_line(request_: Any, message: str) -> None:
    with pytest.raises(ResultsFileError) as info:
        worker.measure_request(request_)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_worker_replies_decode_and_a_bad_one_is_refused() -> None:
    hello = codec.decode(codec.HelloReply, json.dumps(worker.hello()), "hello")
    assert hello.hello.pid is not None
    reply = {"protocol": codec.PROTOCOL, "measurement": _run().measurements[0].to_dict()}
    assert codec.decode(codec.MeasurementReply, codec.encode_line(reply), "worker result").measurement.status == "ok"
    reply["measurement"]["rounds"][0]["samples_s"] = [-1.0]
    with pytest.raises(ResultsFileError, match=r"worker result: measurement.rounds\[0\].samples_s\[0\]: sample"):
        codec.decode(codec.MeasurementReply, reply, "worker result")
    with pytest.raises(ResultsFileError, match="gate answer: gate: missing"):
        codec.decode(codec.GateAnswer, '{"protocol": 1}', "gate answer")


# --- environment records --------------------------------------------------------------------------


def test_env_record_reads_what_collect_writes() -> None:
    env = {"machine": "box", "hostname": "box", "cpu": {"model": "Xeon", "usable_cores": 2, "mhz": 2600,
                                                        "simd": ["avx2", [5]]},
           "memory": {"total_bytes": 2**34}, "packages": {"numpy": "2.4", "torch": None, "x": [1]},
           "blas": [{"internal_api": "openblas", "version": "0.3", "num_threads": 2}, "junk"],
           "git": {"commit": "abc", "dirty": False},
           "torch": {"version": "2.13", "cudnn": 90100, "matmul_fp32_precision": "tf32",
                     "gpus": [{"index": 1, "name": "H200", "total_memory_bytes": 2**37, "link": {"kind": "pcie"}}]}}
    rec = EnvRecord.of(env)
    assert rec.cpu.model == "Xeon" and rec.cpu.usable_cores == 2 and rec.cpu.mhz == 2600.0
    assert rec.cpu.simd == ("avx2",)  # an element of the wrong type is dropped
    assert rec.packages == {"numpy": "2.4", "torch": None}
    assert [b.internal_api for b in rec.blas] == ["openblas"]
    assert rec.git.commit == "abc" and rec.torch.tf32 is True and rec.torch.cudnn == 90100
    assert rec.gpus[0].name == "H200" and rec.gpus[0].index == 1 and rec.gpus[0].link == {"kind": "pcie"}
    assert rec.memory.total_bytes == 2**34


@pytest.mark.parametrize("env", [None, 5, [], "x", {"cpu": "no", "torch": {"gpus": "x"}, "git": [1]},
                                 {"cpu": {"usable_cores": True, "model": ["a"]}, "packages": [1],
                                  "blas": {"a": 1}, "env_vars": {"A": {"b": 1}}},
                                 {"cpu": {"usable_cores": "lots"}, "memory": {"total_bytes": "lots"}}])
def test_env_record_of_any_shape_is_none_never_an_error(env: Any) -> None:
    rec = EnvRecord.of(env)
    assert rec.cpu.usable_cores is None and rec.cpu.model is None and rec.gpus == ()
    assert rec.git.commit is None and rec.memory.total_bytes is None and rec.env_vars == {}


def test_a_number_where_text_is_expected_is_its_text() -> None:
    rec = EnvRecord.of({"blas": [{"version": 3}], "python": {"version": 3.0}})
    assert rec.blas[0].version == "3" and rec.python.version == "3"


def test_launch_record() -> None:
    assert LaunchRecord.of({"distributed": {"rank": 2, "host": "a", "local_rank": "x"}}).rank == 2
    assert LaunchRecord.of({"distributed": {"rank": True}}).rank is None
    assert not LaunchRecord.of({}).launched and not LaunchRecord.of(None).launched


# --- any input: one error type, or a document ------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["schema", "version", "run_id", "machine", "measurements", "case", "status",
                         "rounds", "samples_s", "peaks", "cases", "protocol", "timing", "cpu", "torch",
                         "gpus", "x"]), inner, max_size=5),
    max_leaves=25,
)
_KINDS = [codec.RunDoc, codec.RunHeader, codec.JournalEntry, codec.RunSetDoc, codec.PeaksDoc, codec.NoiseDoc,
          codec.SavedOptions, codec.MeasureRequest, codec.Envelope, codec.HelloReply, codec.MeasurementReply]


@settings(deadline=None, derandomize=True, max_examples=300, database=None)
@given(value=_JSON, kind=st.sampled_from(_KINDS), as_text=st.booleans())
def test_any_json_decodes_or_is_one_results_file_error(value: Any, kind: type, as_text: bool) -> None:
    try:
        codec.decode(kind, json.dumps(value) if as_text else value, "x.json")
    except ResultsFileError as exc:
        assert str(exc).startswith("x.json") and "\n" not in str(exc)
    EnvRecord.of(value)  # never raises
    LaunchRecord.of(value)
