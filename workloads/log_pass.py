"""The passes `fit` and `analyze` make over a user's log, each streaming with bounded memory.

1. `to_request_lists`: `workloads.convert` with no request-only columns, so every column becomes a
   list over the request's impressions (one row per request, rows of any order grouped by the
   key, through convert's external sort where the input is not grouped). Nothing is decided yet.
2. `profile_columns`: one pass over that file measuring, per column, in how many requests it varies
   (exactly), whether its values are 0/1, list lengths, and whether lists ascend: what role
   inference (workloads.roles) needs.
3. `request_batches`: the request-level table for chosen roles: request-only (RO) columns from the
   request's first row, the rest as lists. Batches of about `BATCH_BYTES` each.

A dataset that is already request level (`convert`'s output, or roo-bench's own) skips step 1: its
RO columns are one value per request already (`collapsed`), the others are lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from workloads.convert import convert
from workloads.convert_rows import OUT_KEY, ConvertResult, start_mask, varies_within_request
from workloads.errors import UserError
from workloads.log_input import LogInput, staged_file
from workloads.log_sketch import row_bytes, splitmix64
from workloads.parquet_io import DATA_FILE, HISTORY_COLS, IS

BATCH_BYTES = 32 << 20  # decoded bytes per batch read in the passes
FIRST_BATCH_ROWS = 1024  # rows of the first batch, which measures the decoded bytes per row
Tick = Callable[[int], None]
# the NRO columns of roo-bench's own request-level datasets (workloads/parquet_io.py)
CONVENTION_NRO = ("item_id", "item_dense", "labels")


@dataclass
class ColumnProfile:
    """What one pass over a column tells about its role."""

    name: str
    type: str
    family: str  # int | float | string | bool | temporal | list_int | list_float | list_string | other
    varying: int = 0  # requests in which the column takes more than one value
    example: object = None  # the key of the first such request
    values: int = 0  # non-null values (per impression; per request for a collapsed column)
    nulls: int = 0
    binary: bool = True  # every value (every list element) is 0 or 1
    positives: float = 0.0
    lo: float | None = None
    hi: float | None = None
    list_len_min: int | None = None
    list_len_max: int | None = None
    list_len_sum: int = 0  # over requests (first row), for mean lengths
    ascending: bool = True  # every list (first row of each request) is non-decreasing
    len_check: int = 0  # a checksum of the per-request list lengths: equal for aligned columns

    @property
    def is_list(self) -> bool:
        return self.family.startswith("list_")

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "example"} | {"example": _plain(self.example)}


@dataclass
class Profile:
    key: str  # the request key's name in the request-level files (convert writes it as request_id)
    source_key: str  # its name in the log
    requests: int = 0
    impressions: int = 0
    multi: int = 0  # requests with >= 2 impressions
    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    collapsed: frozenset[str] = frozenset()


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = family(t.value_type)
        return f"list_{inner}" if inner in ("int", "float", "string", "bool", "temporal") else "other"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "string"
    if pa.types.is_temporal(t):
        return "temporal"
    return "other"


# --- 1. every column as a list ----------------------------------------------------------------------
def to_request_lists(
    log: LogInput, key: str, work: Path, budget: int, tick: Tick | None = None
) -> tuple[Path, ConvertResult]:
    """Convert the log with no RO columns into `work/lists`; (its data file, convert's counters).
    `tick` is told of every row convert reads (an unsorted log is read twice: partition, sort)."""
    src = staged_file(log, work)
    if key != OUT_KEY and OUT_KEY in log.schema.names:
        raise UserError(f"{log.path} has a column {OUT_KEY!r} besides the key {key!r}; rename one of them")
    res = convert(src, work / "lists", key, ro_columns=[], codec="snappy", memory_budget_bytes=budget, progress=tick)
    return work / "lists" / DATA_FILE, res


def request_level_roles(log: LogInput) -> tuple[str, frozenset[str]]:
    """(key, RO columns) of a request-level dataset: from convert's manifest, else roo-bench's own
    column convention."""
    m = log.manifest or {}
    names = log.schema.names
    if OUT_KEY not in names:
        raise UserError(f"{log.path} is a request-level dataset without a {OUT_KEY!r} column; re-convert it")
    conv = m.get("convert") if isinstance(m.get("convert"), dict) else None
    if conv is not None and isinstance(conv.get("ro_columns"), list):
        ro = [c for c in conv["ro_columns"] if c in names]
    else:
        ro = [c for c in names if c != OUT_KEY and c not in CONVENTION_NRO and not c.startswith(IS)]
        if not set(HISTORY_COLS) <= set(ro):
            raise UserError(
                f"{log.path} is request level but names neither its RO columns (no convert section in its "
                "manifest) nor follows roo-bench's columns; give the impression-level log instead"
            )
    return OUT_KEY, frozenset(ro)


# --- reading in bounded batches -----------------------------------------------------------------------
def iter_tables(path: Path, columns: list[str] | None = None, target: int = BATCH_BYTES) -> Iterator[pa.Table]:
    """The file as tables of about `target` decoded bytes, never more than one row group each. Rows
    per read follow the Arrow bytes per row seen so far; the first row group is read in small
    batches that measure them (the footer counts encoded bytes, which for dictionary-encoded or
    repetitive columns are a fraction of the decoded ones)."""
    pf = pq.ParquetFile(path)
    seen_rows = seen_bytes = 0
    for g in range(pf.num_row_groups):
        if pf.metadata.row_group(g).num_rows == 0:
            continue
        per_row = seen_bytes / seen_rows if seen_rows else None
        rows = FIRST_BATCH_ROWS if per_row is None else max(1, int(target / max(per_row, 1.0)))
        pending: list[pa.RecordBatch] = []
        size = 0
        for b in pf.iter_batches(batch_size=rows, row_groups=[g], columns=columns, use_threads=False):
            seen_rows += b.num_rows
            seen_bytes += b.nbytes
            pending.append(b)
            size += b.nbytes
            if size >= target:
                yield pa.Table.from_batches(pending)
                pending, size = [], 0
        if pending:
            yield pa.Table.from_batches(pending)


def _combined(col: pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def impressions_of(t: pa.Table, key: str, collapsed: frozenset[str]) -> np.ndarray:
    """Impressions per request row of a request-level table (the length of any list column)."""
    for name in t.column_names:
        if name != key and name not in collapsed:
            return _combined(t.column(name)).value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    return np.ones(t.num_rows, dtype=np.int64)


# --- 2. profile ---------------------------------------------------------------------------------------
def profile_columns(path: Path, key: str, source_key: str, collapsed=frozenset(), tick: Tick | None = None) -> Profile:
    schema = pq.read_schema(path)
    prof = Profile(key, source_key, collapsed=frozenset(collapsed))
    for f in schema:
        if f.name != key:
            t = f.type if f.name in collapsed else f.type.value_type
            prof.columns[f.name] = ColumnProfile(f.name, str(t), family(t))
    for t in iter_tables(path):
        k = impressions_of(t, key, prof.collapsed)
        offs = np.zeros(k.size + 1, dtype=np.int64)
        np.cumsum(k, out=offs[1:])
        is_start = start_mask(int(offs[-1]), offs[:-1])
        req_of = np.repeat(np.arange(k.size), k)
        keys = _combined(t.column(key))
        for name, cp in prof.columns.items():
            col = _combined(t.column(name))
            if name in prof.collapsed:
                _value_stats(cp, col, col, prof.requests)
                continue
            values = col.flatten()
            bad = varies_within_request(values, is_start)
            if bad.any():
                reqs = np.unique(req_of[bad])
                if cp.example is None:
                    cp.example = keys[int(reqs[0])].as_py()
                cp.varying += int(reqs.size)
            _value_stats(cp, values, values.take(pa.array(offs[:-1])), prof.requests)
        prof.requests += k.size
        prof.impressions += int(offs[-1])
        prof.multi += int((k >= 2).sum())
        if tick is not None:
            tick(k.size)
    return prof


def _value_stats(cp: ColumnProfile, values: pa.Array, first: pa.Array, req0: int) -> None:
    """Fold a batch into `cp`: `values` per impression (or per request), `first` per request."""
    cp.nulls += values.null_count
    cp.values += len(values) - values.null_count
    if cp.family in ("int", "float", "bool"):
        _binary_stats(cp, values)
    elif cp.is_list:
        lens = first.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        all_lens = values.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        if all_lens.size:
            lo, hi = int(all_lens.min()), int(all_lens.max())
            cp.list_len_min = lo if cp.list_len_min is None else min(cp.list_len_min, lo)
            cp.list_len_max = hi if cp.list_len_max is None else max(cp.list_len_max, hi)
        cp.list_len_sum += int(lens.sum())
        w = splitmix64(np.arange(req0, req0 + lens.size, dtype=np.uint64))
        with np.errstate(over="ignore"):
            cp.len_check = int(np.uint64(cp.len_check) + (w * lens.astype(np.uint64)).sum(dtype=np.uint64))
        if cp.family in ("list_int", "list_float", "list_bool"):
            _binary_stats(cp, values.flatten())
        if cp.family in ("list_int", "list_temporal") and cp.ascending:
            cp.ascending = _ascending(first, lens)
    else:
        cp.binary = False


def _binary_stats(cp: ColumnProfile, v: pa.Array) -> None:
    if len(v) == v.null_count:
        return
    if pa.types.is_boolean(v.type):
        v = v.cast(pa.int8())
    mm = pc.min_max(v)
    lo, hi = float(mm["min"].as_py()), float(mm["max"].as_py())
    cp.lo = lo if cp.lo is None else min(cp.lo, lo)
    cp.hi = hi if cp.hi is None else max(cp.hi, hi)
    if cp.binary:
        integral = pa.types.is_integer(v.type) or bool(pc.all(pc.equal(v, pc.round(v))).as_py() is not False)
        cp.binary = lo >= 0 and hi <= 1 and integral
    cp.positives += float(pc.sum(v).as_py() or 0)


def _ascending(lists: pa.Array, lens: np.ndarray) -> bool:
    child = lists.flatten()
    if child.null_count:
        return False
    v = child.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if v.size < 2:
        return True
    d = np.diff(v)
    inner = np.ones(d.size, dtype=bool)
    ends = np.cumsum(lens)[:-1] - 1  # the last element of each list but the final one
    inner[ends[(ends >= 0) & (ends < d.size)]] = False
    return bool((d[inner] >= 0).all())


# --- 3. the request-level table -----------------------------------------------------------------------
def request_batches(
    path: Path, key: str, ro: tuple[str, ...], collapsed=frozenset(), tick: Tick | None = None
) -> Iterator[tuple[pa.Table, np.ndarray, float]]:
    """(request-level table, impressions per request, impression-level bytes) per batch: RO columns
    one value per request (the request's first row), every other column a list over the
    impressions. The impression-level bytes are counted before RO columns are collapsed, so a
    conflicting value counts as the log holds it (workloads.log_sketch.row_bytes)."""
    ro_set = set(ro)
    for t in iter_tables(path):
        k = impressions_of(t, key, frozenset(collapsed))
        starts = pa.array((np.cumsum(k) - k).astype(np.int64))
        cols, imp = [], 0.0
        for name in t.column_names:
            col = _combined(t.column(name))
            if name == key or name in collapsed:  # one value per request, k impressions each
                imp += float(row_bytes(col) @ k.astype(np.float64))
            else:
                values = col.flatten()
                imp += float(row_bytes(values).sum())
                if name in ro_set:
                    col = values.take(starts)
            cols.append(col)
        if tick is not None:
            tick(t.num_rows)
        yield pa.Table.from_arrays(cols, names=t.column_names), k, imp


def request_bytes(t: pa.Table) -> float:
    """Request-level bytes of a batch (workloads.log_sketch.row_bytes)."""
    return float(sum(row_bytes(_combined(c)).sum() for c in t.columns))
