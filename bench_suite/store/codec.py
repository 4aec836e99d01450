"""The one codec: the wire schemas of everything the suite saves or sends between processes,
one way to decode them and one way to encode them.

Documents (each a msgspec ``Struct``, frozen, unknown keys ignored):

* run files: :class:`RunDoc` (header fields of :class:`RunHeader` + :class:`MeasurementDoc`,
  each with :class:`RoundDoc` rounds; version 1 measurements, whose samples are one round,
  still decode);
* journal lines: the header line is a :class:`RunHeader`, each further line a
  :class:`JournalEntry` (``{"measurement": ...}``);
* run sets (:class:`RunSetDoc`), peaks files (:class:`PeaksDoc`), noise profiles
  (:class:`NoiseDoc`);
* run options, as a run's ``config`` saves them and ``--resume`` reads them back
  (:class:`SavedOptions`: ``seed``, ``timing``, ``gpu_options``);
* what a rank of a launch sends rank 0 (``measure/distributed.py``): its run's
  :class:`RunHeader`, each :class:`MeasurementDoc`, and :class:`RankDone`;
* the worker protocol (``measure/worker.py`` and ``measure/isolation.py``): requests
  :class:`MeasureRequest`, :class:`EnvRequest`, :class:`ImportRequest`, :class:`GateAnswer`;
  replies :class:`HelloReply`, :class:`MeasurementReply`, :class:`EnvReply`.

:func:`decode` turns JSON text or an already parsed object into one of them; every problem
becomes one :class:`ResultsFileError` line naming the file (``where``) and the JSON path of
what is wrong (``runs/x.json: measurements[3].rounds[1].samples_s[2]: sample -1.0 is not ...``).
:func:`encode` writes the one JSON form of saved files. Domain records (``results.Run``,
``peaks.Peak``, ``runner.RunOptions``...) are built from these documents beside their own
classes; the documents only say what a valid file is.

Why msgspec: it decodes large sample arrays straight into typed, frozen Structs in C (a run
file of a million samples in 0.10 s; the hand-written checks it replaced took 0.47 s:
``scripts/bench_load.py``), its errors carry the JSON path, constraints
(``Meta``) and ``__post_init__`` checks are part of the schema, and it has no dependencies of
its own. JSON text that msgspec refuses is parsed again by :func:`parse_json` (the standard
library, strict) only to word the error as before: truncated files, NaN constants, numbers
out of range and deep nesting keep their messages.
"""

from __future__ import annotations

import json
import math
import re
import sys
import types
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from bench_suite.core import stats
from bench_suite.core.cases import Case
from bench_suite.core.errors import BenchSuiteError, ResultsFileError
from bench_suite.core.timing import SamplingPlan

STATUSES = ("ok", "failed", "skipped")
MAX_SAMPLES_IN_FILE = 10_000_000
#: Longest per-call time a file may hold (11.6 days): beyond it a value is corrupt, not slow,
#: and sums of such values would overflow the statistics.
MAX_SAMPLE_S = 1e6
MAX_TEXT = 100_000

# --- field types --------------------------------------------------------------------------

Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Sample = Annotated[float, Meta(ge=0, le=MAX_SAMPLE_S)]
Samples = Annotated[tuple[Sample, ...], Meta(max_length=MAX_SAMPLES_IN_FILE)]
Object = dict[str, Any]
#: A float from a file: never infinite or NaN (JSON text cannot hold them; objects built in
#: Python can).
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
PositiveRate = Annotated[float, Meta(gt=0, le=sys.float_info.max)]


class Wire(Struct, frozen=True, kw_only=True):
    """Base of every document: immutable, unknown keys ignored (newer files may add some)."""


class Document(Wire, frozen=True, kw_only=True):
    """A saved file: its ``schema`` and ``version`` say what it is (checked first)."""

    SCHEMA: ClassVar[str] = ""
    VERSIONS: ClassVar[tuple[int, ...]] = ()
    KIND: ClassVar[str] = ""  # "not a bench-suite <KIND>"
    VERSION_OF: ClassVar[str] = ""  # "<VERSION_OF> version 9; ..." (default: KIND)
    #: Messages kept from before the codec, by JSON path: what a type error there says.
    MESSAGES: ClassVar[dict[str, str]] = {}

    schema: Any = None
    version: Any = None

    def __post_init__(self) -> None:
        # also checked on the raw object before decoding (decode): here for nested documents
        problem = header_problem({"schema": self.schema, "version": self.version}, type(self))
        if problem:
            raise ValueError(problem)


