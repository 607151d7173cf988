"""Triton kernels of the counter-based generator (workloads.generator_philox's "triton" backend).

Every value is a pure function of (key, stream, position): Philox4x32-10 (`tl.randint4x`) at
counter offset `position | stream << 40` gives four 32-bit words, so no program depends on another
and each field is written once, straight from registers. Three kernels make a batch's bulk:

- `_request_kernel`, one program per request: request id, timestamp, user dense features, and the
  request's history (item ids, action types, timestamps). The timestamps are a suffix sum of the
  gaps inside the request, so the program walks its events from the last block to the first,
  carrying the sum of the gaps after the block.
- `_impression_kernel`, a tile of impression rows per program: item id, item dense, labels.
- `_keyed_kernel`, a tile of keyed-jagged values per program: the feature of a value is found from
  the features' value offsets, then its id is drawn by that feature's rule (uniform or Zipf).

The plain-PyTorch reference of each kernel, bit for bit, is in workloads.generator_philox.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_HIST_BLOCK = 1024  # history events per step of a request's program
_ROW_BLOCK = 256  # impression rows per program
_VALUE_BLOCK = 1024  # keyed values per program


@triton.jit
def _zipf(w, table):
    """Ids from 32-bit words by numpy's knot table ([4096, 2] int64: X << 20, D) at `table`."""
    b = w.to(tl.int64) & 0xFFFFFFFF
    j = b >> 20
    x = tl.load(table + 2 * j)
    d = tl.load(table + 2 * j + 1)
    return (x + d * (b & 0xFFFFF)) >> 32


@triton.jit
def _normal(w, normal_table):
    """A standard normal from a word's top 16 bits (the 2^16-level quantile table numpy uses)."""
    return tl.load(normal_table + ((w.to(tl.int64) & 0xFFFFFFFF) >> 16))


