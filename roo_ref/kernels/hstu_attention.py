"""Triton jagged HSTU attention (forward + backward), target-aware, with optional relative bias.

Computes exactly roo_ref.attention.hstu_attention_torch (see its docstring):
    out_i = 1/N * sum_j silu(alpha <q_i, k_j> + rab(i, j)) * mask(i, j) * v_j
    mask(i, j) = (j <= i) and (j < hist or j == i),  hist = n - num_targets

Layout: q, k [total_tokens, H, d_qk], v [total_tokens, H, d_v], seq_offsets [B+1].

Kernels (all fp32 accumulation; operands of tl.dot in the input dtype):
- forward: one program per (query block, head, sequence). Key blocks are visited in three ranges so
  that fully masked tiles are never touched and fully visible tiles skip the mask arithmetic:
  [0, min(m0, hist)) unmasked; the rest of the history masked; then, for target rows, only the
  diagonal blocks (a target sees the history and itself, never another target). All three ranges
  are one software-pipelined loop with the mask under a per-tile branch.
- backward dk/dv: one program per (key block, head, sequence) - the split over the sequence that the
  public kernel lacks - looping over the query blocks that can see the key block.
- backward dq: either its own kernel (one program per (query block, head, sequence), same ranges as
  the forward: no atomics, recomputes qk and dO v^T) or fp32 atomics from the dk/dv kernel
  (HstuKernelOptions.dq_mode); the benchmark measures both.
- relative-bias gradients: fp32 atomics into the (small) bucket tables from the dk/dv kernel, which
  visits every allowed (i, j) pair exactly once (time buckets summed per tile first:
  HstuKernelOptions.time_grad).
Ragged batches: sequences are sorted by length (descending) on the device and the grid's slowest
axis walks that order, with the heaviest (last, causal) query blocks first in each sequence, so
the longest work starts first and short sequences fill the tail.

silu on bf16 inputs uses tanh.approx.f32 (sigmoid(s) = (1 + tanh(s/2)) / 2, one MUFU op instead of
exp + reciprocal; relative error ~2^-11, far below bf16's 2^-8), with silu and its gradient written in
t = tanh(s/2) (_silu_and_grad: fewer FMA-class ops); fp16/fp32 use the exact sigmoid.
Time buckets use fp32 log2 like the reference; they agree exactly while 1+dt < 2^19 (beyond that
the reference's own fp32 rounding decides bucket edges and either side may differ by one bucket).

Behaviour beyond the inputs comes from a HstuKernelOptions (roo_ref.kernels.options) passed to
hstu_attention_triton; this module reads no ROO_HSTU_* variable and holds no switch of its own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from roo_ref.attention_checks import check_inputs
from roo_ref.kernels import interpreting as _interpreting
from roo_ref.kernels.options import DEFAULT_OPTIONS, HstuKernelOptions, parse_config

__all__ = ["SUPPORTED_HEAD_DIMS", "HstuKernelOptions", "KERNELS", "hstu_attention_triton", "parse_config"]

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

# Copies of the bias-gradient buckets in the dk/dv kernel (see _hstu_bwd_dkdv). One copy serializes
# every pair's atomic add on P + T addresses: an hstu-ranking step on the H100 then costs ~32 ns per
# attention pair, ~100x the attention's FLOP time (docs/notebook/perf.md).
RAB_GRAD_COPIES = 128


# (BLOCK_M, BLOCK_N, num_warps, num_stages). For fwd/dq: M = queries, N = keys; for bwd (dk/dv):
# M = queries per inner step, N = the program's key block.
# dq: 64 queries and 4 warps, two programs per SM (the 128-query 8-warp one ran one per SM: the
# backward 10-13% slower at L = 512, 6-8% at 1024). It runs below L = 2048 only (dq_mode "auto").
_DEFAULTS = {"fwd": (64, 64, 4, 3), "bwd": (64, 128, 8, 3), "dq": (64, 64, 4, 2)}
# The forward below L = 2048: 32 keys per tile, 139 registers, three programs per SM (4-12% faster
# at L = 512-1024; at 2048-4096 within the runs' spread, either way).
_DEFAULT_FWD_SHORT = (64, 32, 4, 3)
SHORT_LEN = 2048
# The dk/dv kernel when dq has its own kernel: 64 keys per program and 4 warps, two programs per SM.
# On the H100 4-11% faster than the default at L <= 1024; with dq atomics it spills 42 registers
# and is 40% slower, so the atomic mode keeps the default (docs/notebook/perf.md).
_DEFAULT_BWD_DQ_KERNEL = (64, 64, 4, 2)
_TUNE = {
    "fwd": [
        (128, 64, 8, 3),
        (128, 128, 8, 2),
        (128, 64, 4, 3),
        (64, 64, 4, 3),
        (128, 64, 8, 2),
        (64, 128, 4, 3),
    ],
    "bwd": [(64, 128, 8, 2), (32, 128, 8, 2), (64, 64, 4, 2), (64, 128, 8, 3)],
    "dq": [(128, 64, 8, 2), (128, 32, 8, 3), (64, 64, 4, 3), (128, 128, 8, 2)],
}
_INTERP = {"fwd": (16, 16, 1, 1), "bwd": (16, 16, 1, 1), "dq": (16, 16, 1, 1)}


def _configs(kind: str, options: HstuKernelOptions = DEFAULT_OPTIONS, atomic_dq: bool = True, max_len: int = SHORT_LEN):
    """Candidate configs of a kernel: the options' config for this kind (tests, the benchmark's
    variants; may name only some kinds), else the interpreter's, the autotune list
    (options.autotune), else the default (for the dk/dv kernel by dq mode, for the forward by
    max_len)."""
    given = options.config(kind)
    if given is not None:
        return [given]
    if _interpreting():
        return [_INTERP[kind]]
    if options.autotune:
        return _TUNE[kind]
    if kind == "bwd" and not atomic_dq:
        return [_DEFAULT_BWD_DQ_KERNEL]
    if kind == "fwd" and max_len < SHORT_LEN:
        return [_DEFAULT_FWD_SHORT]
    return [_DEFAULTS[kind]]


# ----------------------------------------------------------------------------------------------
# elementwise helpers


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    if PREC == "upcast":
        # Triton's interpreter multiplies bf16 tiles wrongly (3.9): emulate in fp32, operands
        # already rounded to bf16, as the tensor cores would see them.
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _cast(x, dtype: tl.constexpr, PREC: tl.constexpr):
    """x.to(dtype); under the interpreter's bf16 emulation round to nearest even first (the
    interpreter's own fp32 -> bf16 cast truncates, unlike the GPU's cvt.rn)."""
    if PREC == "upcast":
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _tanh(x, FAST: tl.constexpr):
    if FAST == 1:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:  # FAST == 2: the same algebra with an exact tanh (the interpreter's check of the tanh form)
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def _score_scale(FAST: tl.constexpr):
    """The kernels carry x = s * _score_scale(FAST) for a score s = alpha q.k + rab: s itself for the
    exact sigmoid, s / 2 for the tanh form (sigmoid(s) = (1 + tanh(s/2)) / 2)."""
    if FAST == 1 or FAST == 2:
        return 0.5
    else:
        return 1.0


@triton.jit
def _silu_and_grad(x, FAST: tl.constexpr):
    """(silu(s), G silu'(s)) for x = s * _score_scale(FAST), G = 1 / _score_scale(FAST). Tanh form, t =
    tanh(x): silu = p = x (1 + t) and 2 silu' = (1 + t) + x (1 - t^2) = (1 + t) + p (1 - t) - four
    FMA-class ops after the MUFU op, against seven for sigmoid(s) and s sigmoid(s), sigmoid(s) (1 + s
    (1 - sigmoid(s))) (and the p (1 - t) form spills less than x (1 - t^2): compile_report); the
    factor 2 is taken out in each kernel's final scale, exactly (a power of two). The forward uses p
    only (the compiler drops g), the dq kernel g only."""
    if FAST == 1 or FAST == 2:
        t = _tanh(x, FAST)
        p = x * t + x
        g = p * (1.0 - t) + (1.0 + t)
    else:
        sig = 1.0 / (1.0 + tl.exp(-x))
        p = x * sig
        g = sig * (1.0 + x * (1.0 - sig))
    return p, g


@triton.jit
def _floor_log2(x):
    """floor(log2(x)) for fp32 x >= 1, exactly: the exponent field. (tl.log2 is an approximation on
    the GPU and can land below an integer at exact powers of two, moving a pair to the bucket below.)"""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits >> 23) & 0xFF) - 127


@triton.jit
def _bias(
    s,
    offs_m,
    offs_n,
    seq_start,
    n,
    POS,
    TS,
    PW,
    TW,
    P,
    T,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    TRANS: tl.constexpr,
    FAST: tl.constexpr = 0,
):
    """Add rab(i, j) * _score_scale(FAST) to s ([M, N], or [N, M] when TRANS). Rows/cols past n read
    index 0."""
    mm = offs_m < n
    nm = offs_n < n
    if HAS_POS:
        pi = tl.load(POS + seq_start + offs_m, mask=mm, other=0)
        pj = tl.load(POS + seq_start + offs_n, mask=nm, other=0)
        if TRANS:
            d = pi[None, :] - pj[:, None]
        else:
            d = pi[:, None] - pj[None, :]
        d = tl.minimum(tl.maximum(d, 0), P - 1)
        s += tl.load(PW + d).to(tl.float32) * _score_scale(FAST)
    if HAS_TIME:
        ti = tl.load(TS + seq_start + offs_m, mask=mm, other=0)
        tj = tl.load(TS + seq_start + offs_n, mask=nm, other=0)
        if TRANS:
            dt = ti[None, :] - tj[:, None]
        else:
            dt = ti[:, None] - tj[None, :]
        dt = tl.maximum(dt, 0).to(tl.float32)
        b = _floor_log2(1.0 + dt)
        b = tl.minimum(tl.maximum(b, 0), T - 1)
        s += tl.load(TW + b).to(tl.float32) * _score_scale(FAST)
    return s


@triton.jit
def _scores(
    a, b, offs_m, offs_n, seq_start, n, alpha, POS, TS, PW, TW, P, T,
    HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr, TRANS: tl.constexpr, FAST: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """x = (alpha a b^T + rab) * _score_scale(FAST): query-by-key scores for (a, b) = (q, k), or
    key-by-query ones (TRANS, the dk/dv kernel) for (a, b) = (k, q)."""
    s = _dot(a, tl.trans(b), PREC) * (alpha * _score_scale(FAST))
    if HAS_POS or HAS_TIME:
        s = _bias(s, offs_m, offs_n, seq_start, n, POS, TS, PW, TW, P, T, HAS_POS, HAS_TIME, TRANS, FAST)
    return s


@triton.jit
def _bucket_idx(offs_m, offs_n, seq_start, n, POS, TS, P, T, HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr):
    """Transposed ([N, M]) bucket indices for the bias gradients."""
    mm = offs_m < n
    nm = offs_n < n
    pidx = tl.zeros([offs_n.shape[0], offs_m.shape[0]], dtype=tl.int32)
    tidx = tl.zeros([offs_n.shape[0], offs_m.shape[0]], dtype=tl.int32)
    if HAS_POS:
        pi = tl.load(POS + seq_start + offs_m, mask=mm, other=0)
        pj = tl.load(POS + seq_start + offs_n, mask=nm, other=0)
        pidx = tl.minimum(tl.maximum(pi[None, :] - pj[:, None], 0), P - 1).to(tl.int32)
    if HAS_TIME:
        ti = tl.load(TS + seq_start + offs_m, mask=mm, other=0)
        tj = tl.load(TS + seq_start + offs_n, mask=nm, other=0)
        dt = tl.maximum(ti[None, :] - tj[:, None], 0).to(tl.float32)
        b = _floor_log2(1.0 + dt)
        tidx = tl.minimum(tl.maximum(b, 0), T - 1)
    return pidx, tidx


@triton.jit
def _allowed(ii, jj, hist):
    """The HSTU mask for broadcast query rows ii and key columns jj: causal, and a target (i >= hist)
    sees the history and itself, never another target."""
    return (jj <= ii) & ((jj < hist) | (jj == ii))


@triton.jit
def _key_ranges(m0, n, hist, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key blocks the query block [m0, m0 + BLOCK_M) sees, in three ranges: [0, n_full) every
    (i, j) allowed; [n_full, e1) the rest of the history it sees (causal edge / history end); [s2, e2)
    for target rows, only their own diagonal beyond the history (a target sees the history and itself)."""
    n_full = (tl.minimum(m0, hist) // BLOCK_N) * BLOCK_N
    e1 = tl.maximum(tl.cdiv(tl.minimum(m0 + BLOCK_M, hist), BLOCK_N) * BLOCK_N, n_full)
    s2 = tl.maximum(e1, (tl.maximum(m0, hist) // BLOCK_N) * BLOCK_N)
    e2 = tl.where(m0 + BLOCK_M > hist, tl.minimum(m0 + BLOCK_M, n), s2)
    return n_full, e1, s2, e2


@triton.jit
def _key_tile(it, jump_at, jump_to, K, V, kb, vb, stride_kt, stride_vt, offs_dk, offs_dv, n, BLOCK_N: tl.constexpr):
    """Key block `it` of a forward / dq loop: (start, offsets, k tile, v tile); rows past n read 0.
    Iterations from jump_at on visit key blocks from jump_to on (the target diagonal after the
    history), so the three key ranges of _key_ranges are one loop."""
    start_n = tl.where(it >= jump_at, it - jump_at + jump_to, it)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    nmask = offs_n < n
    k = tl.load(K + kb + offs_n[:, None] * stride_kt + offs_dk[None, :], mask=nmask[:, None], other=0.0)
    v = tl.load(V + vb + offs_n[:, None] * stride_vt + offs_dv[None, :], mask=nmask[:, None], other=0.0)
    return start_n, offs_n, k, v


@triton.jit
def _seq_info(seq_info, pid_b):
    """(first token, length, history length) of the pid_b-th sequence in the schedule's order: one row
    of the table _seq_table builds, three independent loads (the table replaces a chain of two
    dependent ones, sort_idx then seq_offsets / num_targets, at every program's start)."""
    row = seq_info + 3 * pid_b
    return tl.load(row), tl.load(row + 1).to(tl.int32), tl.load(row + 2).to(tl.int32)


# ----------------------------------------------------------------------------------------------
# forward


@triton.jit
def _fwd_range(
    acc,
    q,
    K,
    V,
    kv_base_k,
    kv_base_v,
    stride_kt,
    stride_vt,
    lo,
    hi,
    offs_m,
    offs_dk,
    offs_dv,
    seq_start,
    n,
    hist,
    alpha,
    POS,
    TS,
    PW,
    TW,
    P,
    T,
    BLOCK_N: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    FAST: tl.constexpr,
    PREC: tl.constexpr,
    jump_at,
    jump_to,
    full_hi,
):
    # tiles from full_hi on get the mask (see _key_tile for the jump)
    for it in range(lo, hi, BLOCK_N):
        start_n, offs_n, k, v = _key_tile(
            it, jump_at, jump_to, K, V, kv_base_k, kv_base_v, stride_kt, stride_vt, offs_dk, offs_dv, n, BLOCK_N
        )
        s = _scores(
            q, k, offs_m, offs_n, seq_start, n, alpha, POS, TS, PW, TW, P, T, HAS_POS, HAS_TIME, False, FAST, PREC
        )
        p, _ = _silu_and_grad(s, FAST)
        if start_n >= full_hi:
            p = tl.where(_allowed(offs_m[:, None], offs_n[None, :], hist), p, 0.0)
        acc += _dot(_cast(p, v.dtype, PREC), v, PREC)
    return acc


@triton.jit
def _hstu_fwd(
    Q,
    K,
    V,
    O,
    seq_info,
    POS,
    TS,
    PW,
    TW,
    stride_qt,
    stride_kt,
    stride_vt,
    stride_ot,
    stride_qh,
    stride_kh,
    stride_vh,
    stride_oh,
    alpha,
    inv_norm,
    P,
    T,
    max_len,
    max_len_bucket,
    D_QK: tl.constexpr,
    D_V: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    FAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.cdiv(max_len, BLOCK_M) - 1 - tl.program_id(0)  # heaviest (last) query blocks first
    h = tl.program_id(1)
    seq_start, n, hist = _seq_info(seq_info, tl.program_id(2))
    m0 = pid_m * BLOCK_M
    if m0 >= n:
        return
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_dk = tl.arange(0, D_QK)
    offs_dv = tl.arange(0, D_V)
    mmask = offs_m < n
    q = tl.load(
        Q + seq_start * stride_qt + h * stride_qh + offs_m[:, None] * stride_qt + offs_dk[None, :],
        mask=mmask[:, None],
        other=0.0,
    )
    kb = seq_start * stride_kt + h * stride_kh
    vb = seq_start * stride_vt + h * stride_vh
    acc = tl.zeros([BLOCK_M, D_V], dtype=tl.float32)
    # the key blocks of _key_ranges' three ranges in one software-pipelined loop: a loop per range
    # pays its own pipeline prologue and drain, and the masked ranges are only 1-2 tiles long
    n_full, e1, s2, e2 = _key_ranges(m0, n, hist, BLOCK_M, BLOCK_N)
    n_iter = e1 + tl.maximum(e2 - s2, 0)
    # fmt: off
    acc = _fwd_range(
        acc, q, K, V, kb, vb, stride_kt, stride_vt, 0, n_iter, offs_m, offs_dk, offs_dv, seq_start, n, hist,
        alpha, POS, TS, PW, TW, P, T, BLOCK_N, HAS_POS, HAS_TIME, FAST, PREC, e1, s2, n_full
    )
    # fmt: on
    acc = acc * inv_norm
    tl.store(
        O + seq_start * stride_ot + h * stride_oh + offs_m[:, None] * stride_ot + offs_dv[None, :],
        _cast(acc, O.dtype.element_ty, PREC),
        mask=mmask[:, None],
    )


# ----------------------------------------------------------------------------------------------
# backward: dk, dv (+ atomic dq, + bias gradients)


@triton.jit
def _bwd_range(
    dk,
    dv,
    k,
    v,
    Q,
    DO,
    DQA,
    q_base,
    do_base,
    dqa_base,
    stride_qt,
    stride_dot,
    stride_dqat,
    lo,
    hi,
    offs_n,
    offs_dk,
    offs_dv,
    seq_start,
    n,
    hist,
    alpha,
    dq_scale,
    inv_norm,
    POS,
    TS,
    PW,
    TW,
    DPW,
    DTW,
    P,
    T,
    BLOCK_M: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    GRAD_POS: tl.constexpr,
    GRAD_TIME: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    FAST: tl.constexpr,
    PREC: tl.constexpr,
    TIME_REDUCE: tl.constexpr,
    full_lo,
):
    # query tiles before full_lo (the diagonal) get the mask
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mmask = offs_m < n
        q = tl.load(Q + q_base + offs_m[:, None] * stride_qt + offs_dk[None, :], mask=mmask[:, None], other=0.0)
        do = tl.load(DO + do_base + offs_m[:, None] * stride_dot + offs_dv[None, :], mask=mmask[:, None], other=0.0)
        # transposed tiles [BLOCK_N keys, BLOCK_M queries]
        # (sT is the score times _score_scale, dsT G times the score's gradient: see _silu_and_grad)
        sT = _scores(
            k, q, offs_m, offs_n, seq_start, n, alpha, POS, TS, PW, TW, P, T, HAS_POS, HAS_TIME, True, FAST, PREC
        )
        pT, gT = _silu_and_grad(sT, FAST)
        # (dv's product before dO v^T spills 100 B less at the 128-key config but ran 3-7% slower
        # on the H100: docs/notebook/perf.md)
        dpT = _dot(v, tl.trans(do), PREC)
        dsT = dpT * gT
        if start_m < full_lo:
            allowed = _allowed(offs_m[None, :], offs_n[:, None], hist)
            pT = tl.where(allowed, pT, 0.0)
            dsT = tl.where(allowed, dsT, 0.0)
        dv += _dot(_cast(pT, do.dtype, PREC), do, PREC)
        dsT_c = _cast(dsT, q.dtype, PREC)
        dk += _dot(dsT_c, q, PREC)
        if ATOMIC_DQ:
            dq = _dot(tl.trans(dsT_c), k, PREC) * dq_scale
            tl.atomic_add(
                DQA + dqa_base + offs_m[:, None] * stride_dqat + offs_dk[None, :],
                dq,
                mask=mmask[:, None],
                sem="relaxed",
            )
        if GRAD_POS or GRAD_TIME:
            valid = (offs_n[:, None] < n) & mmask[None, :]
            # (full_lo is on the tile grid, so per element this is the tile's own branch)
            valid = valid & (_allowed(offs_m[None, :], offs_n[:, None], hist) | (offs_m[None, :] >= full_lo))
            pidx, tidx = _bucket_idx(offs_m, offs_n, seq_start, n, POS, TS, P, T, GRAD_POS, GRAD_TIME)
            g = dsT * (inv_norm * _score_scale(FAST))
            if GRAD_POS:
                tl.atomic_add(DPW + pidx, g, mask=valid, sem="relaxed")
            if GRAD_TIME:
                if TIME_REDUCE:
                    # Sum the tile per time bucket, then one scalar atomic per bucket. A time bucket
                    # is log2 of the gap, so neighbouring queries (the lanes of one warp) mostly
                    # share it and a per-element atomic serializes ~32 ways inside the warp. The
                    # loop runs over the tile's bucket range: 1-3 buckets for chronological
                    # sequences, at most T otherwise (correct for any timestamps).
                    tv = tl.where(valid, tidx, T)
                    b_lo = tl.min(tv)
                    b_hi = tl.max(tl.where(valid, tidx, -1))
                    for b in range(b_lo, b_hi + 1):
                        tl.atomic_add(DTW + b, tl.sum(tl.where(tv == b, g, 0.0)), sem="relaxed")
                else:
                    tl.atomic_add(DTW + tidx, g, mask=valid, sem="relaxed")
    return dk, dv


@triton.jit
def _hstu_bwd_dkdv(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    DQA,
    seq_info,
    POS,
    TS,
    PW,
    TW,
    DPW,
    DTW,
    stride_qt,
    stride_kt,
    stride_vt,
    stride_dot,
    stride_qh,
    stride_kh,
    stride_vh,
    stride_doh,
    stride_dqat,
    stride_dqah,
    alpha,
    inv_norm,
    P,
    T,
    max_len,
    max_len_bucket,
    D_QK: tl.constexpr,
    D_V: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    GRAD_POS: tl.constexpr,
    GRAD_TIME: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    FAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    N_COPIES: tl.constexpr = 1,
    TIME_REDUCE: tl.constexpr = False,
):
    # Early key blocks see the most queries: schedule them first.
    pid_n = tl.program_id(0)
    h = tl.program_id(1)
    seq_start, n, hist = _seq_info(seq_info, tl.program_id(2))
    n0 = pid_n * BLOCK_N
    if n0 >= n:
        return
    # Bias gradients: every (query, key) pair adds to one of only P (or T) buckets. With one copy
    # of the buckets every program's atomics hit the same few addresses and serialize; each
    # program adds into one of N_COPIES copies instead (summed after the kernel).
    copy = (pid_n + h * 61 + tl.program_id(2) * 127) % N_COPIES
    if GRAD_POS:
        DPW += copy * P
    if GRAD_TIME:
        DTW += copy * T
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_dk = tl.arange(0, D_QK)
    offs_dv = tl.arange(0, D_V)
    nmask = offs_n < n
    k = tl.load(
        K + seq_start * stride_kt + h * stride_kh + offs_n[:, None] * stride_kt + offs_dk[None, :],
        mask=nmask[:, None],
        other=0.0,
    )
    v = tl.load(
        V + seq_start * stride_vt + h * stride_vh + offs_n[:, None] * stride_vt + offs_dv[None, :],
        mask=nmask[:, None],
        other=0.0,
    )
    dk = tl.zeros([BLOCK_N, D_QK], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D_V], dtype=tl.float32)
    qb = seq_start * stride_qt + h * stride_qh
    dob = seq_start * stride_dot + h * stride_doh
    dqab = seq_start * stride_dqat + h * stride_dqah
    dq_scale = alpha * inv_norm * _score_scale(FAST)
    # Query blocks: the diagonal ones [n0, diag_end) masked; below the diagonal, history keys are
    # seen by every query (unmasked) - unless the key block reaches into the targets (masked), and
    # a key block of targets only is seen by its own diagonal.
    diag_end = n0 + tl.cdiv(BLOCK_N, BLOCK_M) * BLOCK_M
    hi = tl.where(n0 < hist, n, tl.minimum(diag_end, n))
    # one loop over both ranges (see _hstu_fwd): the diagonal query blocks masked, then the rest
    full_lo = tl.where(n0 + BLOCK_N <= hist, diag_end, hi)
    # fmt: off
    dk, dv = _bwd_range(
        dk, dv, k, v, Q, DO, DQA, qb, dob, dqab, stride_qt, stride_dot, stride_dqat, n0, hi, offs_n, offs_dk,
        offs_dv, seq_start, n, hist, alpha, dq_scale, inv_norm, POS, TS, PW, TW, DPW, DTW, P, T, BLOCK_M,
        HAS_POS, HAS_TIME, GRAD_POS, GRAD_TIME, ATOMIC_DQ, FAST, PREC, TIME_REDUCE, full_lo
    )
    # fmt: on
    dk = dk * (alpha * inv_norm * _score_scale(FAST))
    dv = dv * inv_norm
    tl.store(
        DK + seq_start * stride_kt + h * stride_kh + offs_n[:, None] * stride_kt + offs_dk[None, :],
        _cast(dk, DK.dtype.element_ty, PREC),
        mask=nmask[:, None],
    )
    tl.store(
        DV + seq_start * stride_vt + h * stride_vh + offs_n[:, None] * stride_vt + offs_dv[None, :],
        _cast(dv, DV.dtype.element_ty, PREC),
        mask=nmask[:, None],
    )


# ----------------------------------------------------------------------------------------------
# backward: dq (own kernel)


@triton.jit
def _dq_range(
    dq,
    q,
    do,
    K,
    V,
    kb,
    vb,
    stride_kt,
    stride_vt,
    lo,
    hi,
    offs_m,
    offs_dk,
    offs_dv,
    seq_start,
    n,
    hist,
    alpha,
    POS,
    TS,
    PW,
    TW,
    P,
    T,
    BLOCK_N: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    FAST: tl.constexpr,
    PREC: tl.constexpr,
    jump_at,
    jump_to,
    full_hi,
):
    # jump_at, jump_to, full_hi: as in _fwd_range
    for it in range(lo, hi, BLOCK_N):
        start_n, offs_n, k, v = _key_tile(
            it, jump_at, jump_to, K, V, kb, vb, stride_kt, stride_vt, offs_dk, offs_dv, n, BLOCK_N
        )
        s = _scores(
            q, k, offs_m, offs_n, seq_start, n, alpha, POS, TS, PW, TW, P, T, HAS_POS, HAS_TIME, False, FAST, PREC
        )
        _, g = _silu_and_grad(s, FAST)
        dp = _dot(do, tl.trans(v), PREC)
        ds = dp * g
        if start_n >= full_hi:
            ds = tl.where(_allowed(offs_m[:, None], offs_n[None, :], hist), ds, 0.0)
        dq += _dot(_cast(ds, k.dtype, PREC), k, PREC)
    return dq


@triton.jit
def _hstu_bwd_dq(
    Q,
    K,
    V,
    DO,
    DQ,
    seq_info,
    POS,
    TS,
    PW,
    TW,
    stride_qt,
    stride_kt,
    stride_vt,
    stride_dot,
    stride_qh,
    stride_kh,
    stride_vh,
    stride_doh,
    alpha,
    inv_norm,
    P,
    T,
    max_len,
    max_len_bucket,
    D_QK: tl.constexpr,
    D_V: tl.constexpr,
    HAS_POS: tl.constexpr,
    HAS_TIME: tl.constexpr,
    FAST: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.cdiv(max_len, BLOCK_M) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    seq_start, n, hist = _seq_info(seq_info, tl.program_id(2))
    m0 = pid_m * BLOCK_M
    if m0 >= n:
        return
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_dk = tl.arange(0, D_QK)
    offs_dv = tl.arange(0, D_V)
    mmask = offs_m < n
    q = tl.load(
        Q + seq_start * stride_qt + h * stride_qh + offs_m[:, None] * stride_qt + offs_dk[None, :],
        mask=mmask[:, None],
        other=0.0,
    )
    do = tl.load(
        DO + seq_start * stride_dot + h * stride_doh + offs_m[:, None] * stride_dot + offs_dv[None, :],
        mask=mmask[:, None],
        other=0.0,
    )
    kb = seq_start * stride_kt + h * stride_kh
    vb = seq_start * stride_vt + h * stride_vh
    dq = tl.zeros([BLOCK_M, D_QK], dtype=tl.float32)
    # the forward's three key ranges, in one loop
    n_full, e1, s2, e2 = _key_ranges(m0, n, hist, BLOCK_M, BLOCK_N)
    n_iter = e1 + tl.maximum(e2 - s2, 0)
    # fmt: off
    dq = _dq_range(
        dq, q, do, K, V, kb, vb, stride_kt, stride_vt, 0, n_iter, offs_m, offs_dk, offs_dv, seq_start, n, hist,
        alpha, POS, TS, PW, TW, P, T, BLOCK_N, HAS_POS, HAS_TIME, FAST, PREC, e1, s2, n_full
    )
    # fmt: on
    dq = dq * (alpha * inv_norm * _score_scale(FAST))
    tl.store(
        DQ + seq_start * stride_qt + h * stride_qh + offs_m[:, None] * stride_qt + offs_dk[None, :],
        _cast(dq, DQ.dtype.element_ty, PREC),
        mask=mmask[:, None],
    )


# ----------------------------------------------------------------------------------------------
# autotuned entry points (a single config unless options.autotune)


def _cfgs(configs):
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in configs]


KERNELS = {"fwd": _hstu_fwd, "bwd": _hstu_bwd_dkdv, "dq": _hstu_bwd_dq}  # the jitted kernels, by kind
_KEY = ["max_len_bucket", "D_QK", "D_V", "HAS_POS", "HAS_TIME"]
# autotuned wrappers by (kind, candidate configs): a cache, so each config list compiles once
_cache: dict = {}


def _kernel(kind: str, options: HstuKernelOptions = DEFAULT_OPTIONS, atomic_dq: bool = True, max_len: int = SHORT_LEN):
    """The autotuned wrapper of kernel `kind` over its candidate configs (see _configs)."""
    key = (kind, tuple(_configs(kind, options, atomic_dq, max_len)))
    if key not in _cache:
        base = KERNELS[kind]
        kw = {}
        if kind == "bwd":
            # atomics accumulate: autotune trial runs must start from zero
            kw["reset_to_zero"] = ["DQA", "DPW", "DTW"]
        _cache[key] = triton.autotune(configs=_cfgs(key[1]), key=_KEY + (["ATOMIC_DQ"] if kind == "bwd" else []), **kw)(
            base
        )
    return _cache[key]


def default_configs() -> dict:
    """The default config of each kernel, and the by-length / by-dq-mode alternatives."""
    return {
        **_DEFAULTS,
        "bwd (dq kernel)": _DEFAULT_BWD_DQ_KERNEL,
        f"fwd (L < {SHORT_LEN})": _DEFAULT_FWD_SHORT,
    }


# ----------------------------------------------------------------------------------------------
# Python side


def _check(
    q, k, v, seq_offsets, max_seq_len, num_targets, positions, timestamps, pos_weights, time_weights, check_values
):
    # One device->host copy of the offsets and targets, then every value check on the host: each
    # separate int()/any() on a GPU tensor is a sync, and five of them cost more than the whole
    # forward at L <= 1024 (docs/notebook/perf.md). check_values=False skips that copy (and
    # the value checks), keeping the shape / dtype / device checks.
    if not isinstance(seq_offsets, torch.Tensor) or (
        num_targets is not None and not isinstance(num_targets, torch.Tensor)
    ):
        raise ValueError("seq_offsets and num_targets must be tensors")
    if not check_values:
        off_h, nt_h = seq_offsets, num_targets
    elif num_targets is not None and seq_offsets.dim() == 1 and num_targets.dim() == 1:
        host = torch.cat([seq_offsets.detach().to(torch.int64), num_targets.detach().to(torch.int64)]).cpu()
        off_h, nt_h = host[: seq_offsets.numel()], host[seq_offsets.numel() :]
        off_h = off_h.to(seq_offsets.dtype) if seq_offsets.dtype in (torch.int32, torch.int64) else off_h
    else:
        off_h, nt_h = (
            seq_offsets.detach().cpu(),
            (None if num_targets is None else num_targets.detach().cpu()),
        )
    if seq_offsets.dtype not in (torch.int32, torch.int64):
        off_h = seq_offsets  # let check_inputs name the bad dtype
    check_inputs(q, k, v, off_h, nt_h, check_values)
    if q.dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {q.dtype}; allowed: bfloat16, float16, float32")
    for name, d in (("q/k head dim", q.shape[2]), ("v head dim", v.shape[2])):
        if d not in SUPPORTED_HEAD_DIMS:
            raise ValueError(f"unsupported {name} {d}; allowed: {', '.join(map(str, SUPPORTED_HEAD_DIMS))}")
    devs = {t.device for t in (q, k, v, seq_offsets) if t is not None}
    for t in (num_targets, positions, timestamps, pos_weights, time_weights):
        if t is not None:
            devs.add(t.device)
    if len(devs) != 1:
        raise ValueError(f"all tensors must be on one device; got {sorted(map(str, devs))}")
    if check_values:
        lengths = off_h[1:] - off_h[:-1]
        if lengths.numel() and int(lengths.max()) > max_seq_len:
            raise ValueError(f"a sequence is longer than max_seq_len={max_seq_len} ({int(lengths.max())} tokens)")
    for wname, w, xname, x in (
        ("pos_weights", pos_weights, "positions", positions),
        ("time_weights", time_weights, "timestamps", timestamps),
    ):
        if w is None:
            continue
        if x is None:
            raise ValueError(f"{wname} given without {xname}")
        if w.dim() != 1 or w.numel() < 1:
            raise ValueError(f"{wname} must be a non-empty 1-D table; got shape {tuple(w.shape)}")
        if x.shape != (q.shape[0],):
            raise ValueError(f"{xname} must have one entry per token ({q.shape[0]}); got {tuple(x.shape)}")


_DUMMIES: dict = {}


def _dummy(device, dtype=torch.float32, written: bool = False) -> torch.Tensor:
    """A 1-element buffer for an unused pointer argument (cached: no allocation per call).
    written=True: one for the atomic targets (DQA, DPW, DTW), which the autotuner zeroes before its
    trial runs (reset_to_zero). That in-place write must not hit the read-only placeholders, which
    the forward saves for backward: autograd would reject a second backward of the same graph
    (retain_graph) as "modified by an inplace operation" (seen on the H100 with autotune on)."""
    key = (str(device), dtype, written)
    if key not in _DUMMIES:
        _DUMMIES[key] = torch.zeros(1, dtype=dtype, device=device)
    return _DUMMIES[key]


def _fast(dtype: torch.dtype, device: torch.device, silu: str) -> int:
    """The kernels' FAST switch for options.silu: 1 = silu in the tanh form through tanh.approx.f32
    ("fast" on bf16 on the GPU); 0 = the exact sigmoid ("exact"; "fast" for fp16/fp32 and under the
    interpreter, which has no inline PTX); 2 = the tanh form with an exact tanh ("tanh_exact", which
    checks the tanh form's algebra on the CPU)."""
    if silu == "tanh_exact":
        return 2
    if silu == "exact" or not (dtype == torch.bfloat16 and device.type == "cuda" and not _interpreting()):
        return 0
    return 1


def _prec(dtype: torch.dtype) -> str:
    # fp32 inputs: true fp32 products (tf32 would not match an fp32 reference)
    if dtype == torch.bfloat16 and _interpreting():
        return "upcast"
    return "ieee" if dtype == torch.float32 else "tf32"


def _bucket(max_seq_len: int) -> int:
    return 1 << max(0, int(max_seq_len) - 1).bit_length()


def _seq_table(seq_offsets: torch.Tensor, num_targets: torch.Tensor | None) -> torch.Tensor:
    """[B, 3] int64 rows (first token, length, history length), sequences sorted by length, longest
    first: the grid's slowest axis walks this order (the longest work starts first, short sequences
    fill the tail), and each program reads its sequence with one row load (_seq_info)."""
    offsets = seq_offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    hist = lengths if num_targets is None else lengths - num_targets.to(torch.int64)
    order = torch.argsort(lengths, descending=True)
    return torch.stack([offsets[:-1], lengths, hist], dim=1)[order].contiguous()


def _bias_tensors(q, positions, timestamps, pos_weights, time_weights) -> tuple:
    """(pos, ts, pw, tw, P, T): the relative-bias inputs as the kernels read them. Unused pointer
    arguments get their own 1-element buffer: never a real input, since the autotuner zeroes the
    atomic targets (reset_to_zero) between trials."""
    has_pos, has_time = pos_weights is not None, time_weights is not None
    pos = positions.to(torch.int64).contiguous() if has_pos else _dummy(q.device, torch.int64)
    ts = timestamps.contiguous() if has_time else _dummy(q.device, torch.int64)
    pw = pos_weights.contiguous() if has_pos else _dummy(q.device)
    tw = time_weights.contiguous() if has_time else _dummy(q.device)
    P = pos_weights.numel() if has_pos else 1
    T = time_weights.numel() if has_time else 1
    return pos, ts, pw, tw, P, T


def _record(compiled: dict | None, kind: str, kernel) -> None:
    """Keep a launch's compiled kernel (registers, spills, shared memory) in the caller's dict."""
    if compiled is not None:
        compiled[kind] = kernel


def _launch_fwd(q, k, v, out, info, bias, m, options, compiled) -> None:
    pos, ts, pw, tw, P, T = bias
    L = m["max_seq_len"]
    kern = _kernel("fwd", options, max_len=L)
    launched = kern[lambda META: (triton.cdiv(L, META["BLOCK_M"]), m["H"], m["B"])](
        q, k, v, out, info, pos, ts, pw, tw,
        q.stride(0), k.stride(0), v.stride(0), out.stride(0), q.stride(1), k.stride(1), v.stride(1), out.stride(1),
        m["alpha"], m["inv_norm"], P, T, L, m["bucket"],
        D_QK=q.shape[2], D_V=v.shape[2], HAS_POS=m["has_pos"], HAS_TIME=m["has_time"], FAST=m["fast"],
        PREC=m["prec"],
    )  # fmt: skip
    _record(compiled, "fwd", launched)


def _launch_dkdv(q, k, v, dout, dk, dv, dqa, info, bias, dpw, dtw, m, grads, atomic, options, compiled) -> None:
    """The dk/dv kernel; with `atomic` it also sums dq into dqa, with `grads` (pos, time) the bias
    gradients into dpw / dtw (RAB_GRAD_COPIES copies each)."""
    pos, ts, pw, tw = bias[:4]
    grad_pos, grad_time = grads
    L = m["max_seq_len"]
    kern = _kernel("bwd", options, atomic)
    launched = kern[lambda META: (triton.cdiv(L, META["BLOCK_N"]), m["H"], m["B"])](
        q, k, v, dout, dk, dv, dqa, info, pos, ts, pw, tw, dpw, dtw,
        q.stride(0), k.stride(0), v.stride(0), dout.stride(0), q.stride(1), k.stride(1), v.stride(1), dout.stride(1),
        dqa.stride(0) if atomic else 0, dqa.stride(1) if atomic else 0,
        m["alpha"], m["inv_norm"], m["P"], m["T"], L, m["bucket"],
        D_QK=q.shape[2], D_V=v.shape[2], HAS_POS=m["has_pos"], HAS_TIME=m["has_time"],
        GRAD_POS=grad_pos, GRAD_TIME=grad_time, ATOMIC_DQ=atomic,
        # exact sigmoid when bias gradients are summed: the approximation's small bias would add up
        # over every pair of a bucket
        FAST=0 if (grad_pos or grad_time) else m["fast"],
        PREC=m["prec"], N_COPIES=RAB_GRAD_COPIES, TIME_REDUCE=grad_time and options.time_grad == "reduce",
    )  # fmt: skip
    _record(compiled, "bwd", launched)


def _launch_dq(q, k, v, dout, dq, info, bias, m, options, compiled) -> None:
    pos, ts, pw, tw = bias[:4]
    L = m["max_seq_len"]
    kern = _kernel("dq", options)
    launched = kern[lambda META: (triton.cdiv(L, META["BLOCK_M"]), m["H"], m["B"])](
        q, k, v, dout, dq, info, pos, ts, pw, tw,
        q.stride(0), k.stride(0), v.stride(0), dout.stride(0), q.stride(1), k.stride(1), v.stride(1), dout.stride(1),
        m["alpha"], m["inv_norm"], m["P"], m["T"], L, m["bucket"],
        D_QK=q.shape[2], D_V=v.shape[2], HAS_POS=m["has_pos"], HAS_TIME=m["has_time"], FAST=m["fast"],
        PREC=m["prec"],
    )  # fmt: skip
    _record(compiled, "dq", launched)


def _meta(q, seq_offsets, max_seq_len, alpha, normalizer, bias, pos_weights, time_weights, options) -> dict:
    """The scalar launch arguments shared by the forward and the backward."""
    return dict(
        B=seq_offsets.numel() - 1,
        H=q.shape[1],
        max_seq_len=int(max_seq_len),
        alpha=float(alpha),
        inv_norm=1.0 / float(normalizer),
        P=bias[4],
        T=bias[5],
        has_pos=pos_weights is not None,
        has_time=time_weights is not None,
        fast=_fast(q.dtype, q.device, options.silu),
        prec=_prec(q.dtype),
        bucket=_bucket(max_seq_len),
    )


def _launches(q: torch.Tensor, m: dict) -> bool:
    """Whether there is any work: an empty batch or no tokens launches nothing."""
    return q.shape[0] > 0 and m["B"] > 0 and m["max_seq_len"] > 0


class _HSTUAttention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, q, k, v, seq_offsets, max_seq_len, alpha, normalizer, num_targets,
        positions, timestamps, pos_weights, time_weights, options, compiled,
    ):  # fmt: skip
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = torch.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype, device=q.device)
        info = _seq_table(seq_offsets, num_targets)
        bias = _bias_tensors(q, positions, timestamps, pos_weights, time_weights)
        meta = _meta(q, seq_offsets, max_seq_len, alpha, normalizer, bias, pos_weights, time_weights, options)
        if _launches(q, meta):
            _launch_fwd(q, k, v, out, info, bias, meta, options, compiled)
        ctx.save_for_backward(q, k, v, info, *bias[:4])
        ctx.meta = meta
        ctx.options, ctx.compiled = options, compiled
        ctx.weight_dtypes = (
            pos_weights.dtype if meta["has_pos"] else None,
            time_weights.dtype if meta["has_time"] else None,
        )
        ctx.weight_grads = (
            meta["has_pos"] and pos_weights.requires_grad,
            meta["has_time"] and time_weights.requires_grad,
        )
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, info, pos, ts, pw, tw = ctx.saved_tensors
        m, options, compiled = ctx.meta, ctx.options, ctx.compiled
        dout = dout.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_pos, grad_time = ctx.weight_grads
        copies = RAB_GRAD_COPIES
        # atomic targets; a placeholder of its own when unused (see _dummy)
        sink = _dummy(q.device, written=True)
        dpw = torch.zeros(copies * m["P"], dtype=torch.float32, device=q.device) if grad_pos else sink
        dtw = torch.zeros(copies * m["T"], dtype=torch.float32, device=q.device) if grad_time else sink
        atomic = options.atomic_dq(m["max_seq_len"])
        dqa = torch.zeros(q.shape, dtype=torch.float32, device=q.device) if atomic else sink
        if _launches(q, m):
            bias = (pos, ts, pw, tw)
            _launch_dkdv(
                q, k, v, dout, dk, dv, dqa, info, bias, dpw, dtw, m, ctx.weight_grads, atomic, options, compiled
            )
            if atomic:
                dq = dqa.to(q.dtype)
            else:
                _launch_dq(q, k, v, dout, dq, info, bias, m, options, compiled)
        else:
            dq.zero_()
            dk.zero_()
            dv.zero_()
        pdt, tdt = ctx.weight_dtypes
        gpw = dpw.view(copies, -1).sum(0).to(pdt) if grad_pos else None
        gtw = dtw.view(copies, -1).sum(0).to(tdt) if grad_time else None
        return dq, dk, dv, None, None, None, None, None, None, None, gpw, gtw, None, None


def hstu_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    normalizer: float,
    num_targets: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    time_weights: torch.Tensor | None = None,
    check_values: bool = True,
    options: HstuKernelOptions | None = None,
    compiled: dict | None = None,
) -> torch.Tensor:
    """Same arguments and result as roo_ref.attention.hstu_attention_torch; differentiable in q, k,
    v, pos_weights and time_weights. ValueError on bad input before any launch. check_values=False
    skips the checks of the offsets' and targets' values (one device->host sync per call) for
    callers that build them correctly; a wrong value then reads out of bounds.
    options: the kernels' options (None: HstuKernelOptions(), the measured defaults).
    compiled: a dict of the caller's that receives each launched kernel by kind ("fwd", "bwd",
    "dq"; the backward's when it runs), for its registers, spills and shared memory."""
    if options is None:
        options = DEFAULT_OPTIONS
    elif not isinstance(options, HstuKernelOptions):
        raise TypeError(f"options must be a HstuKernelOptions or None; got {type(options).__name__}")
    _check(
        q, k, v, seq_offsets, max_seq_len, num_targets, positions, timestamps, pos_weights, time_weights, check_values
    )
    return _HSTUAttention.apply(
        q, k, v, seq_offsets, max_seq_len, alpha, normalizer, num_targets,
        positions, timestamps, pos_weights, time_weights, options, compiled,
    )  # fmt: skip
