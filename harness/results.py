"""The results store: JSONL, one record per measured point (schema in docs/contracts.md, "Results").

Writing: `append_record` writes one whole line with a single write() on an O_APPEND descriptor,
then flush + fsync, so a killed writer leaves at most one truncated last line. Before appending it
makes sure the file ends in a newline — otherwise the next record would be glued onto a truncated
fragment and both would be lost.

Reading: `read_results` skips blank, truncated, foreign (not a roo-bench record) and unknown-schema
lines, returning a warning for each that names the file and the line number; it never raises on
file contents. The files are plain JSON lines, so `pyarrow.json.read_json`, `pandas.read_json(...,
lines=True)` and duckdb's `read_json_auto` read them directly; `to_table` gives a flat table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

SCHEMA_PREFIX = "roo-bench/result/"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_PREFIX}{SCHEMA_VERSION}"
KNOWN_VERSIONS = (1,)
KINDS = ("point", "storage", "calibration", "comm", "model")
STATUSES = ("ok", "oom", "error")
REQUIRED = ("schema", "kind", "config_hash", "status", "error", "config", "metrics", "provenance")
RESULTS_FILE = "results.jsonl"


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, no NaN: the same dict always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of `config`, first 16 hex digits (as WorkloadSpec.config_hash)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def _clean(x):
    """JSON-safe copy: NaN/inf become None (strict JSON readers such as pyarrow reject them),
    tuples become lists, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", None) == 0:
        return _clean(x.item())
    return x


def make_record(
    kind: str,
    config: dict,
    metrics: dict,
    *,
    status: str = "ok",
    error: str | None = None,
    provenance: dict | None = None,
    hash_config: dict | None = None,
) -> dict:
    """A validated record. The hash is of `hash_config` when given (run_point hashes its input
    config, so a sweep can tell a point is done before running it), else of `config`."""
    rec = {
        "schema": SCHEMA,
        "kind": kind,
        "config_hash": config_hash(hash_config if hash_config is not None else config),
        "status": status,
        "error": error,
        "config": _clean(config),
        "metrics": _clean(metrics),
        "provenance": _clean(provenance if provenance is not None else {}),
    }
    problems = validate_record(rec)
    if problems:
        raise ValueError("invalid result record: " + "; ".join(problems))
    return rec


def validate_record(rec) -> list[str]:
    """Problems with a record (empty list: valid)."""
    if not isinstance(rec, dict):
        return [f"a record is a JSON object, got {type(rec).__name__}"]
    p = [f"missing key {k!r}" for k in REQUIRED if k not in rec]
    if p:
        return p
    if rec["kind"] not in KINDS:
        p.append(f"kind={rec['kind']!r}; allowed: {', '.join(KINDS)}")
    if rec["status"] not in STATUSES:
        p.append(f"status={rec['status']!r}; allowed: {', '.join(STATUSES)}")
    if not isinstance(rec["config_hash"], str) or not rec["config_hash"]:
        p.append("config_hash must be a non-empty string")
    if rec["status"] != "ok" and not rec["error"]:
        p.append(f"status={rec['status']!r} needs an error message")
    if rec["error"] is not None and not isinstance(rec["error"], str):
        p.append("error must be a string or null")
    for k in ("config", "metrics", "provenance"):
        if not isinstance(rec[k], dict):
            p.append(f"{k} must be an object")
    return p


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as one line; durable (fsync) when this returns."""
    problems = validate_record(record)
    if problems:
        raise ValueError("invalid result record: " + "; ".join(problems))
    line = (json.dumps(_clean(record), sort_keys=True, allow_nan=False) + "\n").encode()
    path = Path(path)
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line  # end the truncated fragment a killed writer left
        view = memoryview(line)
        while view:  # os.write may write less than asked (signals, pipes); finish the line
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _paths(paths) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out = []
    for p in paths:
        p = Path(p)
        out.append(p / RESULTS_FILE if p.is_dir() else p)
    return out


def read_results(
    paths: str | Path | Iterable[str | Path], kind: str | None = None
) -> tuple[list[dict], list[str]]:
    """All valid records of the given files (a directory means its results.jsonl), in file order,
    and one warning per skipped line ("FILE:LINE: why"). A missing file is a warning, not an error.
    `kind` keeps only records of that kind."""
    records: list[dict] = []
    warnings: list[str] = []
    for path in _paths(paths):
        try:
            data = path.read_bytes()
        except OSError as e:
            warnings.append(f"{path}: cannot read ({e.strerror or e})")
            continue
        lines = data.split(b"\n")
        for i, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            last = i == len(lines)  # no newline after it: a writer died mid-line
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                why = "truncated record (writer killed mid-line?)" if last else "malformed JSON"
                warnings.append(f"{path}:{i}: {why}; line skipped")
                continue
            schema = rec.get("schema") if isinstance(rec, dict) else None
            if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
                warnings.append(f"{path}:{i}: not a roo-bench result record; line skipped")
                continue
            try:
                version = int(schema[len(SCHEMA_PREFIX) :])
            except ValueError:
                version = None
            if version not in KNOWN_VERSIONS:
                warnings.append(
                    f"{path}:{i}: schema {schema!r} is not one this roo-bench reads "
                    f"({', '.join(SCHEMA_PREFIX + str(v) for v in KNOWN_VERSIONS)}); line skipped"
                )
                continue
            problems = validate_record(rec)
            if problems:
                warnings.append(f"{path}:{i}: invalid record ({'; '.join(problems)}); line skipped")
                continue
            if kind is None or rec["kind"] == kind:
                records.append(rec)
    return records, warnings


def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def to_table(records: list[dict]):
    """A flat pyarrow Table (one row per record, dotted column names; lists and dicts of mixed
    shape are kept as JSON strings so every column has one type)."""
    import pyarrow as pa

    rows = [flatten(r) for r in records]
    cols: dict[str, list] = {}
    for i, row in enumerate(rows):
        for k in row:
            cols.setdefault(k, [None] * len(rows))
        for k, v in row.items():
            cols[k][i] = v
    arrays = {}
    for k, vals in cols.items():
        kinds = {type(v) for v in vals if v is not None}
        if kinds <= {int, float} and kinds != set():
            vals = [None if v is None else (float(v) if float in kinds else v) for v in vals]
        elif kinds and not (len(kinds) == 1 and next(iter(kinds)) in (str, bool)):
            vals = [None if v is None else json.dumps(v, sort_keys=True) for v in vals]
        arrays[k] = pa.array(vals)
    return pa.table(arrays)