# A fresh seed per batch is a fresh `key`: Triton would compile a kernel again whenever an integer
# argument changes between divisible-by-16 and not (its default specialization); a data loader's
# batches must not recompile.
@triton.jit(do_not_specialize=["key", "n_actions", "t0"])
def _request_kernel(
    key,
    h_off,
    zipf_table,
    gap_table,
    normal_table,
    h_ids,
    h_act,
    h_ts,
    request_id,
    timestamp,
    user_dense,
    n_actions,
    t0,
    DU: tl.constexpr,
    DU_P2: tl.constexpr,
    S_HIST: tl.constexpr,
    S_DENSE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    t_r = t0 + r
    tl.store(request_id + r, r)
    tl.store(timestamp + r, t_r)
    if DU > 0:
        d = tl.arange(0, DU_P2)
        e = r * DU + d
        # distinct names: Triton types every name once per function, and the loop below reuses none
        wd, _d1, _d2, _d3 = tl.randint4x(key, e | (S_DENSE << 40))
        tl.store(user_dense + e, _normal(wd, normal_table), mask=d < DU)
    start = tl.load(h_off + r)
    length = tl.load(h_off + r + 1) - start
    n_blocks = tl.cdiv(length, BLOCK)
    carry = t_r * 0  # the gaps of the events after the current block
    for jb in range(0, n_blocks):
        i = (n_blocks - 1 - jb) * BLOCK + tl.arange(0, BLOCK)
        m = i < length
        p = start + i
        w0, w1, w2, _w3 = tl.randint4x(key, p | (S_HIST << 40))
        gap = tl.load(gap_table + ((w2.to(tl.int64) & 0xFFFFFFFF) >> 20))
        gap = tl.where(m, gap, 0)
        total = tl.sum(gap, 0)
        suffix = carry + total - tl.cumsum(gap, 0) + gap
        tl.store(h_ids + p, _zipf(w0, zipf_table), mask=m)
        tl.store(h_act + p, ((w1.to(tl.int64) & 0xFFFFFFFF) * n_actions) >> 32, mask=m)
        tl.store(h_ts + p, t_r - suffix, mask=m)
        carry += total


@triton.jit(do_not_specialize=["key", "n"])
def _impression_kernel(
    key,
    zipf_table,
    normal_table,
    thresholds,
    item_id,
    item_dense,
    labels,
    n,
    DI: tl.constexpr,
    DI_P2: tl.constexpr,
    T: tl.constexpr,
    T_P2: tl.constexpr,
    S_ID: tl.constexpr,
    S_DENSE: tl.constexpr,
    S_LABEL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    wi, _i1, _i2, _i3 = tl.randint4x(key, i | (S_ID << 40))
    tl.store(item_id + i, _zipf(wi, zipf_table), mask=m)
    if DI > 0:
        d = tl.arange(0, DI_P2)
        e = i[:, None] * DI + d[None, :]
        wd, _d1, _d2, _d3 = tl.randint4x(key, e | (S_DENSE << 40))
        tl.store(item_dense + e, _normal(wd, normal_table), mask=m[:, None] & (d[None, :] < DI))
    t = tl.arange(0, T_P2)
    e = i[:, None] * T + t[None, :]
    wl, _l1, _l2, _l3 = tl.randint4x(key, e | (S_LABEL << 40))
    thr = tl.load(thresholds + t, mask=t < T, other=0)
    hit = ((wl.to(tl.int64) & 0xFFFFFFFF) >> 8) < thr[None, :]
    tl.store(labels + e, hit.to(tl.float32), mask=m[:, None] & (t[None, :] < T))


@triton.jit(do_not_specialize=["key", "n", "n_feat"])
def _keyed_kernel(key, starts, kinds, cards, tables, out, n, n_feat, STREAM: tl.constexpr, BLOCK: tl.constexpr):
    v = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = v < n
    f = tl.zeros([BLOCK], dtype=tl.int64)
    for i in range(1, n_feat):
        f += (v >= tl.load(starts + i)).to(tl.int64)
    card = tl.load(cards + f, mask=m, other=1)
    w0, w1, _w2, _w3 = tl.randint4x(key, v | (STREAM << 40))
    hi = w0.to(tl.int64) & 0xFFFFFFFF
    lo = w1.to(tl.int64) & 0xFFFFFFFF
    uniform = (hi * card + ((lo * card) >> 32)) >> 32  # floor(u64 * card / 2^64)
    zipf = _zipf(w0, tables + f * 8192)
    ids = tl.where(tl.load(kinds + f, mask=m, other=0) == 1, zipf, uniform)
    tl.store(out + v, ids, mask=m)


def request_fields(p, out: dict) -> None:
    """Writes request_id, timestamp, user_dense and the history fields of `out` (plan `p`)."""
    r = out["request_id"].numel()
    du = p.user_dense
    _request_kernel[(r,)](
        p.key,
        p.h_off,
        p.zipf_table,
        p.gap_table,
        p.normal_table,
        out["history_item_ids"],
        out["history_actions"],
        out["history_timestamps"],
        out["request_id"],
        out["timestamp"],
        out["user_dense"],
        p.n_actions,
        p.t0,
        DU=du,
        DU_P2=triton.next_power_of_2(max(du, 1)),
        S_HIST=p.streams["history"],
        S_DENSE=p.streams["user_dense"],
        BLOCK=_HIST_BLOCK,
        num_warps=8,
    )


def impression_fields(p, out: dict) -> None:
    """Writes item_id, item_dense and labels of `out` (plan `p`)."""
    n = out["item_id"].numel()
    if n == 0:
        return
    di, t = p.item_dense, p.n_tasks
    _impression_kernel[(triton.cdiv(n, _ROW_BLOCK),)](
        p.key,
        p.zipf_table,
        p.normal_table,
        p.thresholds,
        out["item_id"],
        out["item_dense"],
        out["labels"],
        n,
        DI=di,
        DI_P2=triton.next_power_of_2(max(di, 1)),
        T=t,
        T_P2=triton.next_power_of_2(max(t, 1)),
        S_ID=p.streams["item_id"],
        S_DENSE=p.streams["item_dense"],
        S_LABEL=p.streams["labels"],
        BLOCK=_ROW_BLOCK,
        num_warps=4,
    )


def keyed_values(key: int, kp, starts: torch.Tensor, out: torch.Tensor, stream: int) -> None:
    """Writes the keyed values `out` (features' value offsets `starts`, feature table `kp`)."""
    n = out.numel()
    if n == 0:
        return
    _keyed_kernel[(triton.cdiv(n, _VALUE_BLOCK),)](
        key, starts, kp.kinds, kp.cards, kp.tables, out, n, kp.n_feat, STREAM=stream, BLOCK=_VALUE_BLOCK, num_warps=4
    )
