"""Vectorized synthesis of RequestBatches from a WorkloadSpec.

Determinism: requests are generated in fixed blocks of BLOCK requests. Block b draws its counts
(impressions per request, history lengths, pooling lengths) from `default_rng([seed, b, 0])` and
each value field from its own stream `default_rng([seed, b, field])`. So the same
(spec, seed, n_requests) gives identical tensors whatever chunk size a caller streams with, and the
same data on any machine (PCG64's bit stream is fixed across numpy versions).

Speed (one core, see benchmarks/workloads.py): the history dominates (~400 ids per request), so its
ids, action types and time gaps come from raw 64-bit draws (`random_raw`: 32 bits per id, 16 per
gap and per action), processed in cache-sized chunks, and every field is written in place into one
preallocated array per window of blocks (no per-block concatenation).

Ids with Zipf popularity follow a bounded continuous power law on [1, C+1), floored to an id in
[0, C) (P(id) ~ (id+1)^-a). They are drawn by inverse CDF from a 4096-knot table: the top 12 bits of
a draw pick an equal-mass bucket, the next 20 bits interpolate linearly inside it (fixed point), so
no transcendental function runs per id. Time gaps are exponential quantiles from a 4096-entry table;
dense features are standard-normal quantiles at 2^16 equal-probability levels (a 16-bit lookup,
~5x faster than numpy's ziggurat here). Chunk temporaries are per-thread scratch buffers, and every
output field is written once into a view of one buffer per window. Fresh memory costs the kernel a
page fault and a zeroed page per page touched (about a fifth of the CPU time at 1M impressions/s),
so each thread pools two such buffers and reuses one once no view of it is alive: a loop that
holds at most one batch while it makes the next touches no fresh memory (see _arena;
release_pooled_memory() hands the pool back).
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch

from workloads.batch import RequestBatch
from workloads.distributions import Dist
from workloads.errors import SpecError
from workloads.spec import SparseGroup, WorkloadSpec

BLOCK = 4096  # requests per RNG block (part of the determinism contract: changing it changes data)
T0 = 1_700_000_000  # epoch seconds of request 0
_CHUNK = 1 << 15  # elements per in-cache processing chunk (temporaries stay in L2; 2x larger is 3x slower here)
_KNOT_BITS = 12  # 4096 equal-mass buckets: both tables (2 x 32 KiB) stay in L1/L2 for the gathers
_KNOTS = 1 << _KNOT_BITS
_FRAC_BITS = 32 - _KNOT_BITS  # the rest of a 32-bit draw places the id inside its bucket
_FP = 12  # fixed-point fraction bits of the knots
# id = (D_j * frac + X_j << 20) >> 32 stays below C << 32 (C = cardinality), so int64 holds it while
# C < 2^31; above that the ids come from floats
_MAX_TABLE_CARD = (1 << 31) - 1

# stream ids inside a block (part of the determinism contract)
_S_COUNTS, _S_HISTORY, _S_USER, _S_ITEM_ID, _S_ITEM, _S_USER_DENSE, _S_ITEM_DENSE, _S_LABELS = range(8)

_tls = threading.local()
_POOL_ARENAS = 2  # output buffers kept per thread: the batch in use and the one being made


def _scratch(name: str, m: int, dtype) -> np.ndarray:
    """A reusable per-thread buffer of >= m elements (the chunk temporaries: no allocation per chunk)."""
    key = (name, np.dtype(dtype).str)
    bufs = _tls.__dict__.setdefault("bufs", {})
    b = bufs.get(key)
    if b is None or b.size < m:
        b = bufs[key] = np.empty(max(m, _CHUNK), dtype=dtype)
    return b[:m]


@lru_cache(maxsize=64)
def _zipf_table(cardinality: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point knots (X_j << 20) and widths D_j, X_j = F^-1(j/4096) - 1 with _FP fraction bits."""
    u = np.arange(_KNOTS + 1, dtype=np.float64) / _KNOTS
    x = _inverse_cdf(u, cardinality, a)
    x[0], x[-1] = 1.0, float(cardinality + 1)
    fx = np.floor((x - 1.0) * (1 << _FP)).astype(np.int64)
    fx = np.maximum.accumulate(fx)
    # the top knot is exclusive: ids stay < cardinality
    fx[-1] = cardinality << _FP
    return fx[:-1] << _FRAC_BITS, np.diff(fx)


