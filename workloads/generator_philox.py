"""The bulk of a torch-made RequestBatch from a counter-based generator (Philox4x32-10).

workloads.generator_torch draws the per-request counts (impressions, history lengths, pooling
lengths) with a `torch.Generator`, reads the sizes back once, then hands the rest here: every
history event, impression and sparse id is a pure function of (key, stream, position), so one
kernel can write several fields of a row with nothing drawn in order. Two implementations, the
same bytes: `fill(..., impl="triton")` (workloads.generator_kernel: three kernels per batch, each
field written once) and `impl="torch"` (plain PyTorch, any device: the reference; Philox in int64
arithmetic, slow but exact).

The draws, per value (w0..w3 are the four 32-bit words of Philox at the value's counter):
- history event: item id by numpy's 4096-knot Zipf table from w0, action type (w1 * A) >> 32, time
  gap from numpy's exponential quantile table at the top 12 bits of w2. Each event's gap separates
  it from the next event (the last: from the request), so timestamps are the request's time minus
  a suffix sum of gaps: ascending, the last event one gap before the request, gaps i.i.d. as numpy's.
- dense feature: numpy's 2^16-level normal quantile table at the top 16 bits of w0.
- label of task t: (w0 >> 8) < ceil(rate_t * 2^24), i.e. a 24-bit uniform below the fp32 rate.
- sparse id: Zipf as above from w0, or uniform floor((w0 * 2^32 + w1) * C / 2^64).
Counters are `position | stream << 40` (positions below 2^40); the key is a 64-bit mix of the seed,
so these streams never coincide with the torch.Generator's that drew the counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from workloads.errors import SpecError
from workloads.generator import _MAX_TABLE_CARD, _gap_table, _normal_table, _zipf_table
from workloads.spec import SparseGroup

STREAMS = {
    "history": 1,
    "item_id": 2,
    "item_dense": 3,
    "labels": 4,
    "user_dense": 5,
    "user_sparse": 6,
    "item_sparse": 7,
}
_MAX_POSITION = 1 << 40
_M32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ZIPF_ROWS = 4096


def philox_key(seed: int) -> int:
    """A 63-bit key from the seed (splitmix64's finalizer): unrelated to torch.Generator's key."""
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def supported(cardinalities: list[int]) -> bool:
    """Whether every id space fits the fixed-point draws (as numpy's table: below 2^31)."""
    return all(c <= _MAX_TABLE_CARD for c in cardinalities)


# --- Philox4x32-10 in int64 torch arithmetic (words held as non-negative int64 < 2^32) -------------
def _mul32(x: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of x * m for x, m < 2^32, with no product above 2^48."""
    xh, xl = x >> 16, x & 0xFFFF
    a, b = xh * m, xl * m
    hi = (a + (b >> 16)) >> 16
    lo = (((a & 0xFFFF) << 16) + b) & _M32
    return hi, lo


def philox_torch(key: int, offset: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 at counters (offset low, offset high, 0, 0), key (key low, key high): four
    int64 tensors of 32-bit words, equal to Triton's `tl.randint4x(key, offset)` bit for bit."""
    c0, c1 = offset & _M32, (offset >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0, k1 = key & _M32, (key >> 32) & _M32
    for _ in range(10):
        hi_b, lo_b = _mul32(c2, _ROUND_B)
        hi_a, lo_a = _mul32(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _M32, (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


# --- the per-batch plan: constant tables on the device plus this batch's offsets -------------------
@dataclass(frozen=True)
class KeyedParams:
    """Per feature of a keyed collection: rule (0 uniform, 1 Zipf), id space, Zipf knots."""

    n_feat: int
    kinds: torch.Tensor  # int64 [F]
    cards: torch.Tensor  # int64 [F]
    tables: torch.Tensor  # int64 [F * 4096, 2] (zeros for uniform features)


@dataclass
class Plan:
    key: int
    h_off: torch.Tensor  # int64 [R + 1]: history offsets
    zipf_table: torch.Tensor  # the history item table (history events and candidate items)
    gap_table: torch.Tensor
    normal_table: torch.Tensor
    thresholds: torch.Tensor  # int64 [T]: label thresholds on 24-bit uniforms
    n_actions: int
    t0: int
    user_dense: int
    item_dense: int
    n_tasks: int
    streams: dict


@lru_cache(maxsize=64)
def _zipf_on(cardinality: int, a: float, device: str) -> torch.Tensor:
    """numpy's fixed-point knots as one [4096, 2] int64 table (X_j << 20, D_j) on a device."""
    xs20, ds = _zipf_table(cardinality, a)
    return torch.stack([torch.from_numpy(xs20), torch.from_numpy(ds)], 1).to(device)


@lru_cache(maxsize=16)
def _gaps_on(mean_gap_s: float, device: str) -> torch.Tensor:
    return torch.from_numpy(_gap_table(mean_gap_s)).to(device)


@lru_cache(maxsize=4)
def _normals_on(device: str) -> torch.Tensor:
    return torch.from_numpy(_normal_table()).to(device)


@lru_cache(maxsize=16)
def _thresholds_on(rates: tuple[float, ...], device: str) -> torch.Tensor:
    """ceil(rate * 2^24) of each fp32 rate: (w >> 8) < it exactly when (w >> 8) / 2^24 < rate."""
    r32 = torch.tensor(rates, dtype=torch.float32).to(torch.float64)
    return torch.ceil(r32 * (1 << 24)).to(torch.int64).to(device)


@lru_cache(maxsize=64)
def keyed_params(groups: tuple[SparseGroup, ...], device: str) -> KeyedParams:
    feats = [g for g in groups for _ in range(g.count)]
    zeros = torch.zeros((_ZIPF_ROWS, 2), dtype=torch.int64)
    tabs = [_zipf_on(g.cardinality, g.zipf_a, "cpu") if g.popularity == "zipf" else zeros for g in feats]
    return KeyedParams(
        n_feat=len(feats),
        kinds=torch.tensor([int(g.popularity == "zipf") for g in feats], dtype=torch.int64).to(device),
        cards=torch.tensor([g.cardinality for g in feats], dtype=torch.int64).to(device),
        tables=(torch.cat(tabs) if tabs else zeros).to(device),
    )


def make_plan(spec, seed: int, h_off: torch.Tensor, t0: int) -> Plan:
    dev = str(h_off.device)
    h = spec.history
    return Plan(
        key=philox_key(seed),
        h_off=h_off,
        zipf_table=_zipf_on(int(h.item_cardinality), float(h.zipf_a), dev),
        gap_table=_gaps_on(float(h.mean_gap_s), dev),
        normal_table=_normals_on(dev),
        thresholds=_thresholds_on(tuple(t.base_rate for t in spec.tasks), dev),
        n_actions=int(h.action_types),
        t0=t0,
        user_dense=spec.user_dense,
        item_dense=spec.item_dense,
        n_tasks=spec.n_tasks,
        streams=STREAMS,
    )


# --- the torch reference of each kernel ------------------------------------------------------------
def _words(key: int, n: int, stream: int, dev) -> tuple[torch.Tensor, ...]:
    return philox_torch(key, torch.arange(n, dtype=torch.int64, device=dev) | (stream << 40))


def _zipf_words(w: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    j = w >> 20
    return (table[j, 0] + table[j, 1] * (w & 0xFFFFF)) >> 32


def _request_fields_torch(p: Plan, out: dict) -> None:
    r = out["request_id"].numel()
    dev = p.h_off.device
    rid = torch.arange(r, dtype=torch.int64, device=dev)
    out["request_id"].copy_(rid)
    out["timestamp"].copy_(rid + p.t0)
    w = _words(p.key, r * p.user_dense, p.streams["user_dense"], dev)[0]
    out["user_dense"].view(-1).copy_(p.normal_table[w >> 16])
    n = out["history_item_ids"].numel()
    w0, w1, w2, _ = _words(p.key, n, p.streams["history"], dev)
    out["history_item_ids"].copy_(_zipf_words(w0, p.zipf_table))
    out["history_actions"].copy_((w1 * p.n_actions) >> 32)
    pre = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    torch.cumsum(p.gap_table[w2 >> 20], 0, out=pre[1:])
    # event p of request r: ts_r - (gaps from p to the request's end) = ts_r - pre[end_r] + pre[p]
    base = rid + p.t0 - pre[p.h_off[1:]]
    lengths = p.h_off[1:] - p.h_off[:-1]
    out["history_timestamps"].copy_(torch.repeat_interleave(base, lengths, output_size=n) + pre[:-1])


def _impression_fields_torch(p: Plan, out: dict) -> None:
    n = out["item_id"].numel()
    dev = p.h_off.device
    out["item_id"].copy_(_zipf_words(_words(p.key, n, p.streams["item_id"], dev)[0], p.zipf_table))
    w = _words(p.key, n * p.item_dense, p.streams["item_dense"], dev)[0]
    out["item_dense"].view(-1).copy_(p.normal_table[w >> 16])
    w = _words(p.key, n * p.n_tasks, p.streams["labels"], dev)[0].view(n, p.n_tasks)
    out["labels"].copy_(((w >> 8) < p.thresholds).to(torch.float32))


def _keyed_values_torch(key: int, kp: KeyedParams, starts: torch.Tensor, out: torch.Tensor, stream: int) -> None:
    n = out.numel()
    w0, w1, _, _ = _words(key, n, stream, out.device)
    v = torch.arange(n, dtype=torch.int64, device=out.device)
    f = torch.searchsorted(starts[1 : kp.n_feat].contiguous(), v, right=True)
    card = kp.cards[f]
    uniform = (w0 * card + ((w1 * card) >> 32)) >> 32
    j = f * _ZIPF_ROWS + (w0 >> 20)
    zipf = (kp.tables[j, 0] + kp.tables[j, 1] * (w0 & 0xFFFFF)) >> 32
    out.copy_(torch.where(kp.kinds[f] == 1, zipf, uniform))


# --- the entry point ---------------------------------------------------------------------------------
IMPLS = ("triton", "torch")


def fill(spec, seed: int, sizes: dict, lengths: dict, t0: int, impl: str) -> dict[str, torch.Tensor]:
    """Every field but the counts, as `generate_on` assembles them (module docstring).

    `sizes`: host ints `requests`, `impressions`, `history`, `user_values`, `item_values`;
    `lengths`: device tensors `h_off` [R + 1], `user_starts` [Fu + 1], `item_starts` [Fi + 1] (the
    features' value offsets)."""
    if impl not in IMPLS:
        raise SpecError(f"impl={impl!r}; allowed: {', '.join(IMPLS)}")
    if max(sizes.values()) * max(1, spec.user_dense, spec.item_dense, spec.n_tasks) >= _MAX_POSITION:
        raise SpecError(f"a batch of {sizes} is too large for one counter stream; make smaller batches")
    h_off = lengths["h_off"]
    dev = h_off.device
    r, n, h = sizes["requests"], sizes["impressions"], sizes["history"]
    i64, f32 = torch.int64, torch.float32
    out = {
        "request_id": torch.empty(r, dtype=i64, device=dev),
        "timestamp": torch.empty(r, dtype=i64, device=dev),
        "user_dense": torch.empty((r, spec.user_dense), dtype=f32, device=dev),
        "user_sparse_values": torch.empty(sizes["user_values"], dtype=i64, device=dev),
        "history_item_ids": torch.empty(h, dtype=i64, device=dev),
        "history_actions": torch.empty(h, dtype=i64, device=dev),
        "history_timestamps": torch.empty(h, dtype=i64, device=dev),
        "item_id": torch.empty(n, dtype=i64, device=dev),
        "item_sparse_values": torch.empty(sizes["item_values"], dtype=i64, device=dev),
        "item_dense": torch.empty((n, spec.item_dense), dtype=f32, device=dev),
        "labels": torch.empty((n, spec.n_tasks), dtype=f32, device=dev),
    }
    p = make_plan(spec, seed, h_off, t0)
    users = keyed_params(tuple(g for g in spec.user_sparse if g.count), str(dev))
    items = keyed_params(tuple(g for g in spec.item_sparse if g.count), str(dev))
    if impl == "triton":
        from workloads import generator_kernel as k

        k.request_fields(p, out)
        k.impression_fields(p, out)
        keyed = k.keyed_values
    else:
        _request_fields_torch(p, out)
        _impression_fields_torch(p, out)
        keyed = _keyed_values_torch
    keyed(p.key, users, lengths["user_starts"], out["user_sparse_values"], STREAMS["user_sparse"])
    keyed(p.key, items, lengths["item_starts"], out["item_sparse_values"], STREAMS["item_sparse"])
    return out


__all__ = ["IMPLS", "STREAMS", "fill", "philox_key", "philox_torch", "supported"]
