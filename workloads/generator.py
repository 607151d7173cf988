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
no transcendental function runs per id. Time gaps are exponential quantiles from a 4096-entry table.
"""

from __future__ import annotations

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
_FP = 12  # fixed-point fraction bits of the table (so width * frac fits int64 up to _MAX_TABLE_CARD)
_MAX_TABLE_CARD = 1 << 36  # above this the fixed-point table could overflow int64: use floats

# stream ids inside a block (part of the determinism contract)
_S_COUNTS, _S_HISTORY, _S_USER, _S_ITEM_ID, _S_ITEM, _S_USER_DENSE, _S_ITEM_DENSE, _S_LABELS = range(8)


@lru_cache(maxsize=64)
def _zipf_table(cardinality: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point knots X_j = F^-1(j/4096) - 1 and widths D_j = X_{j+1} - X_j (int64, _FP frac bits)."""
    u = np.arange(_KNOTS + 1, dtype=np.float64) / _KNOTS
    x = _inverse_cdf(u, cardinality, a)
    x[0], x[-1] = 1.0, float(cardinality + 1)
    fx = np.floor((x - 1.0) * (1 << _FP)).astype(np.int64)
    fx = np.maximum.accumulate(fx)
    # the top knot is exclusive: ids stay < cardinality
    fx[-1] = cardinality << _FP
    return fx[:-1].copy(), np.diff(fx)


def _inverse_cdf(u: np.ndarray, cardinality: int, a: float) -> np.ndarray:
    c1 = float(cardinality + 1)
    if abs(a - 1.0) < 1e-9:
        return np.power(c1, u)
    e = 1.0 - a
    return np.power(1.0 + u * (c1**e - 1.0), 1.0 / e)


