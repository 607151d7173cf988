"""Triton: the pooled embedding-bag forward, parallel over positions rather than bags.

`bag_pool(weight, ids, offsets, bag, mode)` = F.embedding_bag(ids, weight, offsets, mode=mode,
include_last_offset=True) for mode "sum" / "mean" (an empty bag pools to 0), summed in fp32 and
cast once to the weight's dtype, as ATen does. The reference is F.embedding_bag itself;
tests/test_bag_pool.py compares the two.

Why: ATen's CUDA forward (EmbeddingBag_updateOutputKernel_sum_mean) gives each (bag, column) one
thread that walks the bag's ids serially. A ROO batch has few bags of ~1000 history ids each, so
most SMs idle and the lookup is latency-bound, far above its byte floor. Here a program takes
BLOCK consecutive positions (one BLOCK_D column slice), gathers their weight rows in fp32 and
reduces each run of equal bags with a segmented scan in registers (segment_sum's `_seg_combine`),
so the work spreads over nnz / BLOCK programs whatever the bag sizes.

Each run end is one of three kinds, told apart by its bag's offsets:
- the run starts and ends in the block: the whole bag; its mean is taken and it is cast and stored
  in `out` at once (the common case for short bags);
- the run starts in the block and goes on past it: its partial sum goes to `tail[block]`;
- the run started in an earlier block: its partial sum goes to `head[block]`.
A second kernel finishes each bag that crosses a block boundary: the program of the block where it
starts adds `tail[start]` and the `head`s of the blocks after it up to the bag's last, in block
order, then takes the mean, casts and stores. No atomics, so the result is deterministic, and every
non-empty bag is written once in the weight's dtype. Empty bags keep the zeros `out` starts with.
No host sync: every size comes from nnz and bags (the tensors' shapes).

`bag` (the bag of each position) must be non-decreasing and agree with `offsets` (bag b holds the
positions offsets[b]..offsets[b+1]-1), as roo_ref.jagged's `row_index` of the lengths gives; the
kernel cannot check that without a host sync.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from roo_ref.kernels import interpreting
from roo_ref.kernels.segment_sum import _round_to, _seg_combine

WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)
MODES = ("sum", "mean")
# (BLOCK positions, BLOCK_D columns, num_warps): a [BLOCK, BLOCK_D] fp32 tile and its int32 bag
# numbers stay in registers at 4 warps, as in segment_sum; the scan also stages both in shared
# memory (8 bytes an element), so BLOCK x BLOCK_D beyond 256 x 64 does not fit an H100 block.
# 64 x 64 at 2 warps: the smallest tile keeps the most blocks resident per SM, which is what a
# gather-bound kernel needs (the fastest of benchmarks/bag_pool.py's configs on an H100 at 1k-id bags).
DEFAULT_CONFIG = (64, 64, 2)
# heads the finishing kernel adds per step of its loop over a long bag's blocks
_CHUNK = 16


@triton.jit
def _pool_kernel(
    weight_ptr,
    ids_ptr,
    offsets_ptr,
    bag_ptr,
    out_ptr,
    head_ptr,
    tail_ptr,
    nnz,
    dim,
    stride_w,
    MEAN: tl.constexpr,
    RNE_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    blk = tl.program_id(0)
    lane = tl.arange(0, BLOCK)
    lo = blk * BLOCK
    pos = lo + lane
    inb = pos < nnz
    b = tl.load(bag_ptr + pos, mask=inb, other=-1)
    nxt = tl.load(bag_ptr + pos + 1, mask=pos + 1 < nnz, other=-1)
    row = tl.load(ids_ptr + pos, mask=inb, other=0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < dim
    m2 = inb[:, None] & cmask[None, :]
    w = tl.load(weight_ptr + row.to(tl.int64)[:, None] * stride_w + cols[None, :], mask=m2, other=0.0)
    b2 = tl.broadcast_to(b.to(tl.int32)[:, None], (BLOCK, BLOCK_D))
    _, run = tl.associative_scan((b2, w.to(tl.float32)), 0, _seg_combine)
    is_end = inb & ((nxt != b) | (lane == BLOCK - 1))
    start = tl.load(offsets_ptr + b, mask=is_end, other=0)
    stop = tl.load(offsets_ptr + b + 1, mask=is_end, other=0)
    starts_here = start >= lo
    whole = is_end & starts_here & (stop <= lo + BLOCK)
    pooled = run
    if MEAN:  # as ATen: the fp32 sum divided (correctly rounded) by the length, then cast
        pooled = tl.div_rn(run, tl.maximum(stop - start, 1).to(tl.float32)[:, None])
    dst = out_ptr + b.to(tl.int64)[:, None] * dim + cols[None, :]
    tl.store(dst, _round_to(pooled, out_ptr.dtype.element_ty, RNE_BF16), mask=whole[:, None] & cmask[None, :])
    # at most one run of the block goes on past it (its last) and one started earlier (its first)
    part = blk.to(tl.int64) * dim + cols[None, :] + 0 * pos[:, None]
    tl.store(tail_ptr + part, run, mask=(is_end & starts_here & ~whole)[:, None] & cmask[None, :])
    tl.store(head_ptr + part, run, mask=(is_end & ~starts_here)[:, None] & cmask[None, :])


@triton.jit
def _finish_kernel(
    offsets_ptr,
    bag_ptr,
    out_ptr,
    head_ptr,
    tail_ptr,
    dim,
    MEAN: tl.constexpr,
    RNE_BF16: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
    CHUNK: tl.constexpr,
):
    # launched for every block but the last: only those can start a bag that crosses a boundary
    blk = tl.program_id(0)
    lo = blk * BLOCK
    b = tl.load(bag_ptr + lo + BLOCK - 1)
    start = tl.load(offsets_ptr + b)
    stop = tl.load(offsets_ptr + b + 1)
    if (start >= lo) & (stop > lo + BLOCK):
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < dim
        acc = tl.load(tail_ptr + blk.to(tl.int64) * dim + cols, mask=cmask, other=0.0)
        last = (stop - 1) // BLOCK
        for c0 in range(blk + 1, last + 1, CHUNK):
            c = c0 + tl.arange(0, CHUNK)
            m = (c <= last)[:, None] & cmask[None, :]
            acc += tl.sum(tl.load(head_ptr + c.to(tl.int64)[:, None] * dim + cols[None, :], mask=m, other=0.0), 0)
        if MEAN:
            acc = tl.div_rn(acc, (stop - start).to(tl.float32))
        tl.store(out_ptr + b.to(tl.int64) * dim + cols, _round_to(acc, out_ptr.dtype.element_ty, RNE_BF16), mask=cmask)


def _check(weight, ids, offsets, bag, mode) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")
    if weight.dim() != 2 or (weight.shape[1] > 1 and weight.stride(1) != 1):
        raise ValueError(f"weight must be [rows, dim] with unit column stride, got shape {tuple(weight.shape)}")
    if weight.dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype {weight.dtype}; allowed: {', '.join(map(str, WEIGHT_DTYPES))}")
    for name, t in (("ids", ids), ("offsets", offsets), ("bag", bag)):
        if t.dim() != 1 or t.dtype not in INDEX_DTYPES:
            raise ValueError(f"{name} must be 1-D int32/int64, got {t.dtype} of shape {tuple(t.shape)}")
        if t.device != weight.device:
            raise ValueError(f"{name} is on {t.device}, the weight on {weight.device}")
    if offsets.numel() == 0:
        raise ValueError("offsets needs bags + 1 entries (include_last_offset), got none")
    if bag.numel() != ids.numel():
        raise ValueError(f"bag has {bag.numel()} entries for {ids.numel()} ids")
    if ids.numel() >= 2**31 - 2**16:
        raise ValueError(f"{ids.numel()} ids: positions are int32 in the kernel, at most 2^31 - 2^16")


def bag_pool(
    weight: torch.Tensor,
    ids: torch.Tensor,
    offsets: torch.Tensor,
    bag: torch.Tensor,
    mode: str = "sum",
    config: tuple[int, int, int] = DEFAULT_CONFIG,
) -> torch.Tensor:
    """[bags, dim] in weight's dtype, bags = offsets.numel() - 1: F.embedding_bag(ids, weight,
    offsets, mode=mode, include_last_offset=True), with bag[p] the bag of position p."""
    _check(weight, ids, offsets, bag, mode)
    ids, offsets, bag = ids.contiguous(), offsets.contiguous(), bag.contiguous()  # the kernels step by 1
    nnz, dim, bags = ids.numel(), weight.shape[1], offsets.numel() - 1
    out = torch.zeros((bags, dim), dtype=weight.dtype, device=weight.device)
    if nnz == 0 or dim == 0 or bags == 0:
        return out
    block, block_d, warps = config
    block_d = min(block_d, triton.next_power_of_2(dim))
    n_blocks, n_cols = triton.cdiv(nnz, block), triton.cdiv(dim, block_d)
    head = torch.empty((n_blocks, dim), dtype=torch.float32, device=weight.device)
    tail = torch.empty((n_blocks, dim), dtype=torch.float32, device=weight.device)
    mean = mode == "mean"
    rne = weight.dtype == torch.bfloat16 and interpreting()
    _pool_kernel[(n_blocks, n_cols)](
        weight,
        ids,
        offsets,
        bag,
        out,
        head,
        tail,
        nnz,
        dim,
        weight.stride(0),
        MEAN=mean,
        RNE_BF16=rne,
        BLOCK=block,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    if n_blocks > 1:
        _finish_kernel[(n_blocks - 1, n_cols)](
            offsets, bag, out, head, tail, dim, MEAN=mean, RNE_BF16=rne, BLOCK=block, BLOCK_D=block_d, CHUNK=_CHUNK
        )
    return out