def header_problem(data: Any, doc: type[Document]) -> str:
    """What is wrong with a document's ``schema``/``version`` ("" if nothing)."""
    if not isinstance(data, dict) or data.get("schema") is None:
        return f"not a bench-suite {doc.KIND} (no 'schema' field)"
    if data["schema"] != doc.SCHEMA:
        return f"not a bench-suite {doc.KIND}: schema {_show(data['schema'])} is not {doc.SCHEMA!r}"
    version = data.get("version")
    if isinstance(version, bool) or version not in doc.VERSIONS:
        s = "s" if len(doc.VERSIONS) > 1 else ""
        return (f"{doc.VERSION_OF or doc.KIND} version {_show(version)}; this bench-suite reads version{s} "
                f"{', '.join(map(str, doc.VERSIONS))}")
    return ""


# --- run files and journals ----------------------------------------------------------------


class RoundDoc(Wire, frozen=True, kw_only=True):
    index: Count = 0
    samples_s: Samples = ()
    number: Count = 0
    warmup_calls: Count = 0
    stop: Text = ""
    started_at: Text = ""
    wall_s: Finite = 0.0
    contention: Finite | None = None
    steal: Finite | None = None
    wait_frac: Finite | None = None
    retaken: Count = 0
    contended: bool = False


#: Statistics a foreign source gave (``Measurement.given_summary``): ``n`` and NaN-or-number
#: for the others (null in the file).
GivenSummary = msgspec.defstruct(
    "GivenSummary",
    [("n", Count), *((k, Finite | None, None) for k in stats.Summary.__dataclass_fields__ if k != "n")],
    bases=(Wire,), frozen=True, kw_only=True, module=__name__,
)


class MeasurementDoc(Wire, frozen=True, kw_only=True):
    case: Object
    case_id: Any = UNSET
    status: Text
    reason: Text = ""
    rounds: tuple[RoundDoc, ...] | UnsetType = UNSET  # version 2
    # version 1: the measurement's one round
    samples_s: Samples = ()
    number: Count = 0
    warmup_calls: Count = 0
    stop: Text = ""
    rel_error: Finite | None = None
    tolerance: Finite | None = None
    check: Text = ""
    threads: Count | None = None
    peak_mem_bytes: Count | None = None
    device_name: Text = ""
    started_at: Text = ""
    wall_s: Finite = 0.0
    given_summary: GivenSummary | UnsetType = UNSET  # type: ignore[valid-type]
    extra: Object = {}

    def __post_init__(self) -> None:
        try:
            case = Case.from_dict(self.case)
        except BenchSuiteError as exc:
            raise ValueError(f"case: {exc}") from None
        if self.case_id is not UNSET and self.case_id != case.id:
            raise ValueError(f"case_id {_show(self.case_id)} does not match its case ({case.id})")
        if self.status not in STATUSES:
            raise ValueError(f"status: {_show(self.status)} is not one of {', '.join(STATUSES)}")
        rounds = self.round_docs()
        if sum(len(r.samples_s) for r in rounds) > MAX_SAMPLES_IN_FILE:
            raise ValueError("too many samples")
        if self.status == "ok" and not any(r.samples_s for r in rounds) and self.given_summary is UNSET:
            raise ValueError("status ok but no samples")

    def round_docs(self) -> tuple[RoundDoc, ...]:
        """The rounds, a version 1 measurement's samples as its one round."""
        if not isinstance(self.rounds, UnsetType):
            return self.rounds
        if not self.samples_s:
            return ()
        return (RoundDoc(samples_s=self.samples_s, number=self.number, warmup_calls=self.warmup_calls,
                         stop=self.stop, started_at=self.started_at),)


