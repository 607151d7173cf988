"""The user's log as `fit` and `analyze` read it: one Parquet file, a dataset directory written by
roo-bench, or a directory of Parquet files of one schema; each bad input is one UserError.

Checked before anything is written: the path exists and is Parquet (a CSV or JSON file given as
Parquet is named as such), a directory's files share one schema (the first differing column is
named), the request key is a column, and it has no nulls (from the footer statistics where the
writer kept them; `convert` checks every batch anyway).

A directory of several files is staged into one temp Parquet file, row group by row group (memory:
one row group), because `convert` reads one file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workloads.errors import UserError
from workloads.parquet_io import DATA_FILE, MANIFEST

MAGIC = b"PAR1"
# the manifest names a dataset directory may hold: data files never start with `_` or `.`
MANIFEST_NAMES = (MANIFEST, "_manifest.json")


@dataclass
class LogInput:
    """An opened log: its Parquet files, schema, row count, bytes and (for a dataset directory
    written by roo-bench) its manifest."""

    path: Path
    files: list[Path]
    schema: pa.Schema
    rows: int
    file_bytes: int
    manifest: dict | None = None
    row_groups: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def request_level(self) -> bool:
        return (self.manifest or {}).get("layout") == "request"


def _sniff(path: Path) -> None:
    """A clear line for a file that is not Parquet: empty, CSV/JSON/text, or truncated."""
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"input {path} is empty (0 bytes), so it is not a readable Parquet file; give a non-empty one")
    with open(path, "rb") as f:
        head = f.read(256)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if head[:4] == MAGIC and tail == MAGIC:
        return
    text = head.decode("utf-8", errors="replace").lstrip()
    if head[:4] == MAGIC:
        raise UserError(f"input {path} is not a readable Parquet file (truncated: no footer); copy or re-export it")
    if text[:1] in "{[":
        kind = "JSON"
    elif "," in text.split("\n", 1)[0] or "\t" in text.split("\n", 1)[0]:
        kind = "CSV"
    else:
        kind = "not Parquet"
    what = "" if kind == "not Parquet" else f"a {kind} file, so it is "
    raise UserError(
        f"input {path} is {what}not a readable Parquet file (no PAR1 magic bytes); convert it first, "
        "e.g. pyarrow.csv.read_csv(...) then pyarrow.parquet.write_table(...)"
    )


def _data_files(d: Path) -> list[Path]:
    if (d / DATA_FILE).is_file():
        return [d / DATA_FILE]
    files = sorted(p for p in d.rglob("*") if p.is_file() and not _hidden(p.relative_to(d)))
    files = [p for p in files if p.suffix in (".parquet", ".parq", ".pq") or p.suffix == ""]
    if not files:
        raise UserError(f"input {d} is a directory without Parquet files (*.parquet); give a file or a dataset dir")
    return files


def _hidden(rel: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.parts)


def _manifest(d: Path) -> dict | None:
    for name in MANIFEST_NAMES:
        m = d / name
        if m.is_file():
            try:
                obj = json.loads(m.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return obj if isinstance(obj, dict) else None
    return None


def _schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    for f in a:
        if f.name not in b.names:
            return f"column {f.name!r} is missing"
        if b.field(f.name).type != f.type:
            return f"column {f.name!r} is {b.field(f.name).type} instead of {f.type}"
    extra = [n for n in b.names if n not in a.names]
    return f"it has extra column(s) {extra}" if extra else "the column order differs"


def open_log(path: str | Path, request_key: str | None) -> LogInput:
    """Open and check `path`; `request_key` None skips the key checks (a request-level dataset
    names its own key)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"input {p} does not exist; give an impression-level Parquet file or a directory of them")
    files = _data_files(p) if p.is_dir() else [p]
    schema = None
    rows = nbytes = groups = 0
    for f in files:
        _sniff(f)
        try:
            meta = pq.read_metadata(f)
            s = meta.schema.to_arrow_schema()
        except (pa.ArrowInvalid, OSError) as e:
            why = str(e).splitlines()[0]
            raise UserError(f"input {f} is not a readable Parquet file ({why}); re-export it") from None
        s = s.remove_metadata()
        if schema is None:
            schema = s
        elif not s.equals(schema):
            raise UserError(
                f"input {p} mixes schemas: in {f.name}, {_schema_difference(schema, s)} (vs {files[0].name}); "
                "give files of one schema"
            )
        rows += meta.num_rows
        groups += meta.num_row_groups
        nbytes += f.stat().st_size
    assert schema is not None
    log = LogInput(p, files, schema, rows, nbytes, _manifest(p) if p.is_dir() else None, groups)
    if rows == 0:
        raise UserError(f"input {p} has no rows; nothing to read")
    if request_key is not None:
        check_key(log, request_key)
    return log


def check_key(log: LogInput, key: str) -> None:
    if key not in log.schema.names:
        raise UserError(
            f"request key column {key!r} is not in {log.path}; columns: {', '.join(log.schema.names)} "
            "(give --request-key COLUMN)"
        )
    t = log.schema.field(key).type
    if pa.types.is_nested(t) or pa.types.is_floating(t):
        raise UserError(f"request key column {key!r} is {t}; a request key is an integer or string column")
    nulls = key_nulls(log, key)
    if nulls:
        raise UserError(
            f"request key column {key!r} has {nulls} null value(s); every impression needs its request's key"
        )


def key_nulls(log: LogInput, key: str) -> int:
    """Null count of `key` from the footer statistics (0 where the writer kept none: `convert`
    then finds them while reading)."""
    n = 0
    for f in log.files:
        meta = pq.read_metadata(f)
        col = next((i for i in range(meta.num_columns) if meta.schema.column(i).path == key), None)
        if col is None:
            continue
        for g in range(meta.num_row_groups):
            st = meta.row_group(g).column(col).statistics
            if st is not None and st.has_null_count:
                n += st.null_count
    return n


def staged_file(log: LogInput, tmp_dir: Path) -> Path:
    """One Parquet file holding the log: its only file, or a copy of all of them (row group by row
    group, uncompressed) in `tmp_dir`."""
    if len(log.files) == 1:
        return log.files[0]
    out = tmp_dir / "staged-input.parquet"
    with pq.ParquetWriter(out, log.schema, compression="NONE") as w:
        for f in log.files:
            pf = pq.ParquetFile(f)
            for g in range(pf.num_row_groups):
                w.write_table(pf.read_row_group(g).cast(log.schema))
    return out
