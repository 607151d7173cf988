"""The HSTU attention class: the Triton kernel (roo_ref.kernels) forward + backward as one model
layer calls it (check_values=False, the relative bias when the preset has one, its bucket
tables), on jagged bf16 batches of `seqs` sequences of one max length and targets per sequence.

Why three axes: the kernel's rate depends on the length (tile shapes, the causal mask's share of
each tile), the targets (the mask's target block) and how many sequences fill the GPU (few
sequences leave SMs idle). The sizes span the layouts' real calls: the ROO layout's tens of
request sequences with many targets, the impression layout's thousands of one-target sequences.
Cells past the token or pair cap (and targets >= length) are not run; the rate table fills them
from the nearest smaller measured cell (roo_ref.cost.kernel_classes.fill_nearest)."""

from __future__ import annotations

import itertools

import numpy as np

from harness.calibration.kernels import Grids
from harness.calibration.timing import device_seconds


def mask_pairs(lengths, targets: int) -> float:
    """(query, key) pairs the target-aware mask keeps: history causal h(h+1)/2 plus t(h+1)."""
    h = lengths - targets
    return float((h * (h + 1) // 2 + targets * (h + 1)).sum())


def mask_aware_flops(lengths, targets: int, heads: int, d_qk: int, d_v: int) -> float:
    """Forward + backward FLOPs over the kept pairs (the cost model's rule: backward twice the
    forward)."""
    return 3 * 2 * heads * (d_qk + d_v) * mask_pairs(lengths, targets)


def _runnable(grids: Grids, L: int, t: int, B: int) -> bool:
    pairs = B * (L * L / 2 + t * L)
    return t < L and B * L <= grids.hstu_max_tokens and pairs <= grids.hstu_max_pairs


def _call(torch, dev, g, L: int, t: int, B: int, shape: dict):
    """One layer's attention call (forward + backward) on B sequences of length L, t targets."""
    from roo_ref.kernels.hstu_attention import hstu_attention_triton

    heads, d_qk, d_v = shape["heads"], shape["d_qk"], shape["d_v"]
    lengths = torch.full((B,), L, dtype=torch.int64)
    offs = torch.zeros(B + 1, dtype=torch.int64)
    offs[1:] = lengths.cumsum(0)
    T = B * L
    q, k = (torch.randn(T, heads, d_qk, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
    v = torch.randn(T, heads, d_v, device=dev, dtype=torch.bfloat16, generator=g)
    for x in (q, k, v):
        x.requires_grad_()
    dout = torch.randn(T, heads, d_v, device=dev, dtype=torch.bfloat16, generator=g)
    rab: tuple = (None, None, None, None)
    if shape["rab"]:
        within = torch.arange(T, device=dev) - offs[:-1].to(dev).repeat_interleave(L)
        positions = within.clamp(max=L - t)  # history 0.., every target one position
        stamps = torch.randint(0, 1 << 20, (T,), device=dev, generator=g).sort().values
        pos_w = (torch.randn(shape["pos_buckets"], device=dev, generator=g) * 0.1).requires_grad_()
        time_w = (torch.randn(shape["time_buckets"], device=dev, generator=g) * 0.1).requires_grad_()
        rab = (positions, stamps, pos_w, time_w)
    args = (offs.to(dev), L, 1.0 / d_qk**0.5, float(L), torch.full((B,), t, device=dev), *rab)
    leaves = [q, k, v] + ([rab[2], rab[3]] if shape["rab"] else [])

    def step():
        out = hstu_attention_triton(q, k, v, *args, check_values=False)
        torch.autograd.backward(out, dout, inputs=leaves)

    return step, mask_aware_flops(lengths, t, heads, d_qk, d_v)


def hstu_table(torch, dev, grids: Grids, g, shape: dict) -> dict | None:
    """{"axes" (max length, targets, sequences), "values" (seconds; NaN: not run), "work"
    (FLOPs), "measured"} or None off CUDA. `shape`: heads, d_qk, d_v, rab, pos/time buckets."""
    if dev.type != "cuda" or not grids.hstu_lens:
        return None
    ax = (grids.hstu_lens, grids.hstu_targets, grids.hstu_seqs)
    secs = np.full(tuple(len(a) for a in ax), np.nan)
    work = np.zeros_like(secs)
    for (i, L), (j, t), (l, B) in itertools.product(*(enumerate(a) for a in ax)):
        lengths = np.full(B, L, dtype=np.int64)
        work[i, j, l] = mask_aware_flops(lengths, min(t, L - 1), shape["heads"], shape["d_qk"], shape["d_v"])
        if not _runnable(grids, L, t, B):
            continue
        step, work[i, j, l] = _call(torch, dev, g, L, t, B, shape)
        secs[i, j, l] = device_seconds(step, dev, reps=5)
        del step
    measured = np.isfinite(secs)
    return {
        "axes": [[float(x) for x in a] for a in ax],
        "values": secs.tolist(),
        "work": work.tolist(),
        "measured": measured.tolist(),
    }