class RunHeader(Document, frozen=True, kw_only=True):
    """A run file's fields besides its measurements: a journal's first line."""

    SCHEMA: ClassVar[str] = "bench-suite/run"
    VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)
    KIND: ClassVar[str] = "run file"

    run_id: Text
    machine: Text
    created_at: Text = ""
    env: Object = {}
    config: Object = {}
    finished_at: Text = ""
    complete: bool = True
    source: Text = "bench-suite"


class RunDoc(RunHeader, frozen=True, kw_only=True):
    measurements: tuple[MeasurementDoc, ...]


class JournalEntry(Wire, frozen=True, kw_only=True):
    measurement: MeasurementDoc


# --- run sets, peaks, noise profiles ---------------------------------------------------------

RANK_STATUSES = ("complete", "incomplete", "lost")


class RankDoc(Wire, frozen=True, kw_only=True):
    rank: Annotated[int, Meta(ge=0, lt=1 << 31)]
    host: str = ""
    status: Any = None
    measurements: Annotated[int, Meta(ge=0, lt=1 << 31)] = 0
    path: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in RANK_STATUSES:
            raise ValueError(f"status: {_show(self.status)} is not one of {', '.join(RANK_STATUSES)}")


class RunSetDoc(Document, frozen=True, kw_only=True):
    SCHEMA: ClassVar[str] = "bench-suite/run-set"
    VERSIONS: ClassVar[tuple[int, ...]] = (1,)
    KIND: ClassVar[str] = "run set"
    VERSION_OF: ClassVar[str] = "run-set"
    MESSAGES: ClassVar[dict[str, str]] = {
        "runs": "'runs' and 'ranks' must be lists", "ranks": "'runs' and 'ranks' must be lists",
        "world_size": "world_size: expected a positive count"}

    run_id: str = ""
    created_at: str = ""
    finished_at: str = ""
    world_size: Annotated[int, Meta(gt=0, lt=1 << 20)]
    launcher: str = ""
    ranks: tuple[RankDoc, ...] = ()
    runs: tuple[RunDoc, ...]


PEAK_SOURCES = ("measured", "datasheet", "theoretical", "link")


class PeakDoc(Wire, frozen=True, kw_only=True):
    device: str = ""
    dtype: str = ""
    flops_per_s: PositiveRate | None = None
    bytes_per_s: PositiveRate | None = None
    source: str = ""
    note: str = ""
    device_name: str = ""
    machine: str = ""
    backend: str = ""
    threads: Annotated[int, Meta(gt=0)] | None = None
    details: Object = {}

    def __post_init__(self) -> None:
        if self.source not in PEAK_SOURCES:
            raise ValueError(f"source: {_show(self.source)} is not one of {', '.join(PEAK_SOURCES)}")


class PeaksDoc(Document, frozen=True, kw_only=True):
    SCHEMA: ClassVar[str] = "bench-suite/peaks"
    VERSIONS: ClassVar[tuple[int, ...]] = (1,)
    KIND: ClassVar[str] = "peaks file"

    machine: str
    created_at: Any = ""
    env: Object = {}
    config: Object = {}
    peaks: tuple[PeakDoc, ...]


class CaseNoiseDoc(Wire, frozen=True, kw_only=True):
    case_id: Text
    rounds: Count = 0
    median_s: Finite | None = None  # None (or absent): not known, NaN
    round_sd: Finite | None = None
    pair_sd: Finite | None = None
    bimodal: bool = False
    contended_rounds: Count = 0


class NoiseDoc(Document, frozen=True, kw_only=True):
    SCHEMA: ClassVar[str] = "bench-suite/noise"
    VERSIONS: ClassVar[tuple[int, ...]] = (1,)
    KIND: ClassVar[str] = "noise profile"

    machine: Text
    created_at: Text = ""
    env: Object = {}
    config: Object = {}
    cases: tuple[CaseNoiseDoc, ...]


# --- run options ------------------------------------------------------------------------------

_PLAN_DEFAULTS = {name: f.default for name, f in SamplingPlan.__dataclass_fields__.items()}


