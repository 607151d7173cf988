"""Vectorized synthesis of RequestBatches from a WorkloadSpec.

Determinism: requests are generated in fixed blocks of BLOCK requests; block b draws from
`np.random.default_rng([seed, b])`. So the same (spec, seed, n_requests) gives identical tensors
whatever chunk size a caller streams with (chunks are cut from the concatenated blocks).

Ids with Zipf popularity use the closed-form inverse CDF of a bounded continuous power law on
[1, C+1), floored to an integer id in [0, C): one uniform and one power per id, no table, no
per-row Python. (It is the continuous analogue of Zipf(a); for the id-popularity knob that is what
matters: the same heavy head and power-law tail.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from workloads.batch import RequestBatch
from workloads.distributions import Dist
from workloads.errors import SpecError
from workloads.spec import SparseGroup, WorkloadSpec

BLOCK = 4096  # requests per RNG block (part of the determinism contract: changing it changes data)
T0 = 1_700_000_000  # epoch seconds of request 0


def zipf_ids(rng: np.random.Generator, n: int, cardinality: int, a: float) -> np.ndarray:
    """n ids in [0, cardinality) with P(id) ~ (id+1)^-a (continuous inverse CDF, floored)."""
    u = rng.random(n)
    c1 = float(cardinality + 1)
    if abs(a - 1.0) < 1e-9:
        x = np.power(c1, u)
    else:
        e = 1.0 - a
        x = np.power(1.0 + u * (c1**e - 1.0), 1.0 / e)
    ids = x.astype(np.int64) - 1
    return np.minimum(ids, cardinality - 1, out=ids)


def _ids(rng: np.random.Generator, n: int, g: SparseGroup | None, cardinality: int, a: float, popularity: str):
    if popularity == "zipf":
        return zipf_ids(rng, n, cardinality, a)
    return rng.integers(0, cardinality, size=n, dtype=np.int64)


def _keyed(rng: np.random.Generator, groups: tuple[SparseGroup, ...], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature-major lengths [F, rows] and values for a tuple of sparse groups."""
    lengths, values = [], []
    for g in groups:
        if g.count == 0:
            continue
        lens = g.pooling.sample(rng, g.count * rows).reshape(g.count, rows)
        lengths.append(lens)
        values.append(_ids(rng, int(lens.sum()), g, g.cardinality, g.zipf_a, g.popularity))
    if not lengths:
        return np.zeros((0, rows), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(lengths, 0), np.concatenate(values)


def _block(spec: WorkloadSpec, seed: int, block: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, block])
    k = spec.impressions.sample(rng, n)
    n_imp = int(k.sum())
    h = spec.history
    hl = h.length.sample(rng, n)
    n_hist = int(hl.sum())
    rid = np.arange(block * BLOCK, block * BLOCK + n, dtype=np.int64)
    ts = T0 + rid
    usl, usv = _keyed(rng, spec.user_sparse, n)
    h_ids = zipf_ids(rng, n_hist, h.item_cardinality, h.zipf_a)
    h_act = rng.integers(0, h.action_types, size=n_hist, dtype=np.int64)
    # history timestamps: the request time minus a reverse cumulative sum of exponential gaps,
    # so each sequence ascends and ends before its request
    gaps = np.ceil(rng.exponential(h.mean_gap_s, size=n_hist)).astype(np.int64)
    h_ts = _history_timestamps(gaps, hl, ts)
    isl, isv = _keyed(rng, spec.item_sparse, n_imp)
    item_id = zipf_ids(rng, n_imp, h.item_cardinality, h.zipf_a)
    rates = np.array([t.base_rate for t in spec.tasks])
    labels = (rng.random((n_imp, len(rates))) < rates).astype(np.float32)
    return {
        "request_id": rid,
        "timestamp": ts,
        "num_impressions": k,
        "user_dense": rng.standard_normal((n, spec.user_dense), dtype=np.float32),
        "user_sparse_lengths": usl,
        "user_sparse_values": usv,
        "history_lengths": hl,
        "history_item_ids": h_ids,
        "history_actions": h_act,
        "history_timestamps": h_ts,
        "item_id": item_id,
        "item_sparse_lengths": isl,
        "item_sparse_values": isv,
        "item_dense": rng.standard_normal((n_imp, spec.item_dense), dtype=np.float32),
        "labels": labels,
    }


