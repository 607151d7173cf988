"""The Triton kernel of workloads.expand's "triton" backend (imported only when it is used).

A program copies a tile of ROWS output rows x BLOCK values, looping over the longest row of its
tile. Output row q (of F x N, feature-major) reads source row (q // N) * n_src + index[q % N], so
keyed tensors need no flattened index. Up to three value tensors share one pass over the offsets.
BLOCK follows the mean row length (a power of two in [4, 512]) and ROWS makes a tile ~1k values,
so both long histories and short pooled-id rows keep the lanes busy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_MAX_ARRAYS = 3


@triton.jit
def _gather_kernel(
    index,
    src_offsets,
    out_offsets,
    out_lengths,
    n_rows,
    n_cols,
    n_src,
    a_in,
    a_out,
    b_in,
    b_out,
    c_in,
    c_out,
    N_ARRAYS: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    live = rows < n_rows
    src_row = (rows // n_cols) * n_src + tl.load(index + rows % n_cols, mask=live, other=0)
    start = tl.load(src_offsets + src_row, mask=live, other=0)
    dst = tl.load(out_offsets + rows, mask=live, other=0)
    length = tl.load(out_lengths + rows, mask=live, other=0)
    cols = tl.arange(0, BLOCK)
    for j in range(0, tl.max(length, axis=0), BLOCK):
        c = j + cols
        m = c[None, :] < length[:, None]
        s = start[:, None] + c[None, :]
        d = dst[:, None] + c[None, :]
        tl.store(a_out + d, tl.load(a_in + s, mask=m), mask=m)
        if N_ARRAYS > 1:
            tl.store(b_out + d, tl.load(b_in + s, mask=m), mask=m)
        if N_ARRAYS > 2:
            tl.store(c_out + d, tl.load(c_in + s, mask=m), mask=m)


def gather(values, src_offsets, out_offsets, out_lengths, index, n_src: int, total: int) -> list[torch.Tensor]:
    """See workloads.expand.gather_rows (this is its "triton" backend)."""
    n_feat, n_cols = out_lengths.shape
    n_rows = n_feat * n_cols
    mean = max(1, total // n_rows)
    block = min(512, max(4, triton.next_power_of_2(mean)))
    rows_per = max(1, 1024 // block)
    values = [v.contiguous() for v in values]  # the kernel indexes flat, dense storage
    index = index.contiguous()
    outs = [torch.empty(total, dtype=v.dtype, device=v.device) for v in values]
    grid = (triton.cdiv(n_rows, rows_per),)
    flat_lengths = out_lengths.reshape(-1)
    for g in range(0, len(values), _MAX_ARRAYS):
        ins, dst = list(values[g : g + _MAX_ARRAYS]), outs[g : g + _MAX_ARRAYS]
        n = len(ins)
        ins += [ins[0]] * (_MAX_ARRAYS - n)  # unused slots: never touched (N_ARRAYS is a constant)
        dst += [dst[0]] * (_MAX_ARRAYS - n)
        _gather_kernel[grid](
            index,
            src_offsets,
            out_offsets,
            flat_lengths,
            n_rows,
            n_cols,
            n_src,
            ins[0],
            dst[0],
            ins[1],
            dst[1],
            ins[2],
            dst[2],
            N_ARRAYS=n,
            ROWS=rows_per,
            BLOCK=block,
            num_warps=4,
        )
    return outs
