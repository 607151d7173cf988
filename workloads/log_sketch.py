"""Bounded-memory summaries of a log's columns, streamed batch by batch, deterministic.

- `hash64(arr)`: a 64-bit hash per value of an Arrow array of any scalar type (integers, floats,
  booleans, temporals, strings, binaries, dictionaries), vectorized in numpy (no per-value Python).
  Python's own `hash()` is salted per process, so it is never used: the same log gives the same
  summaries in every run.
- `Distinct`: the number of distinct values, exact up to `k` of them and a k-minimum-values estimate
  beyond (relative error about 1/sqrt(k)); sketches of the same hash merge (`merge`).
- `Sample`: a uniform sample without replacement of at most `cap` values, chosen by the hash of each
  value's position in the stream (all values while there are fewer than `cap`).
- `row_bytes(arr)`: the Arrow bytes of every row, counted the way workloads.storage counts them
  (fixed widths, 4-byte list and string offsets, string bytes, one bit per row for a validity
  bitmap), so the bytes of one layout can be derived from the other without building it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_NULL = np.uint64(0x9E3779B97F4A7C15)
OFFSET = 4  # bytes per list/string offset (int32 offsets), as workloads.storage.OFFSET


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (uint64 in, uint64 out; wraps by design)."""
    z = np.asarray(x, dtype=np.uint64) + _NULL
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _string_hash(arr: pa.Array) -> np.ndarray:
    """Polynomial hash of each string's bytes, then mixed (vectorized over the data buffer)."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    arr = arr.cast(pa.large_binary() if large else pa.binary())
    odt = np.int64 if large else np.int32
    bufs = arr.buffers()
    offs = np.frombuffer(bufs[1], dtype=odt)[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lens = np.diff(offs)
    out = splitmix64(lens.astype(np.uint64))
    total = int(lens.sum())
    if total:
        pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
        chars = data[offs[0] : offs[0] + total].astype(np.uint64)
        with np.errstate(over="ignore"):
            terms = splitmix64(chars + (pos.astype(np.uint64) << np.uint64(8)))
        nonempty = lens > 0
        sums = np.add.reduceat(terms, (np.cumsum(lens) - lens)[nonempty])
        with np.errstate(over="ignore"):
            out[nonempty] = splitmix64(out[nonempty] ^ sums)
    return out


def hash64(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash per value; every null hashes alike."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        h = _string_hash(arr)
    elif pa.types.is_boolean(t):
        h = splitmix64(arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64))
    elif pa.types.is_floating(t):
        v = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        h = splitmix64(np.ascontiguousarray(v).view(np.uint64))
    elif pa.types.is_integer(t) or pa.types.is_temporal(t):
        v = arr.cast(pa.int64()) if not pa.types.is_integer(t) else arr
        h = splitmix64(v.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64))
    else:
        raise TypeError(f"hash64: no hash for {t}")
    if arr.null_count:
        h[pc.is_null(arr).to_numpy(zero_copy_only=False)] = _NULL
    return h


class Distinct:
    """Distinct-count sketch: the k smallest distinct hashes seen."""

    def __init__(self, k: int = 4096):
        self.k = k
        self.kept = np.zeros(0, dtype=np.uint64)

    def add(self, hashes: np.ndarray) -> None:
        if hashes.size:
            self.kept = np.union1d(self.kept, np.unique(hashes)[: self.k])[: self.k]

    def merge(self, other: Distinct) -> Distinct:
        out = Distinct(min(self.k, other.k))
        out.kept = np.union1d(self.kept, other.kept)[: out.k]
        return out

    def estimate(self) -> int:
        n = self.kept.size
        if n < self.k:
            return int(n)
        frac = (float(self.kept[-1]) + 1.0) / 2.0**64
        return int(round((self.k - 1) / frac))


class Sample:
    """At most `cap` values, uniform over the stream (by the hash of each value's position)."""

    def __init__(self, cap: int, salt: int = 0, dtype=np.int64):
        self.cap, self.salt = cap, np.uint64(salt)
        self.seen = 0
        self.total = 0.0
        self.values = np.zeros(0, dtype=dtype)
        self.prio = np.zeros(0, dtype=np.uint64)

    def add(self, values: np.ndarray) -> None:
        n = values.size
        if n == 0:
            return
        pos = np.arange(self.seen, self.seen + n, dtype=np.uint64)
        self.seen += n
        self.total += float(values.sum(dtype=np.float64))
        prio = splitmix64(pos ^ self.salt)
        vals = np.concatenate([self.values, values.astype(self.values.dtype, copy=False)])
        prio = np.concatenate([self.prio, prio])
        if prio.size > self.cap:
            keep = np.argpartition(prio, self.cap - 1)[: self.cap]
            keep.sort()
            vals, prio = vals[keep], prio[keep]
        self.values, self.prio = vals, prio

    @property
    def mean(self) -> float:
        """The exact mean of every value added (not of the sample)."""
        return self.total / self.seen if self.seen else 0.0


def _width_bytes(t: pa.DataType) -> float:
    if pa.types.is_boolean(t):
        return 1 / 8
    return t.bit_width / 8


def row_bytes(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Bytes of every row of `arr` (float64 per row; see the module docstring)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    t = arr.type
    valid = (1 / 8) if arr.null_count else 0.0
    if pa.types.is_dictionary(t):
        return row_bytes(arr.dictionary_decode())
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        lens = pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        width = 8 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else OFFSET
        return lens + width + valid
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        child = arr.flatten()  # honours the slice; null lists hold no values
        lens = arr.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        per = np.zeros(n, dtype=np.float64)
        if child.null_count or not _fixed_width(child.type):
            cb = row_bytes(child)
            nz = lens > 0
            if nz.any():
                per[nz] = np.add.reduceat(cb, (np.cumsum(lens) - lens)[nz])
        else:
            per = lens * _width_bytes(child.type)
        off = 0 if pa.types.is_fixed_size_list(t) else (8 if pa.types.is_large_list(t) else OFFSET)
        return per + off + valid
    if pa.types.is_struct(t):
        per = np.full(n, valid)
        for i in range(t.num_fields):
            per += row_bytes(pc.struct_field(arr, [i]))
        return per
    if _fixed_width(t):
        return np.full(n, _width_bytes(t) + valid)
    raise TypeError(f"row_bytes: no byte count for {t}")


def _fixed_width(t: pa.DataType) -> bool:
    return pa.types.is_primitive(t) and t.bit_width > 0