def _whole_numbers(self: Any) -> None:
    for name, default in _PLAN_DEFAULTS.items():
        value = getattr(self, name)
        if isinstance(default, int) and value is not UNSET and not float(value).is_integer():
            raise ValueError(f"{name}: expected a whole number, got {_show(value)}")


#: ``core.timing.SamplingPlan`` as saved (``config["timing"]``, a worker request's
#: ``timing``): a number per setting; a setting the file lacks keeps the plan's default, one it
#: has that this version lacks is ignored.
TimingDoc = msgspec.defstruct(
    "TimingDoc", [(name, float | UnsetType, UNSET) for name in _PLAN_DEFAULTS],
    bases=(Wire,), frozen=True, kw_only=True, module=__name__,
    namespace={"__post_init__": _whole_numbers},
)


def plan_settings(doc: Any) -> dict[str, int | float]:
    """The settings a :data:`TimingDoc` holds, as ``SamplingPlan`` keyword arguments."""
    out: dict[str, int | float] = {}
    for name, default in _PLAN_DEFAULTS.items():
        value = getattr(doc, name)
        if value is not UNSET:
            out[name] = int(value) if isinstance(default, int) else float(value)
    return out


class GpuDoc(Wire, frozen=True, kw_only=True):
    """``measure.gpu.TimingMode`` as saved (``config["gpu_options"]``, a worker request's
    ``gpu``). Read leniently (:func:`lenient`): a setting missing or malformed keeps its
    default, as a file from another version may hold."""

    cold_cache: bool | UnsetType = UNSET
    cuda_graphs: bool | UnsetType = UNSET
    nvml: bool | UnsetType | None = UNSET
    flush_bytes: Annotated[int, Meta(gt=0)] | UnsetType = UNSET
    warmup_gpu_s: Annotated[float, Meta(ge=0, le=60)] | UnsetType = UNSET
    nvml_interval_s: Annotated[float, Meta(ge=0.001, le=10)] | UnsetType = UNSET

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not UNSET}


Seed = Annotated[int, Meta(ge=0, le=2**63 - 1)]


class SavedOptions(Wire, frozen=True, kw_only=True):
    """The options a run's ``config`` saves (``runner.RunOptions.to_config``)."""

    seed: Seed = 0
    timing: TimingDoc = TimingDoc()  # type: ignore[valid-type]
    gpu_options: Any = None  # GpuDoc, read leniently


# --- the worker protocol ----------------------------------------------------------------------

#: Version of the messages exchanged with a worker. Optional fields may be added without a
#: bump; the parent checks the hello's protocol before it sends anything.
PROTOCOL = 1


class Message(Wire, frozen=True, kw_only=True):
    protocol: int

    def __post_init__(self) -> None:
        if self.protocol != PROTOCOL:
            raise ValueError(f"protocol {_show(self.protocol)}, not {PROTOCOL}")


class Envelope(Message, frozen=True, kw_only=True):
    """What every request says of itself: which command (none: measure a case)."""

    cmd: str | None = None
    timeout_s: float | None = None


class MeasureRequest(Message, frozen=True, kw_only=True):
    case: Object
    seed: Seed = 0
    timing: TimingDoc = TimingDoc()  # type: ignore[valid-type]
    gpu: Any = None  # GpuDoc, read leniently
    round: Count = 0
    timeout_s: float | None = None
    lockstep: bool = False
    siblings: tuple[int, ...] = ()  # process ids of the other side's workers (ab)


class EnvRequest(Message, frozen=True, kw_only=True):
    cmd: str = "env"
    machine: str | None = None


class ImportRequest(Message, frozen=True, kw_only=True):
    cmd: str = "import"
    backends: tuple[str, ...] = ()


class GateAnswer(Message, frozen=True, kw_only=True):
    gate: str  # go | stop | free


class Hello(Wire, frozen=True, kw_only=True):
    pid: int | None = None
    python: str | None = None
    version: str | None = None
    module: str | None = None


class HelloReply(Message, frozen=True, kw_only=True):
    hello: Hello


class MeasurementReply(Message, frozen=True, kw_only=True):
    measurement: MeasurementDoc


class EnvReply(Message, frozen=True, kw_only=True):
    env: Object


