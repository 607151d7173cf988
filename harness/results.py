"""The results store: JSONL, one record per measured point (schema in docs/contracts.md, "Results").

The record itself (kinds, statuses, validation, the config hash) is `workloads.records`; the names
are re-exported here for the writers that import them from the store.

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

import json
import os
from collections.abc import Iterable
from pathlib import Path

from workloads.records import (
    KINDS,
    KNOWN_VERSIONS,
    REQUIRED,
    SCHEMA,
    SCHEMA_PREFIX,
    SCHEMA_VERSION,
    STATUSES,
    Kind,
    RecordError,
    Status,
    canonical_json,
    config_hash,
    json_safe,
    make_record,
    schema_version,
    validate_record,
)

RESULTS_FILE = "results.jsonl"

__all__ = [
    "KINDS",
    "KNOWN_VERSIONS",
    "REQUIRED",
    "RESULTS_FILE",
    "SCHEMA",
    "SCHEMA_PREFIX",
    "SCHEMA_VERSION",
    "STATUSES",
    "Kind",
    "RecordError",
    "Status",
    "append_record",
    "canonical_json",
    "config_hash",
    "flatten",
    "make_record",
    "read_results",
    "to_table",
    "validate_record",
    "write_record",
]


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as one line; durable (fsync) when this returns."""
    problems = validate_record(record)
    if problems:
        raise RecordError(problems)
    line = (json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n").encode()
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


def write_record(path: str | Path, record: dict) -> None:
    """Write one record as a whole `*.json` file (indented, for reading by eye): validated, written
    to a temporary file beside it, fsync'd and renamed over `path`, so a reader sees the old file
    or the new one, never half of one."""
    problems = validate_record(record)
    if problems:
        raise RecordError(problems)
    path = Path(path)
    text = json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def read_results(paths: str | Path | Iterable[str | Path], kind: str | None = None) -> tuple[list[dict], list[str]]:
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
            if schema_version(schema) not in KNOWN_VERSIONS:
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