@lru_cache(maxsize=64)
def _zipf_offsets(cardinality: int, a: float) -> np.ndarray:
    """E_j = (X_j << 20) - D_j * (j << 20), wrapped to int64: with it the id is (D_j * bits + E_j) >> 32
    for the whole 32-bit draw (frac = bits - (j << 20)), which spares the mask of the fraction."""
    xs20, ds = _zipf_table(cardinality, a)
    return xs20 - ds * (np.arange(_KNOTS, dtype=np.int64) << _FRAC_BITS)


def _inverse_cdf(u: np.ndarray, cardinality: int, a: float) -> np.ndarray:
    c1 = float(cardinality + 1)
    if abs(a - 1.0) < 1e-9:
        return np.power(c1, u)
    e = 1.0 - a
    return np.power(1.0 + u * (c1**e - 1.0), 1.0 / e)


def _zipf_from_bits(bits32: np.ndarray, table: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """ids into `out` (int64) from uint32 draws: bucket j = top bits, frac = the rest;
    id = (X_j << 20 + D_j * frac) >> 32, i.e. floor(X_j + D_j * frac / 2^20) in whole ids."""
    xs20, ds = table
    m = bits32.size
    j = _scratch("j", m, np.intp)
    f = _scratch("f", m, np.int64)
    # ufuncs that cast into their out (one pass each, no astype temporaries)
    np.right_shift(bits32, _FRAC_BITS, out=j, casting="unsafe")
    np.bitwise_and(bits32, (1 << _FRAC_BITS) - 1, out=f, casting="unsafe")
    # mode="clip" skips numpy's buffered bounds-checking copy (j is always in range)
    np.take(ds, j, out=out, mode="clip")
    out *= f
    np.take(xs20, j, out=f, mode="clip")
    out += f
    out >>= _FRAC_BITS + _FP


def _zipf_from_bits_fast(bits32: np.ndarray, ds: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """_zipf_from_bits with one pass fewer: id = (D_j * bits + E_j) >> 32 (_zipf_offsets). The
    products and sums wrap modulo 2^64, and their true total, X_j << 20 + D_j * frac, lies in
    [0, C << 32) with C < 2^31, so the wrapped int64 total is exact."""
    m = bits32.size
    j = _scratch("j", m, np.intp)
    f = _scratch("f", m, np.int64)
    np.right_shift(bits32, _FRAC_BITS, out=j, casting="unsafe")
    np.take(ds, j, out=out, mode="clip")
    np.multiply(out, bits32, out=out, casting="unsafe")
    np.take(offsets, j, out=f, mode="clip")
    out += f
    out >>= _FRAC_BITS + _FP


def zipf_ids(rng: np.random.Generator, n: int, cardinality: int, a: float, out: np.ndarray | None = None):
    """n ids in [0, cardinality) with P(id) ~ (id+1)^-a (see the module docstring)."""
    out = np.empty(n, dtype=np.int64) if out is None else out
    if cardinality > _MAX_TABLE_CARD:
        x = _inverse_cdf(rng.random(n), cardinality, a)
        np.minimum(x.astype(np.int64) - 1, cardinality - 1, out=out)
        return out
    ds = _zipf_table(int(cardinality), float(a))[1]
    offsets = _zipf_offsets(int(cardinality), float(a))
    raw_gen = rng.bit_generator.random_raw
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        raw = raw_gen((m + 1) // 2).astype("<u8", copy=False)
        _zipf_from_bits_fast(raw.view("<u4")[:m], ds, offsets, out[s:e])
    return out


def _ids_into(rng: np.random.Generator, g: SparseGroup, out: np.ndarray) -> None:
    if g.popularity == "zipf":
        zipf_ids(rng, out.size, g.cardinality, g.zipf_a, out=out)
    else:
        out[:] = rng.integers(0, g.cardinality, size=out.size, dtype=np.int64)


@lru_cache(maxsize=16)
def _gap_table(mean_gap_s: float) -> np.ndarray:
    """Exponential(mean) quantiles at 4096 bucket midpoints, rounded up to >= 1 second."""
    p = (np.arange(_KNOTS, dtype=np.float64) + 0.5) / _KNOTS
    return np.maximum(1, np.ceil(-mean_gap_s * np.log1p(-p))).astype(np.int64)


def _history_into(rng: np.random.Generator, spec: WorkloadSpec, ids: np.ndarray, act: np.ndarray, gaps: np.ndarray):
    """Item ids from 32-bit draws; gap and action from 16 bits each (all contiguous, in-cache chunks)."""
    h = spec.history
    n = ids.size
    zipf_ids(rng, n, h.item_cardinality, h.zipf_a, out=ids)
    gt = _gap_table(float(h.mean_gap_s))
    n_act = int(h.action_types)
    pow2 = n_act & (n_act - 1) == 0
    a_types = np.uint32(n_act)
    act_shift = 16 - (n_act.bit_length() - 1)
    raw_gen = rng.bit_generator.random_raw
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        w16 = raw_gen((2 * m + 3) // 4).astype("<u8", copy=False).view("<u2")
        j = _scratch("j", m, np.intp)
        np.right_shift(w16[:m], 16 - _KNOT_BITS, out=j, casting="unsafe")
        np.take(gt, j, out=gaps[s:e], mode="clip")
        # action = floor(u16 * A / 2^16): unbiased to within A/2^16 (exact, one shift, when A = 2^b)
        if pow2:
            np.right_shift(w16[m : 2 * m], act_shift, out=act[s:e], casting="unsafe")
        else:
            t = _scratch("a32", m, np.uint32)
            np.multiply(w16[m : 2 * m], a_types, out=t, dtype=np.uint32)
            np.right_shift(t, 16, out=act[s:e], casting="unsafe")


def _lengths_into(rng: np.random.Generator, groups: tuple[SparseGroup, ...], out: np.ndarray) -> None:
    """Pooling lengths [F, rows] of one block written into `out` (a column slice of the window's array)."""
    f0 = 0
    rows = out.shape[1]
    for g in groups:
        if not g.count:
            continue
        dst = out[f0 : f0 + g.count]
        p = g.pooling
        if p.kind == "fixed":  # draws nothing from rng (as Dist.sample), so the stream is unchanged
            v = max(p.value, p.min)
            dst[...] = v if p.max is None else min(v, p.max)
        else:
            dst[...] = p.sample(rng, g.count * rows).reshape(g.count, rows)
        f0 += g.count


def _n_feats(groups: tuple[SparseGroup, ...]) -> int:
    return sum(g.count for g in groups)


def _keyed_fill(
    rngs: list[np.random.Generator],
    groups: tuple[SparseGroup, ...],
    lengths: np.ndarray,
    col_starts: np.ndarray,
    values: np.ndarray,
) -> None:
    """Feature-major values for a window of blocks: feature f's ids of block 0, block 1, ...

    `lengths` is the window's [F, rows]; block b owns columns col_starts[b]:col_starts[b+1]. Each
    block draws all ids of a group in one call (one stream per block and group, so a group's ids
    do not depend on how blocks are grouped into windows), then its per-feature runs are placed."""
    n_f, n_b = lengths.shape[0], len(rngs)
    if n_f == 0 or lengths.shape[1] == 0:
        return
    sums = np.add.reduceat(lengths, col_starts[:-1], axis=1)  # [F, blocks]
    sums[:, col_starts[1:] == col_starts[:-1]] = 0  # reduceat gives the element itself for empty ranges
    pos = np.zeros(n_f * n_b + 1, dtype=np.int64)
    np.cumsum(sums.reshape(-1), out=pos[1:])  # (feature, block) runs in feature-major order
    sums_l, pos_l = sums.tolist(), pos.tolist()
    f0 = 0
    for g in groups:
        if not g.count:
            continue
        for b, rng in enumerate(rngs):
            runs = [sums_l[f][b] for f in range(f0, f0 + g.count)]
            total = sum(runs)
            if n_b == 1:  # one block: the group's features are already adjacent in `values`
                _ids_into(rng, g, values[pos_l[f0] : pos_l[f0] + total])
                continue
            tmp = _scratch("keyed", total, np.int64)
            _ids_into(rng, g, tmp)
            o = 0
            for f, m in zip(range(f0, f0 + g.count), runs, strict=True):
                p = pos_l[f * n_b + b]
                values[p : p + m] = tmp[o : o + m]
                o += m
        f0 += g.count


@lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """Standard-normal quantiles at 2^16 equal-probability midpoints (|z| <= 4.3), float32."""
    from scipy.special import ndtri

    return ndtri((np.arange(1 << 16, dtype=np.float64) + 0.5) / (1 << 16)).astype(np.float32)


def _normals_into(rng: np.random.Generator, out: np.ndarray) -> None:
    """Standard normals by a 16-bit inverse-CDF lookup: ~5x faster than the ziggurat here, and dense
    features need a bell shape, not tails beyond 4.3 sigma."""
    flat = out.reshape(-1)  # a contiguous row range of a C-order array: a view
    n = flat.size
    tab = _normal_table()
    raw_gen = rng.bit_generator.random_raw
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        w16 = raw_gen((m + 3) // 4).astype("<u8", copy=False).view("<u2")[:m]
        j = _scratch("j", m, np.intp)
        np.copyto(j, w16, casting="unsafe")
        np.take(tab, j, out=flat[s:e], mode="clip")


def _arena(nbytes: int) -> np.ndarray:
    """A uint8 buffer of >= nbytes for a window's outputs: a free one from this thread's pool, else
    a fresh one (pooled, with slack: the next window's random sizes differ a little).

    A buffer is free when no view of it is alive (only the pool holds it), so a caller's batch is
    never overwritten."""
    pool: list[np.ndarray] = _tls.__dict__.setdefault("arenas", [])
    free = [i for i in range(len(pool)) if _idle(pool, i) and pool[i].size >= nbytes]
    if free:
        return pool[min(free, key=lambda i: pool[i].size)]
    buf = np.empty(nbytes + (nbytes >> 3) + 64, np.uint8)
    # a full pool drops a free buffer first (its memory goes back), else its oldest, which lives on
    # only as long as its batch does
    if len(pool) >= _POOL_ARENAS:
        idle = [i for i in range(len(pool)) if _idle(pool, i)]
        pool.pop(idle[0] if idle else 0)
    pool.append(buf)
    return buf


def _idle(pool: list[np.ndarray], i: int) -> bool:
    """No view of pool[i] is alive: its only references are the pool's and getrefcount's argument."""
    return sys.getrefcount(pool[i]) <= 2


def release_pooled_memory() -> None:
    """Drop this thread's pooled output buffers (those in use live on with their batches)."""
    _tls.__dict__.pop("arenas", None)


def _carve(fields: dict[str, tuple[tuple[int, ...], type]]) -> dict[str, np.ndarray]:
    """Arrays of the given shapes and dtypes as 64-byte-aligned views of one buffer (_arena): one
    large allocation also gets numpy's huge-page advice as a whole where it is fresh."""
    offsets, total = {}, 0
    for name, (shape, dtype) in fields.items():
        total = (total + 63) & ~63
        offsets[name] = total
        total += math.prod(shape) * np.dtype(dtype).itemsize
    buf = _arena(total + 64)
    base = -buf.ctypes.data % 64
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in fields.items():
        o = base + offsets[name]
        out[name] = buf[o : o + math.prod(shape) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
    return out


def _counts(spec: WorkloadSpec, seed: int, blocks: list[tuple[int, int]]):
    """Per-request counts and per-row pooling lengths of a window, drawn block by block (in the
    order of the determinism contract) into scratch buffers: (count rngs, k, hl, usl, isl)."""
    count_rngs = [np.random.default_rng([seed, b, _S_COUNTS]) for b, _ in blocks]
    k = np.concatenate([spec.impressions.sample(rng, n) for rng, (_, n) in zip(count_rngs, blocks, strict=True)])
    hl = np.concatenate([spec.history.length.sample(rng, n) for rng, (_, n) in zip(count_rngs, blocks, strict=True)])
    r, n_imp = k.size, int(k.sum())
    usl = _scratch("usl", _n_feats(spec.user_sparse) * r, np.int64).reshape(-1, r)
    isl = _scratch("isl", _n_feats(spec.item_sparse) * n_imp, np.int64).reshape(-1, n_imp)
    r0 = i0 = 0
    for rng, (_, n) in zip(count_rngs, blocks, strict=True):
        ni = int(k[r0 : r0 + n].sum())
        _lengths_into(rng, spec.user_sparse, usl[:, r0 : r0 + n])
        _lengths_into(rng, spec.item_sparse, isl[:, i0 : i0 + ni])
        r0, i0 = r0 + n, i0 + ni
    return k, hl, usl, isl


def _window_arrays(spec: WorkloadSpec, k, hl, usl, isl) -> dict[str, np.ndarray]:
    """Every output field of a window, allocated at once (see _carve), counts copied in."""
    r, n_imp, n_hist = k.size, int(k.sum()), int(hl.sum())
    i64, f32 = np.int64, np.float32
    a = _carve(
        {
            "request_id": ((r,), i64),
            "timestamp": ((r,), i64),
            "num_impressions": ((r,), i64),
            "user_dense": ((r, spec.user_dense), f32),
            "user_sparse_lengths": (usl.shape, i64),
            "user_sparse_values": ((int(usl.sum()),), i64),
            "history_lengths": ((r,), i64),
            "history_item_ids": ((n_hist,), i64),
            "history_actions": ((n_hist,), i64),
            "history_timestamps": ((n_hist,), i64),
            "item_id": ((n_imp,), i64),
            "item_sparse_lengths": (isl.shape, i64),
            "item_sparse_values": ((int(isl.sum()),), i64),
            "item_dense": ((n_imp, spec.item_dense), f32),
            "labels": ((n_imp, spec.n_tasks), f32),
        }
    )
    a["num_impressions"][:] = k
    a["history_lengths"][:] = hl
    a["user_sparse_lengths"][...] = usl
    a["item_sparse_lengths"][...] = isl
    return a


def _fill(spec: WorkloadSpec, seed: int, blocks: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Arrays for consecutive blocks [(block, n_requests), ...], each written once, in place."""
    a = _window_arrays(spec, *_counts(spec, seed, blocks))
    k, hl = a["num_impressions"], a["history_lengths"]
    req_starts = np.zeros(len(blocks) + 1, dtype=np.int64)
    np.cumsum([n for _, n in blocks], out=req_starts[1:])
    imp_starts = np.zeros(len(blocks) + 1, dtype=np.int64)
    np.cumsum(np.add.reduceat(k, req_starts[:-1]) if k.size else [], out=imp_starts[1:])
    hist_starts = np.zeros(len(blocks) + 1, dtype=np.int64)
    np.cumsum(np.add.reduceat(hl, req_starts[:-1]) if hl.size else [], out=hist_starts[1:])
    rid, ts = a["request_id"], a["timestamp"]
    for bi, (b, n) in enumerate(blocks):
        rid[req_starts[bi] : req_starts[bi] + n] = np.arange(b * BLOCK, b * BLOCK + n, dtype=np.int64)
    np.add(rid, T0, out=ts)
    h_ids, h_act, h_ts = a["history_item_ids"], a["history_actions"], a["history_timestamps"]
    rates = np.array([t.base_rate for t in spec.tasks], dtype=np.float32)
    h = spec.history
    user_rngs, item_rngs = [], []
    for bi, (b, n) in enumerate(blocks):
        r0, i0, h0 = int(req_starts[bi]), int(imp_starts[bi]), int(hist_starts[bi])
        ni, nh = int(imp_starts[bi + 1]) - i0, int(hist_starts[bi + 1]) - h0

        def block_rng(stream: int, b: int = b) -> np.random.Generator:
            return np.random.default_rng([seed, b, stream])

        _history_into(block_rng(_S_HISTORY), spec, h_ids[h0 : h0 + nh], h_act[h0 : h0 + nh], h_ts[h0 : h0 + nh])
        zipf_ids(block_rng(_S_ITEM_ID), ni, h.item_cardinality, h.zipf_a, out=a["item_id"][i0 : i0 + ni])
        _normals_into(block_rng(_S_USER_DENSE), a["user_dense"][r0 : r0 + n])
        _normals_into(block_rng(_S_ITEM_DENSE), a["item_dense"][i0 : i0 + ni])
        u = block_rng(_S_LABELS).random((ni, spec.n_tasks), dtype=np.float32)
        np.less(u, rates, out=a["labels"][i0 : i0 + ni], casting="unsafe")
        user_rngs.append(block_rng(_S_USER))
        item_rngs.append(block_rng(_S_ITEM))
    _keyed_fill(user_rngs, spec.user_sparse, a["user_sparse_lengths"], req_starts, a["user_sparse_values"])
    _keyed_fill(item_rngs, spec.item_sparse, a["item_sparse_lengths"], imp_starts, a["item_sparse_values"])
    _history_timestamps(h_ts, hl, ts)
    return a


def _history_timestamps(gaps: np.ndarray, lengths: np.ndarray, request_ts: np.ndarray) -> None:
    """In place: gaps -> ascending timestamps that end before each request.

    Event j of a request gets ts_j = ts_{j-1} + gap_j; the segment starts at R - S (S = the sum of
    its gaps), so its last event sits one gap (the segment's first, an independent draw) before the
    request at R. Done as one running sum: each segment's first gap is replaced by the jump from the
    previous segment's last timestamp to this segment's first."""
    if gaps.size == 0:
        return
    nz = lengths > 0
    starts = (np.cumsum(lengths) - lengths)[nz]
    r = request_ts[nz]
    first_gap = gaps[starts]
    seg_sum = np.add.reduceat(gaps, starts)
    first_ts = r - seg_sum
    last_ts = r - first_gap
    prev_last = np.concatenate([[0], last_ts[:-1]])
    gaps[starts] = first_ts - prev_last
    np.cumsum(gaps, out=gaps)


def _window_offsets(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Prefix sums of a window's lengths, computed once so each chunk slice is O(chunk)."""

    def pre(x: np.ndarray) -> np.ndarray:
        out = np.zeros(x.shape[:-1] + (x.shape[-1] + 1,), dtype=np.int64)
        np.cumsum(x, axis=-1, out=out[..., 1:])
        return out

    usl, isl = arrays["user_sparse_lengths"], arrays["item_sparse_lengths"]
    return {
        "imp": pre(arrays["num_impressions"]),
        "hist": pre(arrays["history_lengths"]),
        "user": pre(usl),
        "user_start": np.cumsum(usl.sum(1)) - usl.sum(1),
        "item": pre(isl),
        "item_start": np.cumsum(isl.sum(1)) - isl.sum(1),
    }


def _slice(arrays: dict[str, np.ndarray], lo: int, hi: int, offs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Requests [lo, hi) of a window's arrays (jagged fields sliced by their offsets)."""
    k = arrays["num_impressions"]
    if lo == 0 and hi == k.size:
        return arrays
    i0, i1 = int(offs["imp"][lo]), int(offs["imp"][hi])
    h0, h1 = int(offs["hist"][lo]), int(offs["hist"][hi])
    out = {
        "request_id": arrays["request_id"][lo:hi],
        "timestamp": arrays["timestamp"][lo:hi],
        "num_impressions": k[lo:hi],
        "user_dense": arrays["user_dense"][lo:hi],
        "history_lengths": arrays["history_lengths"][lo:hi],
        "history_item_ids": arrays["history_item_ids"][h0:h1],
        "history_actions": arrays["history_actions"][h0:h1],
        "history_timestamps": arrays["history_timestamps"][h0:h1],
        "item_id": arrays["item_id"][i0:i1],
        "item_dense": arrays["item_dense"][i0:i1],
        "labels": arrays["labels"][i0:i1],
    }
    out["user_sparse_lengths"], out["user_sparse_values"] = _slice_keyed(
        arrays["user_sparse_lengths"], arrays["user_sparse_values"], lo, hi, offs["user"], offs["user_start"]
    )
    out["item_sparse_lengths"], out["item_sparse_values"] = _slice_keyed(
        arrays["item_sparse_lengths"], arrays["item_sparse_values"], i0, i1, offs["item"], offs["item_start"]
    )
    return out


def _slice_keyed(lengths: np.ndarray, values: np.ndarray, lo: int, hi: int, pre: np.ndarray, feat_start: np.ndarray):
    f = lengths.shape[0]
    if f == 0:
        return lengths[:, lo:hi], values[:0]
    starts = feat_start + pre[:, lo]
    ends = feat_start + pre[:, hi]
    if f == 1:
        return lengths[:, lo:hi], values[starts[0] : ends[0]]
    vals = np.concatenate([values[s:e] for s, e in zip(starts, ends, strict=True)])  # loop over features only
    return lengths[:, lo:hi], vals


_CONCAT_DIM = {"user_sparse_lengths": 1, "item_sparse_lengths": 1}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    out = {name: np.concatenate([p[name] for p in parts], axis=_CONCAT_DIM.get(name, 0)) for name in parts[0]}
    # keyed values are feature-major: interleave each part's per-feature runs
    for lk, vk in (("user_sparse_lengths", "user_sparse_values"), ("item_sparse_lengths", "item_sparse_values")):
        runs: list[np.ndarray] = []
        f = parts[0][lk].shape[0]
        splits = [np.cumsum(p[lk].sum(1))[:-1] for p in parts]
        pieces = [np.split(p[vk], s) for p, s in zip(parts, splits, strict=True)]
        for j in range(f):
            runs.extend(pc[j] for pc in pieces)
        out[vk] = np.concatenate(runs) if runs else parts[0][vk][:0]
    return out


def _to_batch(arrays: dict[str, np.ndarray], device: torch.device | str | None) -> RequestBatch:
    t = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in arrays.items()}
    b = RequestBatch(**t)
    # the impression layout's jagged sizes, known here for free, spare to_impressions() a sync
    k = arrays["num_impressions"]
    b.set_expanded_totals(
        int(np.dot(arrays["user_sparse_lengths"].sum(0), k)), int(np.dot(arrays["history_lengths"], k))
    )
    # generation itself runs on the CPU (numpy); a device batch is one host-to-device copy
    return b.to(device) if device is not None and str(device) != "cpu" else b


def iter_request_batches(
    spec: WorkloadSpec,
    n_requests: int,
    seed: int | None = None,
    chunk_requests: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[RequestBatch]:
    """Stream `n_requests` requests as RequestBatches of `chunk_requests` (default: spec's batch).

    Memory is bounded by the blocks one chunk spans plus the chunk, so datasets larger than
    memory stream."""
    if isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 1:
        raise SpecError(f"requests={n_requests} must be an integer >= 1")
    chunk = chunk_requests or spec.requests_per_batch
    if chunk < 1:
        raise SpecError(f"chunk_requests={chunk} must be >= 1")
    seed = spec.seed if seed is None else seed
    if seed < 0:
        raise SpecError(f"seed={seed} must be >= 0")
    n_blocks = (n_requests + BLOCK - 1) // BLOCK
    win: dict[str, np.ndarray] = {}  # the generated window of blocks; empty until the first one
    win_offs: dict[str, np.ndarray] | None = None
    win_lo, win_hi, next_block = 0, 0, 0
    lo = 0
    while lo < n_requests:
        hi = min(lo + chunk, n_requests)
        parts: list[dict[str, np.ndarray]] = []
        cur = lo
        while cur < hi:
            if cur >= win_hi:  # a new window: the blocks that cover the rest of this chunk
                last = min(n_blocks, (hi - 1) // BLOCK + 1)
                blocks = [(b, min(BLOCK, n_requests - b * BLOCK)) for b in range(next_block, last)]
                win = _fill(spec, seed, blocks)
                win_offs = None  # computed only if a chunk takes part of this window
                win_lo, win_hi, next_block = next_block * BLOCK, next_block * BLOCK + sum(n for _, n in blocks), last
            take = min(hi, win_hi) - cur
            if take == win_hi - win_lo:  # the whole window (as `generate` does): no slicing
                parts.append(win)
            else:
                win_offs = _window_offsets(win) if win_offs is None else win_offs
                parts.append(_slice(win, cur - win_lo, cur - win_lo + take, win_offs))
            cur += take
        yield _to_batch(_concat(parts), device)
        lo = hi


def generate(
    spec: WorkloadSpec, n_requests: int, seed: int | None = None, device: torch.device | str | None = None
) -> RequestBatch:
    """All `n_requests` requests as one RequestBatch."""
    return next(iter_request_batches(spec, n_requests, seed, chunk_requests=n_requests, device=device))


def expected_counts(spec: WorkloadSpec) -> dict[str, float]:
    """Expected per-request counts from the spec's distributions (for planning and the cost model)."""
    k = spec.impressions.mean()
    return {
        "impressions_per_request": k,
        "history_length": spec.history.length.mean(),
        "user_ids_per_request": sum(g.count * g.pooling.mean() for g in spec.user_sparse),
        "item_ids_per_impression": sum(g.count * g.pooling.mean() for g in spec.item_sparse),
    }


__all__ = [
    "BLOCK",
    "Dist",
    "expected_counts",
    "generate",
    "iter_request_batches",
    "release_pooled_memory",
    "zipf_ids",
]
