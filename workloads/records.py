"""The result-record contract: one typed envelope for everything roo-bench writes or prints as JSON.

Every result — a line of a `results.jsonl`, the `--json` output of a command, a file the demo
writes — is one record:

    {"schema": "roo-bench/result/1", "kind": <Kind>, "config_hash": str,
     "status": "ok" | "oom" | "error", "error": str | null,
     "config": {...inputs...}, "metrics": {...outputs...}, "provenance": {...}}

so a reader never has to guess what a file holds from its keys. This module sits at the bottom of
the layering (stdlib only): `harness.results` writes and reads JSONL with it, `reports.loader`
normalizes for the report with it, and commands print their `--json` with it.

Building a record validates it: `make_record` (a dict, ready to write) and `Record`/`from_dict`
(the frozen dataclass of the kind, with typed accessors for the kind's well-known metrics) raise
`RecordError` naming every problem (an unknown kind or status, a failure without a message, a
section that is not an object).

Printing a command's `--json` (the helpers for commands):

- `emit(kind, config, metrics, ...)` prints one record on stdout and returns it (a dict); use it
  when the command builds its inputs and outputs separately.
- `emit_flat(kind, obj, ...)` wraps an existing flat `--json` object: the keys named in the kind's
  `CONFIG_KEYS` go to `config`, `config_hash` (when the object has one) becomes the envelope's,
  every other key goes to `metrics` unchanged, so the numbers stay what they were. `split_flat`
  does the split without printing; `flat_view(record)` gives the flat object back (it returns a
  flat, schema-less object unchanged, so a consumer reads both shapes).

Files written before every output carried its kind (bare `--json` objects saved as `*.json`) are
read through `legacy_kind`: an explicit table of the file names those outputs were saved under
(`LEGACY_FILES`), each with the key set that object must have; anything else is not a record.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TextIO, TypeVar

SCHEMA_PREFIX = "roo-bench/result/"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_PREFIX}{SCHEMA_VERSION}"
KNOWN_VERSIONS = (1,)
REQUIRED = ("schema", "kind", "config_hash", "status", "error", "config", "metrics", "provenance")
# Keys of a flat `--json` object that belong to the envelope rather than to config or metrics.
ENVELOPE_KEYS = ("kind", "config_hash")


class Kind(StrEnum):
    """What a record measures or reports; one per JSON output of the tool."""

    POINT = "point"  # one sweep point: both layouts trained and timed (harness/run_point.py)
    STORAGE = "storage"  # `roo-bench storage`: bytes and seconds per layout x order x codec
    CALIBRATION = "calibration"  # `roo-bench calibrate`, harness.nvml_perturbation
    COMM = "comm"  # `roo-bench comm`: all-to-all bytes and time on W ranks
    MODEL = "model"  # `roo-bench model`: the analytic cost per component
    PROJECT = "project"  # `roo-bench project`: requests/day -> GPU-hours, TB, kWh
    VALIDATE = "validate"  # `roo-bench validate`: analytic vs counted FLOPs and bytes
    BENCH = "bench"  # `roo-bench bench`: train steps per layout, throughput
    PROFILE = "profile"  # `roo-bench profile`: torch.profiler summaries per layout
    SWEEP = "sweep"  # `roo-bench sweep`: the point counts of a run (or the points of a dry run)
    DEMO = "demo"  # `roo-bench demo`: the stages and how each ended
    PRESETS = "presets"  # `roo-bench presets`
    GENERATE = "generate"  # `roo-bench generate`: the datasets written
    CONVERT = "convert"  # `roo-bench convert`: rows and bytes in and out
    FIT = "fit"  # `roo-bench fit`: the fitted spec and the fit report
    ANALYZE = "analyze"  # `roo-bench analyze`: a user's log end to end (storage, fit, cost, projection)

    def __str__(self) -> str:
        return self.value


class Status(StrEnum):
    OK = "ok"
    OOM = "oom"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


KINDS: tuple[str, ...] = tuple(k.value for k in Kind)
T = TypeVar("T")
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


class RecordError(ValueError):
    """A record that breaks the contract; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid result record: " + "; ".join(problems))


