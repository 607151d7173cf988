"""Convert a user's impression-level Parquet log to request level (one row per request).

Request-only (RO) columns are kept once per request (the request's first row); every other
column becomes a list over the request's impressions, in file order. The request key is written
as `request_id`. Columns of any Arrow type work (lists, nested lists, strings, ...).

Streaming: the input is read one row group at a time; the rows of the last request in a row
group are carried into the next, so memory is bounded by a row group plus the largest request
span, not the file. `--ro-columns auto` guesses the columns constant within every request from the
first row group and verifies each later group; a column that varies restarts the conversion
without it (so the common case is a single pass).

Unsorted input (a request's rows not adjacent) is detected and handled by an external sort: the
rows are hash-partitioned by key into temp Parquet files (each a fraction of the input), and each
partition is sorted in memory (stably, so impression order is kept) and converted.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workloads.errors import UserError
from workloads.parquet_io import MANIFEST, commit_temp_dir, make_temp_dir, write_json

CONFLICT_POLICIES = ("error", "first")
OUT_KEY = "request_id"
OUT_FILE = "data.parquet"


@dataclass
class ConvertResult:
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    conflicts: int = 0
    ro_columns: list[str] = field(default_factory=list)
    nro_columns: list[str] = field(default_factory=list)
    external_sort: bool = False
    partitions: int = 0
    seconds: float = 0.0

    @property
    def dedup_factor(self) -> float:
        return self.rows_in / self.rows_out if self.rows_out else 0.0

    def to_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dedup_factor": self.dedup_factor,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "conflicts": self.conflicts,
            "ro_columns": self.ro_columns,
            "nro_columns": self.nro_columns,
            "external_sort": self.external_sort,
            "partitions": self.partitions,
            "seconds": self.seconds,
        }


class _Unsorted(Exception):
    """Internal: a request key reappears after its request was closed."""


class _NotConstant(Exception):
    """Internal: columns guessed request-only (from the first batch) vary within a request."""

    def __init__(self, columns: list[str]):
        self.columns = columns


# --- row equality (any arrow type, vectorized) -------------------------------------------------------
def _pairs_equal(arr: pa.Array, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """arr[i[p]] == arr[j[p]] for every pair p (nulls equal nulls, NaN equals NaN)."""
    if i.size == 0:
        return np.zeros(0, dtype=bool)
    t = arr.type
    if pa.types.is_large_list(t):  # _normalize made every list a large_list with offsets from 0
        offs = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        child = arr.values
        lens = np.diff(offs)
        ok = lens[i] == lens[j]
        ok &= _null_equal(arr, i, j)
        idx = np.nonzero(ok)[0]
        n_child = lens[i[idx]]
        total = int(n_child.sum())
        if total:
            pair = np.repeat(np.arange(idx.size), n_child)
            within = np.arange(total) - np.repeat(np.cumsum(n_child) - n_child, n_child)
            ci = np.repeat(offs[i[idx]], n_child) + within
            cj = np.repeat(offs[j[idx]], n_child) + within
            bad = ~_pairs_equal(child, ci, cj)
            bad_pairs = np.bincount(pair[bad], minlength=idx.size) > 0
            ok[idx[bad_pairs]] = False
        return ok
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
    if pa.types.is_primitive(t) or pa.types.is_boolean(t):
        v = arr.to_numpy(zero_copy_only=False)
        a, b = v[i], v[j]
        eq = a == b
        if v.dtype.kind == "f":
            eq |= np.isnan(a) & np.isnan(b)
        return eq & _null_equal(arr, i, j) | (_null_mask(arr, i) & _null_mask(arr, j))
    # strings, binaries, structs, ...: arrow's own kernel on the taken pairs
    a, b = arr.take(pa.array(i)), arr.take(pa.array(j))
    eq = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b)).to_numpy(zero_copy_only=False)
    return eq | both_null


def _null_mask(arr: pa.Array, idx: np.ndarray) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(idx.size, dtype=bool)
    return pc.is_null(arr).to_numpy(zero_copy_only=False)[idx]


def _null_equal(arr: pa.Array, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return _null_mask(arr, i) == _null_mask(arr, j)


def _fixed_to_list(arr: pa.Array) -> pa.Array:
    """A fixed_size_list as an equivalent list array (so one code path compares both)."""
    width = arr.type.list_size
    n = len(arr)
    offs = pa.array((np.arange(n + 1, dtype=np.int64) * width).astype(np.int32))
    values = arr.flatten()
    return pa.ListArray.from_arrays(offs, values)


def _normalize(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        arr = _fixed_to_list(arr)
        t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        child = _normalize(arr.flatten())
        offs = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        o = np.zeros(offs.size + 1, dtype=np.int64)
        np.cumsum(offs, out=o[1:])
        arr = pa.LargeListArray.from_arrays(pa.array(o), child, mask=pc.is_null(arr) if arr.null_count else None)
    return arr


def _runs_equal(offs: np.ndarray, child: np.ndarray) -> np.ndarray | None:
    """Adjacent-row equality of a list column with a primitive child, by runs of equal length:
    a run of rows of length L is a [rows, L] block, and `block[1:] == block[:-1]` compares every
    row with its predecessor at once (no per-element index arrays). None when runs are too short
    for this to pay (the caller falls back to the general path)."""
    lens = np.diff(offs)
    n = lens.size
    eq = np.zeros(n, dtype=bool)
    if n < 2:
        return eq
    change = np.flatnonzero(lens[1:] != lens[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]])
    if starts.size > 64 and starts.size > n // 4:
        return None
    is_float = child.dtype.kind == "f"
    for r0, r1 in zip(starts.tolist(), ends.tolist(), strict=True):
        if r1 - r0 < 2:
            continue
        length = int(lens[r0])
        if length == 0:
            eq[r0 + 1 : r1] = True
            continue
        block = child[offs[r0] : offs[r1]].reshape(r1 - r0, length)
        same = block[1:] == block[:-1]
        if is_float:
            same |= np.isnan(block[1:]) & np.isnan(block[:-1])
        eq[r0 + 1 : r1] = same.all(axis=1)
    return eq


_CHUNK_PAIRS = 4096  # rows per batch in the general path (bounds its index temporaries)


def _plain(t: pa.DataType) -> bool:
    return pa.types.is_primitive(t) or pa.types.is_boolean(t)


def _adjacent_equal(v: np.ndarray) -> np.ndarray:
    """v[r] == v[r-1] for r >= 1 over rows of a 1-D or [rows, width] array (NaN equals NaN)."""
    same = v[1:] == v[:-1]
    if v.dtype.kind == "f":
        same |= np.isnan(v[1:]) & np.isnan(v[:-1])
    return same if same.ndim == 1 else same.all(axis=1)


def _row_equals_prev_fast(arr: pa.Array) -> np.ndarray | None:
    """The common null-free shapes straight from the Arrow buffers (no normalized copy); None if
    `arr` is not one of them."""
    n, t = len(arr), arr.type
    if n < 2 or arr.null_count:
        return None
    eq = np.zeros(n, dtype=bool)
    if _plain(t):
        eq[1:] = _adjacent_equal(arr.to_numpy(zero_copy_only=False))
        return eq
    if pa.types.is_fixed_size_list(t) and _plain(t.value_type):
        child = arr.flatten()  # honours the slice offset
        if child.null_count:
            return None
        eq[1:] = _adjacent_equal(child.to_numpy(zero_copy_only=False).reshape(n, t.list_size))
        return eq
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _plain(t.value_type):
        child = arr.values  # the whole child; `offsets` (sliced) index into it
        if child.null_count:
            return None
        offs = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        return _runs_equal(offs, child.to_numpy(zero_copy_only=False))
    return None


def row_equals_prev(arr: pa.Array) -> np.ndarray:
    """eq[r] = (row r == row r-1); eq[0] = False."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    fast = _row_equals_prev_fast(arr)
    if fast is not None:
        return fast
    a = _normalize(arr)
    n = len(a)
    if n > 1 and pa.types.is_large_list(a.type) and a.null_count == 0:
        child = a.values
        if (pa.types.is_primitive(child.type) or pa.types.is_boolean(child.type)) and child.null_count == 0:
            fast = _runs_equal(np.asarray(a.offsets.to_numpy(zero_copy_only=False), dtype=np.int64),
                               child.to_numpy(zero_copy_only=False))
            if fast is not None:
                return fast
    eq = np.zeros(n, dtype=bool)
    for s in range(1, n, _CHUNK_PAIRS):
        i = np.arange(s, min(n, s + _CHUNK_PAIRS))
        eq[i] = _pairs_equal(a, i, i - 1)
    return eq


