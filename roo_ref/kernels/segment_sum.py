"""Triton: an embedding table's gradient rows summed per distinct id without atomic contention, and
the row-wise Adagrad / SGD update of the distinct rows from those sums.

The plain-PyTorch reference is roo_ref.sparse_optim (`segment_sum_reference`, the torch branch of
`rowwise_adagrad_update` / `sgd_update`); tests/test_segment_sum.py compares the two.

Input: the ids sorted (`perm` from torch.sort: sorted position p holds id number perm[p]) and `seg`,
the segment (distinct id) number of each sorted position, 0..u-1, non-decreasing. The gradient row
of id number i is grad[src[i]] * scale[src[i]] (src None: grad[i]; scale None: 1): for a bag
lookup grad is the pooled output's gradient [bags, dim] and src the bag of each id, so the [nnz,
dim] per-id rows are never materialized; each is read once from `grad` (small enough to stay in L2).

`segment_sum`: out[s] = the fp32 sum of segment s's rows, for s < u (rows past u are left unwritten
unless `zero_tail`), and uniq[s] = its id. Why not `index_add_`: ATen's index_add_ adds every row
with a float atomic at its destination, and an impression-layout batch repeats each user's history
k times and a popular item thousands of times, so those atomics hit the same addresses and
serialize. Here a program takes BLOCK consecutive sorted positions (one BLOCK_D column slice),
reduces each run of equal segments with a segmented scan in registers and stores the run's sum
once. A run that started in an earlier block stores its partial sum in `carry[block]` instead; a
second kernel adds each block's carry to its run with one atomic per (block, column): a run
spanning m blocks costs m - 1 atomics per column, never one per id. No host sync: every size comes
from nnz, and u is read on the device from seg[nnz - 1].

`apply_update`: for each slot s < u (one program per BLOCK_R slots, whole rows), with g = out[s]
and r = uniq[s]: Adagrad state[r] += mean(g^2); weight[r] += (-lr * g / (sqrt(state[r]) + eps)) in
the weight's dtype (SGD: weight[r] += -lr * g). Distinct slots are distinct rows, so plain stores
suffice; programs past u return at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from roo_ref.kernels import interpreting
from roo_ref.kernels.profiling import kernel_range

GRAD_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (BLOCK positions, BLOCK_D columns, num_warps) of the segmented sum; a [BLOCK, BLOCK_D] fp32 tile
# plus its int32 segment numbers stays in registers at 4 warps.
DEFAULT_CONFIG = (128, 64, 4)


@triton.jit
def _seg_combine(seg_a, val_a, seg_b, val_b):
    # the running sum restarts where the segment changes (positions are sorted by segment)
    return seg_b, tl.where(seg_a == seg_b, val_a + val_b, val_b)


@triton.jit
def _segment_sum_kernel(
    grad_ptr,
    src_ptr,
    scale_ptr,
    perm_ptr,
    seg_ptr,
    sorted_ptr,
    out_ptr,
    carry_ptr,
    uniq_ptr,
    nnz,
    dim,
    stride_g,
    HAS_SRC: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ZERO_TAIL: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    blk = tl.program_id(0)
    col_blk = tl.program_id(1)
    pos = blk * BLOCK + tl.arange(0, BLOCK)
    inb = pos < nnz
    seg = tl.load(seg_ptr + pos, mask=inb, other=-1)
    nxt = tl.load(seg_ptr + pos + 1, mask=pos + 1 < nnz, other=-1)
    prev = tl.load(seg_ptr + blk * BLOCK - 1, mask=blk > 0, other=-1)  # the run the block continues
    idx = tl.load(perm_ptr + pos, mask=inb, other=0)
    if HAS_SRC:
        idx = tl.load(src_ptr + idx, mask=inb, other=0)
    cols = col_blk * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < dim
    m2 = inb[:, None] & cmask[None, :]
    g = tl.load(grad_ptr + idx.to(tl.int64)[:, None] * stride_g + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    if HAS_SCALE:
        g = g * tl.load(scale_ptr + idx, mask=inb, other=0.0).to(tl.float32)[:, None]
    seg2 = tl.broadcast_to(seg.to(tl.int32)[:, None], (BLOCK, BLOCK_D))
    _, run = tl.associative_scan((seg2, g), 0, _seg_combine)
    is_end = inb & ((nxt != seg) | (tl.arange(0, BLOCK) == BLOCK - 1))
    own = is_end & (seg != prev)  # the end of a run that starts in this block: its only writer
    cont = is_end & (seg == prev)  # the end of the run the block continues
    dst = seg.to(tl.int64)[:, None] * dim + cols[None, :]
    tl.store(out_ptr + dst, run, mask=own[:, None] & cmask[None, :])
    carry = carry_ptr + blk.to(tl.int64) * dim + cols[None, :] + 0 * pos[:, None]
    tl.store(carry, run, mask=cont[:, None] & cmask[None, :])
    if col_blk == 0:
        sid = tl.load(sorted_ptr + pos, mask=own, other=0)
        tl.store(uniq_ptr + seg, sid, mask=own)
    if ZERO_TAIL:
        # slots past u are never a run's destination (slot <= position), so this block may zero
        # those among its own positions without racing any store
        u = tl.load(seg_ptr + nnz - 1) + 1
        tail = inb & (pos >= u)
        zeros = tl.zeros((BLOCK, BLOCK_D), dtype=tl.float32)
        tl.store(out_ptr + pos.to(tl.int64)[:, None] * dim + cols[None, :], zeros, mask=tail[:, None] & cmask[None, :])
        if col_blk == 0:
            tl.store(uniq_ptr + pos, tl.zeros((BLOCK,), dtype=tl.int64), mask=tail)


@triton.jit
def _carry_kernel(seg_ptr, carry_ptr, out_ptr, dim, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    blk = tl.program_id(0) + 1  # block 0 continues no run
    first = tl.load(seg_ptr + blk * BLOCK)
    prev = tl.load(seg_ptr + blk * BLOCK - 1)
    if first == prev:
        cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < dim
        part = tl.load(carry_ptr + blk.to(tl.int64) * dim + cols, mask=cmask, other=0.0)
        tl.atomic_add(out_ptr + first * dim + cols, part, mask=cmask)


def _check(grad, src, scale, perm, seg, sorted_ids) -> int:
    nnz = perm.numel()
    if grad.dim() != 2 or grad.stride(1) != 1:
        raise ValueError(f"grad must be [rows, dim] with unit column stride, got {tuple(grad.shape)}")
    if grad.dtype not in GRAD_DTYPES:
        raise ValueError(f"grad dtype {grad.dtype}; allowed: {', '.join(map(str, GRAD_DTYPES))}")
    if seg.numel() != nnz or sorted_ids.numel() != nnz:
        raise ValueError(f"perm, seg and sorted ids differ in length: {nnz}, {seg.numel()}, {sorted_ids.numel()}")
    if src is None and grad.shape[0] != nnz:
        raise ValueError(f"without src, grad needs one row per id: {grad.shape[0]} rows for {nnz} ids")
    if src is not None and src.numel() != nnz:
        raise ValueError(f"src has {src.numel()} entries for {nnz} ids")
    if scale is not None and scale.numel() != grad.shape[0]:
        raise ValueError(f"scale has {scale.numel()} entries for {grad.shape[0]} gradient rows")
    return nnz


def segment_sum(
    grad: torch.Tensor,
    src: torch.Tensor | None,
    scale: torch.Tensor | None,
    perm: torch.Tensor,
    seg: torch.Tensor,
    sorted_ids: torch.Tensor,
    zero_tail: bool = False,
    config: tuple[int, int, int] = DEFAULT_CONFIG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [nnz, dim] fp32, uniq [nnz] int64): out[s] the sum of segment s's gradient rows and
    uniq[s] its id, for s < u = seg[-1] + 1; past u, zeros with `zero_tail`, else unwritten."""
    nnz = _check(grad, src, scale, perm, seg, sorted_ids)
    dim = grad.shape[1]
    alloc = torch.zeros if zero_tail and nnz == 0 else torch.empty
    out = alloc((nnz, dim), dtype=torch.float32, device=grad.device)
    uniq = alloc((nnz,), dtype=torch.int64, device=grad.device)
    if nnz == 0 or dim == 0:
        return out.zero_() if zero_tail else out, uniq
    carry = torch.empty((triton.cdiv(nnz, config[0]), dim), dtype=torch.float32, device=grad.device)
    with kernel_range("roo::segment_sum"):
        _launch_segment_sum(grad, src, scale, perm, seg, sorted_ids, out, carry, uniq, zero_tail, config)
    return out, uniq


