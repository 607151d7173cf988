"""The row level of `convert`: impression rows grouped into requests, and a request-level table.

- Roles: a column is request-only (RO) when it never differs between the rows of one request
  (`constant_columns`, `varies_within_request`); every other column is non-request-only (NRO).
- Grouping: `RequestGrouper` turns a stream of batches whose requests are runs of adjacent rows
  into tables of complete requests, carrying a request cut by a batch boundary into the next
  batch; a request key seen again after its run closed means the input is not grouped
  (`Unsorted`), which `convert` answers with an external sort.
- `requests_table`: one row per request, RO columns from the request's first row, NRO columns as
  lists over its impressions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workloads.errors import UserError
from workloads.row_equality import row_equals_prev

CONFLICT_POLICIES = ("error", "first")
OUT_KEY = "request_id"


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


class Unsorted(Exception):
    """A request key reappears after its request was closed: the input is not grouped by request."""


class NotConstant(Exception):
    """Columns guessed request-only (from the first batch) vary within a request."""

    def __init__(self, columns: list[str]):
        self.columns = columns


def read_row_groups(pf: pq.ParquetFile) -> Iterator[pa.Table]:
    for i in range(pf.num_row_groups):
        try:
            yield pf.read_row_group(i)
        except (pa.ArrowInvalid, OSError) as e:
            why = str(e).splitlines()[0]
            raise UserError(f"row group {i} of the input is corrupt ({why}); re-export the file") from None


# --- roles ----------------------------------------------------------------------------------------------
def key_array(t: pa.Table, key: str) -> np.ndarray:
    col = t.column(key)
    if col.null_count:
        raise UserError(f"request key column {key!r} has {col.null_count} null values; every row needs a key")
    v = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(v.type):
        v = v.dictionary_decode()
    return v.to_numpy(zero_copy_only=False)


def run_starts(keys: np.ndarray) -> np.ndarray:
    """Row indices where a new run of equal keys starts."""
    if keys.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(keys.size, dtype=bool)
    change[1:] = keys[1:] != keys[:-1]
    return np.nonzero(change)[0]


def start_mask(rows: int, starts: np.ndarray) -> np.ndarray:
    """True at the first row of every request."""
    is_start = np.zeros(rows, dtype=bool)
    is_start[starts] = True
    return is_start


def varies_within_request(arr: pa.Array | pa.ChunkedArray, is_start: np.ndarray) -> np.ndarray:
    """Per row: it differs from the previous row of the same request."""
    return ~row_equals_prev(arr) & ~is_start


def constant_columns(t: pa.Table, names: list[str], starts: np.ndarray) -> list[str]:
    """The columns of `names` (in that order) constant within every request of `t`."""
    is_start = start_mask(t.num_rows, starts)
    return [n for n in names if not varies_within_request(t.column(n), is_start).any()]


# --- grouping -------------------------------------------------------------------------------------------
def _detach(t: pa.Table) -> pa.Table:
    """A copy of `t` that shares no buffer with it (so the batch it was sliced from can be freed)."""
    cols = [pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], type=c.type) for c in t.columns]
    return pa.Table.from_arrays(cols, schema=t.schema)


class RequestGrouper:
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
        keys = key_array(t, self.key)
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
        starts = run_starts(keys)
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

    def _close(self, keys: np.ndarray) -> None:
        if np.unique(keys).size != keys.size:
            raise Unsorted
        self.closed.append(keys)

    def check_unique(self) -> None:
        if self.closed:
            all_keys = np.concatenate(self.closed)
            if np.unique(all_keys).size != all_keys.size:
                raise Unsorted


# --- the request-level table ----------------------------------------------------------------------------
def requests_table(
    t: pa.Table,
    starts: np.ndarray,
    key: str,
    ro: list[str],
    policy: str,
    verify: bool = False,
    detach: bool = False,
) -> tuple[pa.Table, int]:
    """One row per request: RO columns from its first row, the rest as lists; and the number of
    requests whose RO columns conflict (kept from the first row under policy `first`).

    RO columns are taken (new buffers); list columns wrap the input's values, copied when `detach`
    so the result outlives the input batch without keeping it alive. With `verify`, RO columns that
    vary are collected and raised as NotConstant instead of being conflicts."""
    n = t.num_rows
    first = pa.array(starts)
    offs = np.append(starts, n).astype(np.int64)
    conflicts = 0
    varying: list[str] = []
    list_offs = None  # built once, shared by every list column
    req_of_row = np.repeat(np.arange(starts.size), np.diff(offs))
    is_start = start_mask(n, starts)
    cols, names = [], []
    for name in t.column_names:
        col = t.column(name)
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if name == key:
            cols.append(arr.take(first))
            names.append(OUT_KEY)
        elif name in ro:
            bad = varies_within_request(arr, is_start)
            if bad.any():
                if verify:
                    varying.append(name)
                    continue
                reqs = np.unique(req_of_row[bad])
                if policy == "error":
                    _raise_conflict(t, key, name, starts[reqs[0]], reqs.size)
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
        raise NotConstant(varying)
    return pa.Table.from_arrays(cols, names=names), conflicts


def _raise_conflict(t: pa.Table, key: str, column: str, row: int, n_requests: int) -> None:
    key_value = key_array(t, key)[row]
    key_value = key_value.item() if hasattr(key_value, "item") else key_value
    raise UserError(
        f"RO column {column!r} differs within request {key}={key_value} ({n_requests} request(s) in this "
        "batch); drop it from --ro-columns or pass --on-conflict first"
    )
