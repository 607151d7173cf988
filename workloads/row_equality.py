"""Adjacent-row equality of Arrow columns of any type, vectorized: `row_equals_prev`.

`convert` decides which columns are request-only (RO) by asking, for every row, whether a column
holds the same value as in the row before it (within a request). Columns may be primitives,
strings, structs, fixed-size or nested lists; nulls equal nulls and NaN equals NaN, so a column
that repeats its value per request compares equal whatever its type.

The common null-free shapes compare straight from the Arrow buffers; lists of equal-length runs
compare as [rows, L] blocks; everything else goes through a normalized large_list form, in
bounded batches of row pairs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
            fast = _runs_equal(
                np.asarray(a.offsets.to_numpy(zero_copy_only=False), dtype=np.int64),
                child.to_numpy(zero_copy_only=False),
            )
            if fast is not None:
                return fast
    eq = np.zeros(n, dtype=bool)
    for s in range(1, n, _CHUNK_PAIRS):
        i = np.arange(s, min(n, s + _CHUNK_PAIRS))
        eq[i] = _pairs_equal(a, i, i - 1)
    return eq