def _launch_segment_sum(grad, src, scale, perm, seg, sorted_ids, out, carry, uniq, zero_tail, config) -> None:
    nnz, dim = perm.numel(), grad.shape[1]
    block, block_d, warps = config
    block_d = min(block_d, triton.next_power_of_2(dim))
    n_blocks, n_cols = triton.cdiv(nnz, block), triton.cdiv(dim, block_d)
    _segment_sum_kernel[(n_blocks, n_cols)](
        grad,
        grad if src is None else src,
        grad if scale is None else scale,
        perm,
        seg,
        sorted_ids,
        out,
        carry,
        uniq,
        nnz,
        dim,
        grad.stride(0),
        HAS_SRC=src is not None,
        HAS_SCALE=scale is not None,
        ZERO_TAIL=zero_tail,
        BLOCK=block,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    if n_blocks > 1:
        _carry_kernel[(n_blocks - 1, n_cols)](seg, carry, out, dim, BLOCK=block, BLOCK_D=block_d, num_warps=1)


@triton.jit
def _round_to(x, dtype: tl.constexpr, RNE_BF16: tl.constexpr):
    """x.to(dtype); with RNE_BF16 (bf16 under the interpreter, whose fp32 -> bf16 cast truncates,
    unlike the GPU's cvt.rn) rounded to nearest even by hand first."""
    if RNE_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _update_kernel(
    out_ptr,
    uniq_ptr,
    seg_ptr,
    weight_ptr,
    state_ptr,
    nnz,
    dim,
    stride_w,
    lr,
    eps,
    ADAGRAD: tl.constexpr,
    RNE_BF16: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    u = tl.load(seg_ptr + nnz - 1) + 1
    first = tl.program_id(0) * BLOCK_R
    if first >= u:
        return
    slot = first + tl.arange(0, BLOCK_R)
    ok = slot < u
    cols = tl.arange(0, BLOCK_D)
    m2 = ok[:, None] & (cols < dim)[None, :]
    g = tl.load(out_ptr + slot.to(tl.int64)[:, None] * dim + cols[None, :], mask=m2, other=0.0)
    row = tl.load(uniq_ptr + slot, mask=ok, other=0)
    step = -lr * g
    if ADAGRAD:
        s = tl.load(state_ptr + row, mask=ok, other=0.0) + tl.sum(g * g, axis=1) / dim
        tl.store(state_ptr + row, s, mask=ok)
        step = tl.div_rn(step, (tl.sqrt_rn(s) + eps)[:, None])
    w_at = weight_ptr + row[:, None] * stride_w + cols[None, :]
    w = tl.load(w_at, mask=m2, other=0.0)
    # as index_add_ of the step cast to the weight's dtype: round the step, then the sum
    new = w.to(tl.float32) + _round_to(step, w.dtype, RNE_BF16).to(tl.float32)
    tl.store(w_at, _round_to(new, w.dtype, RNE_BF16), mask=m2)


def apply_update(
    weight: torch.Tensor,
    state: torch.Tensor | None,
    out: torch.Tensor,
    uniq: torch.Tensor,
    seg: torch.Tensor,
    lr: float,
    eps: float = 0.0,
) -> None:
    """In place on the rows uniq[:u]: row-wise Adagrad (`state` the fp32 per-row accumulator) or,
    with state None, SGD, from the segment sums `out` of `segment_sum`."""
    nnz, dim = out.shape
    if weight.dim() != 2 or weight.stride(1) != 1 or weight.shape[1] != dim:
        raise ValueError(f"weight must be [rows, {dim}] with unit column stride, got {tuple(weight.shape)}")
    if weight.dtype not in GRAD_DTYPES:
        raise ValueError(f"weight dtype {weight.dtype}; allowed: {', '.join(map(str, GRAD_DTYPES))}")
    if state is not None and (state.dtype != torch.float32 or state.shape != weight.shape[:1]):
        raise ValueError(f"state must be fp32 [{weight.shape[0]}], got {state.dtype} {tuple(state.shape)}")
    if nnz == 0 or dim == 0:
        return
    block_d = triton.next_power_of_2(dim)
    block_r = max(1, min(64, 4096 // block_d))
    with kernel_range("roo::rowwise_update"):
        _update_kernel[(triton.cdiv(nnz, block_r),)](
            out,
            uniq,
            seg,
            weight,
            out if state is None else state,
            nnz,
            dim,
            weight.stride(0),
            float(lr),
            float(eps),
            ADAGRAD=state is not None,
            RNE_BF16=weight.dtype == torch.bfloat16 and interpreting(),
            BLOCK_R=block_r,
            BLOCK_D=block_d,
            num_warps=4,
        )