def _history_timestamps(gaps: np.ndarray, lengths: np.ndarray, request_ts: np.ndarray) -> np.ndarray:
    if gaps.size == 0:
        return gaps
    # within each segment, ts[j] = request_ts - sum(gaps[j:end]) (suffix sums, vectorized)
    csum = np.cumsum(gaps)
    ends = np.cumsum(lengths)
    seg_total_end = np.repeat(csum[ends[lengths > 0] - 1], lengths[lengths > 0])
    suffix = seg_total_end - csum + gaps
    return np.repeat(request_ts, lengths) - suffix


_CONCAT_DIM = {"user_sparse_lengths": 1, "item_sparse_lengths": 1}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts], axis=_CONCAT_DIM.get(k, 0)) for k in parts[0]}


def _to_batch(arrays: dict[str, np.ndarray], device: torch.device | str | None) -> RequestBatch:
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    b = RequestBatch(**t)
    return b.to(device) if device is not None and str(device) != "cpu" else b


def _slice(arrays: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Requests [lo, hi) of a block's arrays (jagged fields sliced by their offsets)."""
    k = arrays["num_impressions"]
    ko = np.concatenate([[0], np.cumsum(k)])
    hlo = np.concatenate([[0], np.cumsum(arrays["history_lengths"])])
    i0, i1 = ko[lo], ko[hi]
    out = {
        "request_id": arrays["request_id"][lo:hi],
        "timestamp": arrays["timestamp"][lo:hi],
        "num_impressions": k[lo:hi],
        "user_dense": arrays["user_dense"][lo:hi],
        "history_lengths": arrays["history_lengths"][lo:hi],
        "history_item_ids": arrays["history_item_ids"][hlo[lo] : hlo[hi]],
        "history_actions": arrays["history_actions"][hlo[lo] : hlo[hi]],
        "history_timestamps": arrays["history_timestamps"][hlo[lo] : hlo[hi]],
        "item_id": arrays["item_id"][i0:i1],
        "item_dense": arrays["item_dense"][i0:i1],
        "labels": arrays["labels"][i0:i1],
    }
    out["user_sparse_lengths"], out["user_sparse_values"] = _slice_keyed(
        arrays["user_sparse_lengths"], arrays["user_sparse_values"], lo, hi
    )
    out["item_sparse_lengths"], out["item_sparse_values"] = _slice_keyed(
        arrays["item_sparse_lengths"], arrays["item_sparse_values"], i0, i1
    )
    return out


def _slice_keyed(lengths: np.ndarray, values: np.ndarray, lo: int, hi: int):
    f, rows = lengths.shape
    if f == 0:
        return lengths[:, lo:hi], values[:0]
    offs = np.concatenate([[0], np.cumsum(lengths.reshape(-1))]).reshape(-1)
    starts = offs[np.arange(f) * rows + lo]
    ends = offs[np.arange(f) * rows + hi]
    vals = np.concatenate([values[s:e] for s, e in zip(starts, ends, strict=True)])  # loop over features only
    return lengths[:, lo:hi], vals


def iter_request_batches(
    spec: WorkloadSpec,
    n_requests: int,
    seed: int | None = None,
    chunk_requests: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[RequestBatch]:
    """Stream `n_requests` requests as RequestBatches of `chunk_requests` (default: spec's batch).

    Memory is bounded by one RNG block plus one chunk, so datasets larger than memory stream."""
    if n_requests < 1:
        raise SpecError(f"requests={n_requests} must be >= 1")
    chunk = chunk_requests or spec.requests_per_batch
    if chunk < 1:
        raise SpecError(f"chunk_requests={chunk} must be >= 1")
    seed = spec.seed if seed is None else seed
    if seed < 0:
        raise SpecError(f"seed={seed} must be >= 0")
    pending: list[dict[str, np.ndarray]] = []
    pending_n = 0
    produced = 0
    block = 0
    while produced < n_requests:
        while pending_n < min(chunk, n_requests - produced):
            n = min(BLOCK, n_requests - block * BLOCK)
            pending.append(_block(spec, seed, block, n))
            pending_n += n
            block += 1
        merged = _concat(pending)
        take = min(chunk, n_requests - produced)
        yield _to_batch(_slice(merged, 0, take) if take < pending_n else merged, device)
        produced += take
        if take < pending_n:
            pending, pending_n = [_slice(merged, take, pending_n)], pending_n - take
        else:
            pending, pending_n = [], 0


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