class RankDone(Wire, frozen=True, kw_only=True):
    """A rank's last word to rank 0 in a launch (``measure.distributed``), read leniently."""

    complete: bool = False
    finished_at: str = ""
    measurements: int = 0
    error: str = ""


# --- decoding ---------------------------------------------------------------------------------

T = TypeVar("T")
_NOTHING = object()


def decode(kind: type[T], source: str | bytes | Any, where: str) -> T:
    """``source`` (JSON text, or an object parsed already) as a ``kind`` document; any problem
    is one ResultsFileError line: ``where``, the JSON path, what is wrong."""
    if isinstance(source, (str, bytes)):
        try:
            return msgspec.json.decode(source, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            # word the problem as the strict parser does, or by the path to the bad value
            source = parse_json(source if isinstance(source, str) else _text(source, where), where)
    if isinstance(kind, type) and issubclass(kind, Document):
        problem = header_problem(source, kind)
        if problem:
            raise ResultsFileError(f"{where}: {problem}")
    try:
        return msgspec.convert(source, kind)
    except msgspec.ValidationError as exc:
        raise ResultsFileError(f"{where}: {explain(exc, source, getattr(kind, 'MESSAGES', {}))}") from None
    except RecursionError:
        raise ResultsFileError(f"{where}: JSON nested too deeply") from None


def lenient(kind: type[T], data: Any) -> T:
    """``data`` as ``kind`` keeping only the fields that are valid, each on its own (every
    field of ``kind`` needs a default): for records whose content varies with the version and
    the machine that wrote them. Nested Structs, lists of them and dicts are lenient too: a
    bad element or entry is dropped, never an error; a number where text is expected becomes
    its text."""
    fields = {f.name: f for f in msgspec.structs.fields(kind)}  # type: ignore[arg-type]
    if not isinstance(data, Mapping):
        return kind()
    kept: dict[str, Any] = {}
    for name, f in fields.items():
        if f.encode_name in data:
            value = _lenient_value(f.type, data[f.encode_name])
            if value is not _NOTHING:
                kept[name] = value
    return kind(**kept)


def _lenient_value(tp: Any, value: Any) -> Any:
    inner = _struct_in(tp)
    if inner is not None:
        return lenient(inner, value) if isinstance(value, Mapping) else _NOTHING
    origin = get_origin(tp)
    if origin in (tuple, list) and isinstance(value, list):
        (item, *_) = get_args(tp)
        kept = [_lenient_value(item, v) for v in value]
        return tuple(v for v in kept if v is not _NOTHING)
    if origin is dict and isinstance(value, Mapping):
        _, item = get_args(tp)
        kept_items = {str(k): _lenient_value(item, v) for k, v in value.items()}
        return {k: v for k, v in kept_items.items() if v is not _NOTHING}
    if _wants_text(tp) and isinstance(value, (int, float)) and not isinstance(value, bool):
        # a number where text is expected (a version some tool wrote as 3): its text
        return str(int(value) if isinstance(value, float) and value.is_integer() else value)
    try:
        return msgspec.convert(value, tp)
    except (msgspec.ValidationError, TypeError, RecursionError, OverflowError):
        return _NOTHING


def _wants_text(tp: Any) -> bool:
    return tp is str or (get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {str, type(None)})


def _struct_in(tp: Any) -> type[Struct] | None:
    """The Struct type of a field typed ``S`` or ``S | None``."""
    if isinstance(tp, type) and issubclass(tp, Struct):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        found = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, Struct)]
        return found[0] if len(found) == 1 else None
    return None


# Error messages: msgspec's, reworded in the suite's voice, at the path msgspec gives.
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+|\.\.\.)\]")
_JSON_NAMES = {"str": "a string", "bool": "true or false", "object": "an object", "null": "null"}