# --- canonical JSON and the config hash ---------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same dict always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `config`, first 16 hex digits (as WorkloadSpec.config_hash)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def json_safe(x: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON readers such as pyarrow reject them),
    tuples become lists, numpy scalars become Python numbers, enum members their values."""
    if isinstance(x, StrEnum):
        return x.value
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", None) == 0:
        return json_safe(x.item())
    return x


# --- validation -------------------------------------------------------------------------------------
def _envelope_problems(kind: Any, status: Any, hash_: Any, error: Any, sections: Mapping[str, Any]) -> list[str]:
    p = []
    if kind not in KINDS:
        p.append(f"kind={kind!r}; allowed: {', '.join(KINDS)}")
    if status not in STATUSES:
        p.append(f"status={status!r}; allowed: {', '.join(STATUSES)}")
    if not isinstance(hash_, str) or not hash_:
        p.append("config_hash must be a non-empty string")
    if status != Status.OK and not error:
        p.append(f"status={status!r} needs an error message")
    if error is not None and not isinstance(error, str):
        p.append("error must be a string or null")
    for k, v in sections.items():
        if not isinstance(v, Mapping):
            p.append(f"{k} must be an object")
    return p


def validate_record(rec: Any) -> list[str]:
    """Problems with a record dict (empty list: valid)."""
    if not isinstance(rec, dict):
        return [f"a record is a JSON object, got {type(rec).__name__}"]
    p = [f"missing key {k!r}" for k in REQUIRED if k not in rec]
    if p:
        return p
    sections = {k: rec[k] for k in ("config", "metrics", "provenance")}
    return _envelope_problems(_plain(rec["kind"]), _plain(rec["status"]), rec["config_hash"], rec["error"], sections)


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, StrEnum) else v


def schema_version(schema: Any) -> int | None:
    """The version of a `roo-bench/result/N` schema string; None for any other value."""
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        return None
    try:
        return int(schema[len(SCHEMA_PREFIX) :])
    except ValueError:
        return None


# --- the typed envelope -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One result record. Construction validates; `kind` and `status` accept their string values.
    Subclasses (one per kind) fix `KIND`, name the flat keys that are inputs (`CONFIG_KEYS`) and
    add typed accessors for the kind's well-known metrics."""

    kind: Kind
    config: Mapping[str, Any]
    metrics: Mapping[str, Any]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    status: Status = Status.OK
    error: str | None = None
    config_hash: str = ""  # empty: the hash of `config`
    schema: str = SCHEMA

    KIND: ClassVar[Kind | None] = None
    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()
    # True where the kind's flat output names the record it summarizes by its `config_hash`
    HASH_IN_FLAT: ClassVar[bool] = False

    def __post_init__(self) -> None:
        hash_ = self.config_hash
        if hash_ == "" and isinstance(self.config, Mapping):
            hash_ = config_hash(json_safe(self.config))
        sections = {"config": self.config, "metrics": self.metrics, "provenance": self.provenance}
        problems = _envelope_problems(_plain(self.kind), _plain(self.status), hash_, self.error, sections)
        if schema_version(self.schema) not in KNOWN_VERSIONS:
            problems.append(f"schema={self.schema!r}; this roo-bench writes {SCHEMA}")
        if not problems and self.KIND is not None and Kind(self.kind) is not self.KIND:
            problems.append(f"kind={_plain(self.kind)!r} in a {type(self).__name__} (kind {self.KIND.value!r})")
        if problems:
            raise RecordError(problems)
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "status", Status(self.status))
        object.__setattr__(self, "config_hash", hash_)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def metric(self, key: str, default: Any = None) -> Any:
        return self.metrics.get(key, default)