def _zipf_from_bits(bits32: np.ndarray, table: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """ids into `out` (int64) from uint32 draws: bucket = top bits, position in it = the rest."""
    xs, ds = table
    j = (bits32 >> _FRAC_BITS).astype(np.intp)
    frac = (bits32 & ((1 << _FRAC_BITS) - 1)).astype(np.int64)
    # mode="clip" skips numpy's buffered bounds-checking copy (j is always in range)
    np.take(ds, j, out=out, mode="clip")
    out *= frac
    out >>= _FRAC_BITS
    out += np.take(xs, j, mode="clip")
    out >>= _FP


def zipf_ids(rng: np.random.Generator, n: int, cardinality: int, a: float, out: np.ndarray | None = None):
    """n ids in [0, cardinality) with P(id) ~ (id+1)^-a (see the module docstring)."""
    out = np.empty(n, dtype=np.int64) if out is None else out
    if cardinality > _MAX_TABLE_CARD:
        x = _inverse_cdf(rng.random(n), cardinality, a)
        np.minimum(x.astype(np.int64) - 1, cardinality - 1, out=out)
        return out
    table = _zipf_table(int(cardinality), float(a))
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        raw = rng.bit_generator.random_raw((m + 1) // 2).astype("<u8", copy=False)
        _zipf_from_bits(raw.view("<u4")[:m], table, out[s:e])
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
    a_types = np.uint32(h.action_types)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        w16 = rng.bit_generator.random_raw((2 * m + 3) // 4).astype("<u8", copy=False).view("<u2")
        np.take(gt, (w16[:m] >> (16 - _KNOT_BITS)).astype(np.intp), out=gaps[s:e], mode="clip")
        # action = floor(u16 * A / 2^16): unbiased to within A/2^16
        np.right_shift(np.multiply(w16[m : 2 * m], a_types, dtype=np.uint32), 16, out=act[s:e], casting="unsafe")


def _counts(spec: WorkloadSpec, seed: int, block: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, block, _S_COUNTS])
    k = spec.impressions.sample(rng, n)
    hl = spec.history.length.sample(rng, n)
    n_imp = int(k.sum())
    usl = _lengths(rng, spec.user_sparse, n)
    isl = _lengths(rng, spec.item_sparse, n_imp)
    return {"k": k, "hl": hl, "usl": usl, "isl": isl}


def _lengths(rng: np.random.Generator, groups: tuple[SparseGroup, ...], rows: int) -> np.ndarray:
    parts = [g.pooling.sample(rng, g.count * rows).reshape(g.count, rows) for g in groups if g.count]
    return np.concatenate(parts, 0) if parts else np.zeros((0, rows), dtype=np.int64)


def _keyed_fill(
    rngs: list[np.random.Generator], groups: tuple[SparseGroup, ...], lens: list[np.ndarray], values: np.ndarray
) -> None:
    """Feature-major values for a window of blocks: feature f's ids of block 0, block 1, ..."""
    feats = [g for g in groups for _ in range(g.count)]
    pos = 0
    for f, g in enumerate(feats):
        for b, rng in enumerate(rngs):
            m = int(lens[b][f].sum())
            _ids_into(rng, g, values[pos : pos + m])
            pos += m


def _fill(spec: WorkloadSpec, seed: int, blocks: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Arrays for consecutive blocks [(block, n_requests), ...], written in place."""
    counts = [_counts(spec, seed, b, n) for b, n in blocks]
    k = np.concatenate([c["k"] for c in counts])
    hl = np.concatenate([c["hl"] for c in counts])
    usl = np.concatenate([c["usl"] for c in counts], 1)
    isl = np.concatenate([c["isl"] for c in counts], 1)
    r, n_imp, n_hist = k.size, int(k.sum()), int(hl.sum())
    rid = np.concatenate([np.arange(b * BLOCK, b * BLOCK + n, dtype=np.int64) for b, n in blocks])
    ts = rid + T0

    h_ids = np.empty(n_hist, np.int64)
    h_act = np.empty(n_hist, np.int64)
    h_ts = np.empty(n_hist, np.int64)
    user_dense = np.empty((r, spec.user_dense), np.float32)
    item_dense = np.empty((n_imp, spec.item_dense), np.float32)
    item_id = np.empty(n_imp, np.int64)
    usv = np.empty(int(usl.sum()), np.int64)
    isv = np.empty(int(isl.sum()), np.int64)
    n_tasks = spec.n_tasks
    labels = np.empty((n_imp, n_tasks), np.float32)
    rates = np.array([t.base_rate for t in spec.tasks], dtype=np.float32)
    h = spec.history

    r0 = i0 = h0 = 0
    user_rngs, item_rngs = [], []
    for (b, n), c in zip(blocks, counts, strict=True):
        ni, nh = int(c["k"].sum()), int(c["hl"].sum())

        def rng(stream: int, b: int = b) -> np.random.Generator:
            return np.random.default_rng([seed, b, stream])

        _history_into(rng(_S_HISTORY), spec, h_ids[h0 : h0 + nh], h_act[h0 : h0 + nh], h_ts[h0 : h0 + nh])
        zipf_ids(rng(_S_ITEM_ID), ni, h.item_cardinality, h.zipf_a, out=item_id[i0 : i0 + ni])
        rng(_S_USER_DENSE).standard_normal(out=user_dense[r0 : r0 + n], dtype=np.float32)
        rng(_S_ITEM_DENSE).standard_normal(out=item_dense[i0 : i0 + ni], dtype=np.float32)
        u = rng(_S_LABELS).random((ni, n_tasks), dtype=np.float32)
        np.less(u, rates, out=labels[i0 : i0 + ni], casting="unsafe")
        user_rngs.append(rng(_S_USER))
        item_rngs.append(rng(_S_ITEM))
        r0, i0, h0 = r0 + n, i0 + ni, h0 + nh
    _keyed_fill(user_rngs, spec.user_sparse, [c["usl"] for c in counts], usv)
    _keyed_fill(item_rngs, spec.item_sparse, [c["isl"] for c in counts], isv)
    _history_timestamps(h_ts, hl, ts)
    return {
        "request_id": rid,
        "timestamp": ts,
        "num_impressions": k,
        "user_dense": user_dense,
        "user_sparse_lengths": usl,
        "user_sparse_values": usv,
        "history_lengths": hl,
        "history_item_ids": h_ids,
        "history_actions": h_act,
        "history_timestamps": h_ts,
        "item_id": item_id,
        "item_sparse_lengths": isl,
        "item_sparse_values": isv,
        "item_dense": item_dense,
        "labels": labels,
    }


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
    out = {k: np.concatenate([p[k] for p in parts], axis=_CONCAT_DIM.get(k, 0)) for k in parts[0]}
    # keyed values are feature-major: interleave each part's per-feature runs
    for lk, vk in (("user_sparse_lengths", "user_sparse_values"), ("item_sparse_lengths", "item_sparse_values")):
        runs = []
        f = parts[0][lk].shape[0]
        splits = [np.cumsum(p[lk].sum(1))[:-1] for p in parts]
        pieces = [np.split(p[vk], s) for p, s in zip(parts, splits, strict=True)]
        for j in range(f):
            runs.extend(pc[j] for pc in pieces)
        out[vk] = np.concatenate(runs) if runs else parts[0][vk][:0]
    return out


def _to_batch(arrays: dict[str, np.ndarray], device: torch.device | str | None) -> RequestBatch:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    b = RequestBatch(**t)
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
    win, win_offs, win_lo, win_hi, next_block = None, None, 0, 0, 0
    lo = 0
    while lo < n_requests:
        hi = min(lo + chunk, n_requests)
        parts, cur = [], lo
        while cur < hi:
            if cur >= win_hi:  # a new window: the blocks that cover the rest of this chunk
                last = min(n_blocks, (hi - 1) // BLOCK + 1)
                blocks = [(b, min(BLOCK, n_requests - b * BLOCK)) for b in range(next_block, last)]
                win = _fill(spec, seed, blocks)
                win_offs = _window_offsets(win)
                win_lo, win_hi, next_block = next_block * BLOCK, next_block * BLOCK + sum(n for _, n in blocks), last
            take = min(hi, win_hi) - cur
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


__all__ = ["BLOCK", "Dist", "expected_counts", "generate", "iter_request_batches", "zipf_ids"]
