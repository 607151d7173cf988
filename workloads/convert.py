"""Convert a user's impression-level Parquet log to request level (one row per request).

Request-only (RO) columns are kept once per request (the request's first row); every other
column becomes a list over the request's impressions, in file order. The request key is written
as `request_id`. Columns of any Arrow type work (lists, nested lists, strings, ...).

Streaming: the input is read one row group at a time; the rows of the last request in a row
group are carried into the next, so memory is bounded by a row group plus the largest request
span, not the file. `--ro-columns auto` guesses the columns constant within every request from the
first row group and verifies each later group; a column that varies restarts the conversion
without it (so the common case is a single pass).

Unsorted input (a request's rows not adjacent) is detected and handled by an external sort
(workloads.external_sort). The row-level pieces (request grouping, RO/NRO roles, the request
table) are in workloads.convert_rows, column equality in workloads.row_equality.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.convert_rows import (
    CONFLICT_POLICIES,
    OUT_KEY,
    ConvertResult,
    NotConstant,
    RequestGrouper,
    Unsorted,
    constant_columns,
    key_array,
    read_row_groups,
    requests_table,
    run_starts,
)
from workloads.errors import UserError
from workloads.external_sort import external_sort_convert
from workloads.layout import Layout
from workloads.parquet_io import (
    DATA_FILE,
    MANIFEST,
    MANIFEST_SCHEMA,
    commit_temp_dir,
    make_temp_dir,
    parquet_compression,
    write_json,
)

__all__ = ["CONFLICT_POLICIES", "ConvertResult", "convert", "detect_ro_columns", "guess_ro_columns"]


def _open(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise UserError(f"input {path} does not exist; give an impression-level Parquet file")
    if path.is_dir():
        d = path / DATA_FILE
        if not d.is_file():
            raise UserError(f"input {path} is a directory without {DATA_FILE}; give a Parquet file")
        path = d
    if path.stat().st_size == 0:
        raise UserError(f"input {path} is empty (0 bytes); give a non-empty Parquet file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        why = str(e).splitlines()[0]
        raise UserError(f"input {path} is not a readable Parquet file ({why}); re-export it") from None


_BATCH_BYTES = 8 << 20  # Arrow bytes per batch read inside a row group


def _read_batches(pf: pq.ParquetFile) -> Iterator[tuple[pa.Table, int]]:
    """(batch, flag) over the file, flag 1 on a row group's last batch and 2 on the file's last.

    Each row group is read in record batches of ~8 MiB in memory, so the working set is a batch, not
    a row group (the Parquet reader decodes pages incrementally). Rows per batch start from the
    footer's uncompressed size and then follow the Arrow bytes per row seen so far (the footer counts
    encoded bytes, which for repetitive columns are a fraction of the decoded ones)."""
    meta = pf.metadata
    last = max((i for i in range(pf.num_row_groups) if meta.row_group(i).num_rows), default=-1)
    seen_rows = seen_bytes = 0
    for i in range(pf.num_row_groups):
        rg = meta.row_group(i)
        rows = rg.num_rows
        if rows == 0:
            continue
        per_row = seen_bytes / seen_rows if seen_rows else max(1.0, rg.total_byte_size / rows)
        batch_rows = max(1, min(rows, int(_BATCH_BYTES / max(per_row, 1.0))))
        done = 0
        try:
            for b in pf.iter_batches(batch_size=batch_rows, row_groups=[i], use_threads=False):
                done += b.num_rows
                seen_rows += b.num_rows
                seen_bytes += b.nbytes
                yield pa.Table.from_batches([b]), (2 if i == last else 1) if done >= rows else 0
        except (pa.ArrowInvalid, OSError) as e:
            why = str(e).splitlines()[0]
            raise UserError(f"row group {i} of the input is corrupt ({why}); re-export the file") from None


def guess_ro_columns(pf: pq.ParquetFile, key: str) -> list[str]:
    """Columns constant within every request of the first batch (verified while converting)."""
    t = next(_read_batches(pf))[0]
    return constant_columns(t, [n for n in t.column_names if n != key], run_starts(key_array(t, key)))


def detect_ro_columns(pf: pq.ParquetFile, key: str) -> list[str]:
    """Columns constant within every request (one streaming pass). Raises Unsorted if unsorted."""
    const = [n for n in pf.schema_arrow.names if n != key]
    g = RequestGrouper(key)
    for t in read_row_groups(pf):
        for done, st in g.feed(t):
            const = constant_columns(done, const, st)
    for done, st in g.finish():
        const = constant_columns(done, const, st)
    g.check_unique()
    return const


def convert(
    src: str | Path,
    out: str | Path,
    request_key: str,
    ro_columns: str | list[str] = "auto",
    on_conflict: str = "error",
    codec: str = "zstd",
    memory_budget_bytes: int = 256 << 20,
    progress: Callable[[int], None] | None = None,
) -> ConvertResult:
    t0 = time.perf_counter()
    if on_conflict not in CONFLICT_POLICIES:
        raise UserError(f"--on-conflict {on_conflict!r}; allowed: {', '.join(CONFLICT_POLICIES)}")
    src, out = Path(src), Path(out)
    pf = _open(src)
    schema = pf.schema_arrow
    if request_key not in schema.names:
        raise UserError(f"request key column {request_key!r} is not in {src}; columns: {', '.join(schema.names)}")
    if request_key != OUT_KEY and OUT_KEY in schema.names:
        raise UserError(f"{src} has a column {OUT_KEY!r} besides the key {request_key!r}; rename it first")
    if pf.metadata.num_rows == 0:
        raise UserError(f"input {src} has no rows; nothing to convert")
    res = ConvertResult(bytes_in=src.stat().st_size if src.is_file() else (src / DATA_FILE).stat().st_size)
    explicit = ro_columns != "auto"
    if explicit:
        ro = _explicit_ro_columns(ro_columns, schema.names)
    tmp = make_temp_dir(out)
    try:
        sorted_input = True
        if not explicit:
            # one pass in the common case: guess from the first batch, verify while converting, and
            # start over without the columns that turn out to vary (at most once per column)
            ro = guess_ro_columns(pf, request_key)
        while sorted_input:
            try:
                res.rows_out = res.conflicts = 0
                batches = _ticking(_read_batches(pf), progress)
                _convert_stream(batches, tmp / DATA_FILE, request_key, ro, on_conflict, codec, res, verify=not explicit)
                break
            except Unsorted:
                sorted_input = False
            except NotConstant as e:
                ro = [c for c in ro if c not in e.columns]
        if not sorted_input:
            res = ConvertResult(bytes_in=res.bytes_in, external_sort=True)
            external_sort_convert(
                pf,
                tmp,
                request_key,
                None if not explicit else ro,
                on_conflict,
                codec,
                memory_budget_bytes,
                res,
                progress,
            )
            ro = res.ro_columns
        res.ro_columns = [c for c in ro if c != request_key]
        res.nro_columns = [c for c in schema.names if c != request_key and c not in ro]
        res.rows_in = pf.metadata.num_rows
        res.bytes_out = (tmp / DATA_FILE).stat().st_size
        res.seconds = time.perf_counter() - t0
        write_json(tmp / MANIFEST, _request_manifest(src, request_key, codec, res))
        commit_temp_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return res


def _ticking(batches: Iterator[tuple[pa.Table, int]], progress: Callable[[int], None] | None):
    """The batches, telling `progress` of the rows of each (every row read counts, in any pass)."""
    for t, flag in batches:
        if progress is not None:
            progress(t.num_rows)
        yield t, flag


def _explicit_ro_columns(ro_columns: str | list[str], names: list[str]) -> list[str]:
    """`--ro-columns a,b,c` (or a list), each checked to be a column of the input."""
    ro = [c.strip() for c in ro_columns.split(",")] if isinstance(ro_columns, str) else list(ro_columns)
    missing = [c for c in ro if c not in names]
    if missing:
        raise UserError(f"--ro-columns names unknown column(s) {missing}; columns: {', '.join(names)}")
    return ro


def _request_manifest(src: Path, request_key: str, codec: str, res: ConvertResult) -> dict:
    """The manifest of a converted dataset: the keys of a generated request-level one, plus the
    source, the request key and the conversion's counters."""
    return {
        "schema": MANIFEST_SCHEMA,
        "layout": Layout.ROO.dataset_name,
        "order": "grouped",
        "codec": codec,
        "source": str(src),
        "request_key": request_key,
        "requests": res.rows_out,
        "impressions": res.rows_in,
        "rows": res.rows_out,
        "file": DATA_FILE,
        "file_bytes": res.bytes_out,
        "spec": None,
        "seed": None,
        "convert": res.to_dict(),
    }


def _convert_stream(
    batches, dest: Path, key: str, ro: list[str], policy: str, codec: str, res: ConvertResult, verify: bool = False
) -> None:
    """Requests of each input row group, collected batch by batch, written as one output row group."""
    g = RequestGrouper(key)
    writer = None
    pending: list[pa.Table] = []

    def emit(done: pa.Table, st: np.ndarray) -> None:
        t, c = requests_table(done, st, key, ro, policy, verify, detach=True)
        res.conflicts += c
        res.rows_out += t.num_rows
        pending.append(t)

    def flush() -> None:
        nonlocal writer
        if not pending:
            return
        t = pa.concat_tables(pending)
        pending.clear()
        if writer is None:
            writer = pq.ParquetWriter(dest, t.schema, compression=parquet_compression(codec))
        writer.write_table(t, row_group_size=max(1, t.num_rows))

    try:
        for t, flag in batches:
            for done, st in g.feed(t):
                emit(done, st)
            del t
            if flag == 2:  # the file's last request joins the last row group
                for done, st in g.finish():
                    emit(done, st)
            if flag:
                flush()
        for done, st in g.finish():
            emit(done, st)
        flush()
        g.check_unique()
    finally:
        if writer is not None:
            writer.close()