class _Metric(Generic[T]):
    """A typed read-only view of one metric of a record: `metrics[key]`, None when absent."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __get__(self, rec: Record | None, owner: type | None = None) -> T | None:
        if rec is None:
            return None
        value: T | None = rec.metrics.get(self.key)
        return value


_Rows = list[dict[str, Any]]
_PerLayout = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class PointRecord(Record):
    KIND = Kind.POINT
    layouts = _Metric[_PerLayout]("layouts")
    speedup = _Metric[float]("speedup")
    predicted_speedup = _Metric[float]("predicted_speedup")


@dataclass(frozen=True)
class StorageRecord(Record):
    KIND = Kind.STORAGE
    CONFIG_KEYS = ("preset", "seed", "data")
    formats = _Metric[_Rows]("formats")
    measured_uncompressed_ratio = _Metric[float]("measured_uncompressed_ratio")
    predicted_uncompressed_ratio = _Metric[float]("predicted_uncompressed_ratio")


@dataclass(frozen=True)
class CalibrationRecord(Record):
    KIND = Kind.CALIBRATION
    CONFIG_KEYS = ("device",)
    device_name = _Metric[str]("device_name")
    matmul_flops = _Metric[float]("matmul_flops")
    copy_bandwidth = _Metric[float]("copy_bandwidth")
    # the step-time model's tables (roo_ref.cost.kernel_classes); absent from roofs-only records
    kernel_classes = _Metric[dict[str, Any]]("kernel_classes")


@dataclass(frozen=True)
class CommRecord(Record):
    KIND = Kind.COMM
    HASH_IN_FLAT = True
    CONFIG_KEYS = (
        "preset",
        "world_size",
        "nproc",
        "device",
        "backend",
        "sharding",
        "embedding_dim",
        "comm_dtype",
        "requests_per_rank",
        "steps",
    )
    layouts = _Metric[_PerLayout]("layouts")
    saving = _Metric[float]("saving")


@dataclass(frozen=True)
class ModelRecord(Record):
    KIND = Kind.MODEL
    CONFIG_KEYS = ("preset", "device", "dtype", "exact", "world_size", "model")
    components = _Metric[_Rows]("components")
    totals = _Metric[_PerLayout]("totals")
    predicted_speedup = _Metric[float]("predicted_speedup")


@dataclass(frozen=True)
class ProjectRecord(Record):
    KIND = Kind.PROJECT
    CONFIG_KEYS = ("preset", "device", "device_key", "dtype", "gpus", "requests_per_day", "power_w", "bus_bw")
    layouts = _Metric[_PerLayout]("layouts")
    savings = _Metric[dict[str, float]]("savings")


@dataclass(frozen=True)
class ValidateRecord(Record):
    KIND = Kind.VALIDATE
    CONFIG_KEYS = ("reduced",)
    max_rel_error = _Metric[float]("max_rel_error")


@dataclass(frozen=True)
class BenchRecord(Record):
    KIND = Kind.BENCH
    CONFIG_KEYS = ("preset", "device", "dtype", "model", "spec_overrides")
    layouts = _Metric[_PerLayout]("layouts")
    speedup = _Metric[float]("speedup")


@dataclass(frozen=True)
class ProfileRecord(Record):
    KIND = Kind.PROFILE
    CONFIG_KEYS = ("preset", "device", "dtype", "model", "spec_overrides")
    layouts = _Metric[_PerLayout]("layouts")


@dataclass(frozen=True)
class SweepRecord(Record):
    KIND = Kind.SWEEP
    CONFIG_KEYS = ("sweep", "out")
    points_total = _Metric[int]("points_total")


@dataclass(frozen=True)
class DemoRecord(Record):
    KIND = Kind.DEMO
    CONFIG_KEYS = ("device",)
    stages = _Metric[_Rows]("stages")


@dataclass(frozen=True)
class PresetsRecord(Record):
    KIND = Kind.PRESETS
    presets = _Metric[_Rows]("presets")


@dataclass(frozen=True)
class GenerateRecord(Record):
    KIND = Kind.GENERATE
    CONFIG_KEYS = ("out", "preset", "seed", "requests")
    datasets = _Metric[_PerLayout]("datasets")


@dataclass(frozen=True)
class ConvertRecord(Record):
    KIND = Kind.CONVERT
    rows_out = _Metric[int]("rows_out")
    dedup_factor = _Metric[float]("dedup_factor")


@dataclass(frozen=True)
class FitRecord(Record):
    KIND = Kind.FIT
    CONFIG_KEYS = ("out",)
    spec = _Metric[dict[str, Any]]("spec")


@dataclass(frozen=True)
class AnalyzeRecord(Record):
    KIND = Kind.ANALYZE
    CONFIG_KEYS = tuple("input request_key roles_options on_conflict model hardware dtype".split())
    CONFIG_KEYS += ("requests_per_day", "gpus", "batch_requests", "out")
    savings = _Metric[dict[str, float]]("savings")


_TYPES: tuple[type[Record], ...] = (PointRecord, StorageRecord, CalibrationRecord, CommRecord, ModelRecord)
_TYPES += (ProjectRecord, ValidateRecord, BenchRecord, ProfileRecord, SweepRecord, DemoRecord, PresetsRecord)
_TYPES += (GenerateRecord, ConvertRecord, FitRecord, AnalyzeRecord)
RECORD_TYPES: dict[Kind, type[Record]] = {t.KIND: t for t in _TYPES if t.KIND is not None}
assert set(RECORD_TYPES) == set(Kind), "every kind has its record type"


def record_type(kind: Kind | str) -> type[Record]:
    """The dataclass of `kind`; RecordError for a kind this roo-bench does not know."""
    try:
        return RECORD_TYPES[Kind(kind)]
    except ValueError:
        raise RecordError([f"kind={_plain(kind)!r}; allowed: {', '.join(KINDS)}"]) from None


# --- construction and conversion --------------------------------------------------------------------
def new_record(
    kind: Kind | str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    status: Status | str = Status.OK,
    error: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    hash_config: Mapping[str, Any] | None = None,
    known_hash: str | None = None,
) -> Record:
    """A validated Record of `kind` with JSON-safe sections. The hash is `known_hash` when given (a
    record that stands for another, e.g. a summary of a comm run), else that of `hash_config` (run_point
    hashes its input config, so a sweep can tell a point is done before running it), else of `config`."""
    if known_hash is None:
        hc = hash_config if hash_config is not None else config
        known_hash = config_hash(json_safe(hc)) if isinstance(hc, Mapping) else ""
    return record_type(kind)(
        kind=kind,  # type: ignore[arg-type]  # a str value is checked and converted on construction
        config=json_safe(config) if isinstance(config, Mapping) else config,
        metrics=json_safe(metrics) if isinstance(metrics, Mapping) else metrics,
        provenance=json_safe(provenance if provenance is not None else {}),
        status=status,  # type: ignore[arg-type]
        error=error,
        config_hash=known_hash,
    )


def to_dict(rec: Record) -> dict[str, Any]:
    """The record as the JSON object of the contract (plain strings for kind and status)."""
    return {
        "schema": rec.schema,
        "kind": rec.kind.value,
        "config_hash": rec.config_hash,
        "status": rec.status.value,
        "error": rec.error,
        "config": dict(rec.config),
        "metrics": dict(rec.metrics),
        "provenance": dict(rec.provenance),
    }


def from_dict(d: Any) -> Record:
    """The typed Record of a record dict; RecordError listing every problem."""
    problems = validate_record(d)
    if not problems and schema_version(d["schema"]) not in KNOWN_VERSIONS:
        problems.append(f"schema {d['schema']!r} is not one this roo-bench reads")
    if problems:
        raise RecordError(problems)
    return record_type(d["kind"])(
        kind=d["kind"],
        config=d["config"],
        metrics=d["metrics"],
        provenance=d["provenance"],
        status=d["status"],
        error=d["error"],
        config_hash=d["config_hash"],
        schema=d["schema"],
    )


def make_record(
    kind: Kind | str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    status: Status | str = Status.OK,
    error: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    hash_config: Mapping[str, Any] | None = None,
    known_hash: str | None = None,
) -> dict[str, Any]:
    """A validated record dict, ready to write (see `new_record` for the hash)."""
    rec = new_record(
        kind,
        config,
        metrics,
        status=status,
        error=error,
        provenance=provenance,
        hash_config=hash_config,
        known_hash=known_hash,
    )
    return to_dict(rec)


# --- the --json helpers -----------------------------------------------------------------------------
def split_flat(kind: Kind | str, obj: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(config, metrics, config_hash) of a flat `--json` object of `kind`: the kind's CONFIG_KEYS go
    to config, a `config_hash` key is the envelope's, a `kind` key is dropped (the record carries it),
    every other key goes to metrics; key order is kept."""
    keys = record_type(kind).CONFIG_KEYS
    config = {k: v for k, v in obj.items() if k in keys}
    metrics = {k: v for k, v in obj.items() if k not in keys and k not in ENVELOPE_KEYS}
    h = obj.get("config_hash")
    return config, metrics, h if isinstance(h, str) and h else None