# --- grouping -------------------------------------------------------------------------------------------
def _key_array(t: pa.Table, key: str) -> np.ndarray:
    col = t.column(key)
    if col.null_count:
        raise UserError(f"request key column {key!r} has {col.null_count} null values; every row needs a key")
    v = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(v.type):
        v = v.dictionary_decode()
    return v.to_numpy(zero_copy_only=False)


def _starts(keys: np.ndarray) -> np.ndarray:
    """Row indices where a new run of equal keys starts."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(keys.size, dtype=bool)
    change[1:] = keys[1:] != keys[:-1]
    return np.nonzero(change)[0]


def _detach(t: pa.Table) -> pa.Table:
    """A copy of `t` that shares no buffer with it (so the batch it was sliced from can be freed)."""
    cols = [pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], type=c.type) for c in t.columns]
    return pa.Table.from_arrays(cols, schema=t.schema)


class _Grouper:
    """Yields tables of complete requests (adjacent runs) from a stream of batches.

    A request cut by a batch boundary is carried as a copy of its rows (at most one request), so a
    batch is released as soon as its complete requests are emitted: memory holds one batch, the
    carry and the output being collected, never two batches."""

    def __init__(self, key: str):
        self.key = key
        self.carry: pa.Table | None = None
        self.carry_key = None
        self.closed: list[np.ndarray] = []

    def feed(self, t: pa.Table) -> Iterator[tuple[pa.Table, np.ndarray]]:
        if t.num_rows == 0:
            return
        keys = _key_array(t, self.key)
        if self.carry is not None:
            # rows at the head of this batch that continue the carried request
            other = np.flatnonzero(keys != self.carry_key)
            n_head = int(other[0]) if other.size else keys.size
            if n_head == keys.size:  # the whole batch continues it
                self.carry = _detach(pa.concat_tables([self.carry, t]))
                return
            done = pa.concat_tables([self.carry, t.slice(0, n_head)]) if n_head else self.carry
            self._close(np.asarray([self.carry_key]))
            self.carry = self.carry_key = None
            yield done, np.zeros(1, dtype=np.int64)
            t, keys = t.slice(n_head), keys[n_head:]
        starts = _starts(keys)
        cut = int(starts[-1])
        if cut:
            st = starts[:-1]
            self._close(keys[st])
            yield t.slice(0, cut), st
        self.carry, self.carry_key = _detach(t.slice(cut)), keys[cut]

    def finish(self) -> Iterator[tuple[pa.Table, np.ndarray]]:
        if self.carry is not None:
            done = self.carry
            self._close(np.asarray([self.carry_key]))
            self.carry = self.carry_key = None
            yield done, np.zeros(1, dtype=np.int64)

    def _close(self, k: np.ndarray) -> None:
        if np.unique(k).size != k.size:
            raise _Unsorted
        self.closed.append(k)

    def check_unique(self) -> None:
        if self.closed:
            allk = np.concatenate(self.closed)
            if np.unique(allk).size != allk.size:
                raise _Unsorted


def _requests_table(t: pa.Table, starts: np.ndarray, key: str, ro: list[str], policy: str,
                    verify: bool = False, detach: bool = False) -> tuple[pa.Table, int]:
    """One row per request: RO columns from its first row, the rest as lists.

    RO columns are taken (new buffers); list columns wrap the input's values, copied when `detach`
    so the result outlives the input batch without keeping it alive."""
    n = t.num_rows
    first = pa.array(starts)
    offs = np.append(starts, n).astype(np.int64)
    conflicts = 0
    varying: list[str] = []
    list_offs = None  # built once, shared by every list column
    req_of_row = np.repeat(np.arange(starts.size), np.diff(offs))
    is_start = np.zeros(n, dtype=bool)
    is_start[starts] = True
    cols, names = [], []
    for name in t.column_names:
        col = t.column(name)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if name == key:
            cols.append(arr.take(first))
            names.append(OUT_KEY)
        elif name in ro:
            bad = ~row_equals_prev(arr) & ~is_start
            if bad.any():
                if verify:
                    varying.append(name)
                    continue
                reqs = np.unique(req_of_row[bad])
                if policy == "error":
                    k = _key_array(t, key)[starts[reqs[0]]]
                    k = k.item() if hasattr(k, "item") else k
                    raise UserError(
                        f"RO column {name!r} differs within request {key}={k} ({reqs.size} request(s) in this "
                        "batch); drop it from --ro-columns or pass --on-conflict first"
                    )
                conflicts += int(reqs.size)
            cols.append(arr.take(first))
            names.append(name)
        else:
            vals = pa.concat_arrays([arr]) if detach else arr  # concat_arrays always copies
            if list_offs is None:
                list_offs = pa.array(offs.astype(np.int32))
            cols.append(pa.ListArray.from_arrays(list_offs, vals))
            names.append(name)
    if varying:
        raise _NotConstant(varying)
    return pa.Table.from_arrays(cols, names=names), conflicts


def _open(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise UserError(f"input {path} does not exist; give an impression-level Parquet file")
    if path.is_dir():
        d = path / OUT_FILE
        if not d.is_file():
            raise UserError(f"input {path} is a directory without {OUT_FILE}; give a Parquet file")
        path = d
    if path.stat().st_size == 0:
        raise UserError(f"input {path} is empty (0 bytes); give a non-empty Parquet file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        why = str(e).splitlines()[0]
        raise UserError(f"input {path} is not a readable Parquet file ({why}); re-export it") from None


def _read_groups(pf: pq.ParquetFile) -> Iterator[pa.Table]:
    for i in range(pf.num_row_groups):
        try:
            yield pf.read_row_group(i)
        except (pa.ArrowInvalid, OSError) as e:
            why = str(e).splitlines()[0]
            raise UserError(f"row group {i} of the input is corrupt ({why}); re-export the file") from None


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
    starts = _starts(_key_array(t, key))
    is_start = np.zeros(t.num_rows, dtype=bool)
    is_start[starts] = True
    return [n for n in t.column_names if n != key and not (~row_equals_prev(t.column(n)) & ~is_start).any()]


def detect_ro_columns(pf: pq.ParquetFile, key: str) -> list[str]:
    """Columns constant within every request (one streaming pass). Raises _Unsorted if unsorted."""
    names = [n for n in pf.schema_arrow.names if n != key]
    const = dict.fromkeys(names, True)
    g = _Grouper(key)

    def visit(t: pa.Table, starts: np.ndarray) -> None:
        is_start = np.zeros(t.num_rows, dtype=bool)
        is_start[starts] = True
        for n in names:
            if const[n]:
                col = t.column(n)
                arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
                if (~row_equals_prev(arr) & ~is_start).any():
                    const[n] = False

    for t in _read_groups(pf):
        for done, st in g.feed(t):
            visit(done, st)
    for done, st in g.finish():
        visit(done, st)
    g.check_unique()
    return [n for n in names if const[n]]


def convert(
    src: str | Path,
    out: str | Path,
    request_key: str,
    ro_columns: str | list[str] = "auto",
    on_conflict: str = "error",
    codec: str = "zstd",
    memory_budget_bytes: int = 256 << 20,
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
    res = ConvertResult(bytes_in=src.stat().st_size if src.is_file() else (src / OUT_FILE).stat().st_size)
    explicit = ro_columns != "auto"
    if explicit:
        ro = [c.strip() for c in ro_columns.split(",")] if isinstance(ro_columns, str) else list(ro_columns)
        missing = [c for c in ro if c not in schema.names]
        if missing:
            raise UserError(f"--ro-columns names unknown column(s) {missing}; columns: {', '.join(schema.names)}")
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
                _convert_stream(_read_batches(pf), tmp / OUT_FILE, request_key, ro, on_conflict, codec, res,
                                verify=not explicit)
                break
            except _Unsorted:
                sorted_input = False
            except _NotConstant as e:
                ro = [c for c in ro if c not in e.columns]
        if not sorted_input:
            res = ConvertResult(bytes_in=res.bytes_in, external_sort=True)
            _external_sort_convert(pf, tmp, request_key, None if not explicit else ro, on_conflict, codec,
                                   memory_budget_bytes, res)
            ro = res.ro_columns
        res.ro_columns = [c for c in ro if c != request_key]
        res.nro_columns = [c for c in schema.names if c != request_key and c not in ro]
        res.rows_in = pf.metadata.num_rows
        res.bytes_out = (tmp / OUT_FILE).stat().st_size
        res.seconds = time.perf_counter() - t0
        write_json(tmp / MANIFEST, {
            "schema": "roo-bench/dataset/1",
            "layout": "request",
            "order": "grouped",
            "codec": codec,
            "source": str(src),
            "request_key": request_key,
            "requests": res.rows_out,
            "impressions": res.rows_in,
            "rows": res.rows_out,
            "file": OUT_FILE,
            "file_bytes": res.bytes_out,
            "spec": None,
            "seed": None,
            "convert": res.to_dict(),
        })
        commit_temp_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return res


def _convert_stream(batches, dest: Path, key: str, ro: list[str], policy: str, codec: str, res: ConvertResult,
                    verify: bool = False) -> None:
    """Requests of each input row group, collected batch by batch, written as one output row group."""
    from workloads.parquet_io import parquet_compression

    g = _Grouper(key)
    writer = None
    pending: list[pa.Table] = []

    def emit(done: pa.Table, st: np.ndarray) -> None:
        t, c = _requests_table(done, st, key, ro, policy, verify, detach=True)
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


def _external_sort_convert(pf: pq.ParquetFile, tmp: Path, key: str, ro: list[str] | None, policy: str,
                           codec: str, budget: int, res: ConvertResult) -> None:
    """Hash-partition rows by key into temp files, then sort and convert each partition in memory."""
    from workloads.parquet_io import parquet_compression

    meta = pf.metadata
    total = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    parts = max(1, math.ceil(total / budget))
    res.partitions = parts
    pdir = Path(tempfile.mkdtemp(prefix="parts-", dir=tmp))
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for t in _read_groups(pf):
            keys = _key_array(t, key)
            bucket = _bucket(keys, parts)
            for p in np.unique(bucket):
                sub = t.filter(pa.array(bucket == p))
                if p not in writers:
                    writers[p] = pq.ParquetWriter(pdir / f"{p}.parquet", t.schema, compression="NONE")
                writers[p].write_table(sub)
        for w in writers.values():
            w.close()
        if ro is None:  # auto: columns constant within every request, decided over all partitions
            names = [n for n in pf.schema_arrow.names if n != key]
            const = dict.fromkeys(names, True)
            for p in sorted(writers):
                t = _sorted(pq.read_table(pdir / f"{p}.parquet"), key)
                st = _starts(_key_array(t, key))
                is_start = np.zeros(t.num_rows, dtype=bool)
                is_start[st] = True
                for n in names:
                    if const[n] and (~row_equals_prev(t.column(n)) & ~is_start).any():
                        const[n] = False
            ro = [n for n in names if const[n]]
        res.ro_columns = ro
        writer = None
        try:
            for p in sorted(writers):
                t = _sorted(pq.read_table(pdir / f"{p}.parquet"), key)
                st = _starts(_key_array(t, key))
                out, c = _requests_table(t, st, key, ro, policy)
                res.conflicts += c
                res.rows_out += out.num_rows
                if writer is None:
                    writer = pq.ParquetWriter(tmp / OUT_FILE, out.schema, compression=parquet_compression(codec))
                writer.write_table(out)
        finally:
            if writer is not None:
                writer.close()
    finally:
        shutil.rmtree(pdir, ignore_errors=True)


def _bucket(keys: np.ndarray, parts: int) -> np.ndarray:
    if parts == 1:
        return np.zeros(keys.size, dtype=np.int64)
    if keys.dtype.kind in "iu":
        h = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return (h >> np.uint64(33)).astype(np.int64) % parts
    # non-integer keys: crc32 (python's hash() is salted per process, which would break determinism)
    return np.array([zlib.crc32(str(k).encode()) % parts for k in keys.tolist()], dtype=np.int64)


def _sorted(t: pa.Table, key: str) -> pa.Table:
    # sort_indices is stable: a request's rows keep their file order
    return t.take(pc.sort_indices(t, sort_keys=[(key, "ascending")]))