def explain(exc: msgspec.ValidationError, source: Any = _NOTHING, messages: Mapping[str, str] = {}) -> str:
    """One line for a msgspec ValidationError: ``path: what is wrong`` (``source``: the object
    decoded, to show the value at the path; ``messages``: the words for a path, if any)."""
    m = _AT.match(str(exc))
    what, path = (m["what"], m["path"] or "") if m else (str(exc), "")
    if path.lstrip(".") in messages:
        return messages[path.lstrip(".")]
    missing = re.match(r"Object missing required field `(.+)`", what)
    if missing:
        return f"{path}.{missing[1]}".lstrip(".") + ": missing"
    where = path.lstrip(".")
    text = _reword(what, where, _at(source, path))
    if text.startswith("'"):  # names the path itself
        return text
    return f"{where}: {text}" if where else text


def _reword(what: str, where: str, value: Any) -> str:
    shown = _show(value) if value is not _NOTHING else ""
    key = where.rsplit(".", 1)[-1].split("[", 1)[0]
    expected = re.match(r"Expected `([a-z]+)[^`]*`(?:, got `([a-z]+)`)?", what)
    wanted, got = (expected[1], expected[2]) if expected else ("", None)
    bounds = what[len(expected[0]):].strip() if expected and not got else ""
    got_text = shown or got or "another type"
    if wanted == "array" and got:
        return f"'{where}' must be a list, got {got}"
    if what.startswith("Expected `array` of length"):
        return f"too many {'samples' if key == 'samples_s' else 'entries'}"
    if what.startswith("Expected `str` of length"):
        return "string too long"
    if key == "samples_s" and where.endswith("]"):  # one sample
        if got:
            return f"expected numbers, found {got_text}"
        return f"sample {shown or 'it'} is not a finite non-negative time of at most {MAX_SAMPLE_S:g} s"
    if what == "Number out of range" or str(sys.float_info.max) in what:
        return "number out of range"
    if wanted == "int" or what == "Integer value out of range":
        if got:  # every whole number in the schemas counts something: samples, ranks, a seed
            return f"expected a count, got {got_text}"
        count = ">= 0" in bounds or str(2**63 - 1) in bounds or not bounds
        return f"expected {'a count 0..2**63' if count else 'a whole number ' + bounds}, got {got_text}"
    if wanted == "float":
        return f"expected a number{' ' + bounds if bounds else ''}, got {got_text}"
    if wanted in _JSON_NAMES:
        return f"expected {_JSON_NAMES[wanted]}, got {got or shown}"
    return what  # a check of the schema's own (__post_init__), worded already


def _at(source: Any, path: str) -> Any:
    """The value at a msgspec path in a parsed object, or _NOTHING."""
    node = source
    for key, index in _TOKEN.findall(path):
        if index == "...":
            return _NOTHING
        if key and isinstance(node, dict) and key in node:
            node = node[key]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return _NOTHING
    return node


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{where}: not a text file (binary data)") from None


# --- strict JSON --------------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    # 1e999 parses as inf: reject it here, so no infinity hides in env, config or extra and
    # breaks a later strict write (a resumed run re-writes them).
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(text: str, where: str) -> Any:
    """Strict JSON (no NaN or Infinity, no number beyond a float) as plain Python objects:
    for documents whose kind is told by their content (``sources.detect``)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ResultsFileError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and int-digit limits are ValueErrors
        msg = str(exc).splitlines()[0]
        raise ResultsFileError(f"{where}: not valid JSON ({msg}); truncated or not a run file?") from None


# --- encoding -----------------------------------------------------------------------------------


def _builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj) if isinstance(obj, Struct) else obj


def encode(doc: Mapping[str, Any] | Struct) -> str:
    """The one JSON form of every file the suite saves (runs, run sets, peaks, noise profiles):
    strict (NaN refused: ``json_safe`` first), one space of indent, a final newline."""
    return json.dumps(_builtins(doc), allow_nan=False, indent=1) + "\n"


def encode_line(doc: Mapping[str, Any] | Struct) -> str:
    """One line of JSON Lines (a journal line, a worker message), strict, with its newline."""
    # allow_nan=False: NaN is not JSON, and a line other tools cannot read is a lost result.
    return json.dumps(_builtins(doc), allow_nan=False, separators=(",", ":"), ensure_ascii=False) + "\n"


def json_safe(value: Any) -> Any:
    """Make a value JSON-safe for ``extra``/``env``: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value