def record_from_flat(
    kind: Kind | str,
    obj: Mapping[str, Any],
    *,
    provenance: Mapping[str, Any] | None = None,
    status: Status | str = Status.OK,
    error: str | None = None,
) -> dict[str, Any]:
    """The record dict of a flat `--json` object of `kind` (see `split_flat`)."""
    config, metrics, h = split_flat(kind, obj)
    return make_record(kind, config, metrics, status=status, error=error, provenance=provenance, known_hash=h)


def flat_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The flat object a record wraps ({**config, **metrics}, plus `config_hash` where the kind's
    flat output has one, HASH_IN_FLAT); a schema-less object is returned as it is. For consumers that read an
    output of either shape (e.g. `project --storage FILE`)."""
    if schema_version(obj.get("schema")) is None:
        return dict(obj)
    out = {**obj.get("config", {}), **obj.get("metrics", {})}
    kind = obj.get("kind")
    if kind in KINDS and RECORD_TYPES[Kind(kind)].HASH_IN_FLAT:
        out["config_hash"] = obj.get("config_hash")
    return out


def print_record(rec: Mapping[str, Any], file: TextIO | None = None) -> None:
    """One record as one line of JSON (a command's `--json` output)."""
    print(json.dumps(rec, allow_nan=False), file=file if file is not None else sys.stdout)


def emit(
    kind: Kind | str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    status: Status | str = Status.OK,
    error: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    file: TextIO | None = None,
) -> dict[str, Any]:
    """Print one validated record of `kind` on stdout (or `file`) and return it."""
    rec = make_record(kind, config, metrics, status=status, error=error, provenance=provenance)
    print_record(rec, file)
    return rec


def emit_flat(
    kind: Kind | str,
    obj: Mapping[str, Any],
    *,
    provenance: Mapping[str, Any] | None = None,
    file: TextIO | None = None,
) -> dict[str, Any]:
    """Print a flat `--json` object of `kind` as a record (split by `split_flat`) and return it."""
    rec = record_from_flat(kind, obj, provenance=provenance)
    print_record(rec, file)
    return rec


# --- legacy files -------------------------------------------------------------------------------------
def _per_layout(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    src = obj.get("layouts") if isinstance(obj.get("layouts"), Mapping) else obj
    assert isinstance(src, Mapping)
    return [v for k, v in src.items() if k in ("impression", "roo") and isinstance(v, Mapping)]


def _storage_shape(o: Mapping[str, Any]) -> bool:
    return "formats" in o and ("predicted_uncompressed_ratio" in o or "measured_uncompressed_ratio" in o)


def _model_shape(o: Mapping[str, Any]) -> bool:
    return "components" in o and "totals" in o


def _calibration_shape(o: Mapping[str, Any]) -> bool:
    return "matmul_flops" in o and "copy_bandwidth" in o


def _comm_shape(o: Mapping[str, Any]) -> bool:
    return any("counted_bytes_per_step" in d for d in _per_layout(o))


def _project_shape(o: Mapping[str, Any]) -> bool:
    return any("gpu_hours_per_day" in d for d in _per_layout(o))


def _demo_shape(o: Mapping[str, Any]) -> bool:
    return isinstance(o.get("stages"), list)


# The file names bare `--json` outputs were saved under (the demo's results/, reports/data/, the
# test fixtures), the kind each holds and the keys that output always has. Matched in order on the
# file name; a bare object under another name, or without its kind's keys, is not a record.
LEGACY_FILES: tuple[tuple[str, Kind, Any], ...] = (
    ("storage*.json", Kind.STORAGE, _storage_shape),
    ("model*.json", Kind.MODEL, _model_shape),
    ("calibration*.json", Kind.CALIBRATION, _calibration_shape),
    ("comm*.json", Kind.COMM, _comm_shape),
    ("project*.json", Kind.PROJECT, _project_shape),
    ("demo*.json", Kind.DEMO, _demo_shape),
)


def legacy_kind(file_name: str, obj: Any) -> Kind | None:
    """The kind of a schema-less object read from a file named `file_name`: its own `kind` field
    when that names a kind, else the LEGACY_FILES entry its name matches, if it has that kind's keys."""
    if not isinstance(obj, Mapping):
        return None
    own = obj.get("kind")
    if isinstance(own, str) and own in KINDS:
        return Kind(own)
    for pattern, kind, has_shape in LEGACY_FILES:
        if fnmatch.fnmatchcase(file_name, pattern) and has_shape(obj):
            return kind
    return None
