"""The HSTU attention class: the Triton kernel (roo_ref.kernels) forward + backward, with the
model's relative bias, on jagged bf16 batches of one max length and targets per sequence."""

from __future__ import annotations

import itertools

import numpy as np

from harness.calibration.kernels import Grids
from harness.calibration.timing import device_seconds


def mask_aware_flops(lengths, targets: int, heads: int, d_qk: int, d_v: int) -> float:
    """Forward + backward FLOPs over the pairs the target-aware mask keeps (the cost model's rule:
    history causal h(h+1)/2 plus t(h+1), backward twice the forward)."""
    h = lengths - targets
    pairs = float((h * (h + 1) // 2 + targets * (h + 1)).sum())
    return 3 * 2 * heads * (d_qk + d_v) * pairs


def hstu_table(torch, dev, grids: Grids, g, heads: int, d_qk: int, d_v: int) -> dict | None:
    """{"axes" (max length, targets), "values" (seconds), "work" (FLOPs)} or None off CUDA."""
    if dev.type != "cuda" or not grids.hstu_lens:
        return None
    from roo_ref.kernels.hstu_attention import hstu_attention_triton

    lens_ax, tg_ax = grids.hstu_lens, grids.hstu_targets
    secs = np.zeros((len(lens_ax), len(tg_ax)))
    work = np.zeros_like(secs)
    pos_w = (torch.randn(64, device=dev, generator=g) * 0.1).requires_grad_()
    time_w = (torch.randn(32, device=dev, generator=g) * 0.1).requires_grad_()
    for (i, L), (j, t) in itertools.product(enumerate(lens_ax), enumerate(tg_ax)):
        t = min(t, L - 1)
        B = max(1, grids.hstu_tokens // L)
        lengths = torch.full((B,), L, dtype=torch.int64)
        offs = torch.zeros(B + 1, dtype=torch.int64)
        offs[1:] = lengths.cumsum(0)
        T = B * L
        q, k = (torch.randn(T, heads, d_qk, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
        v = torch.randn(T, heads, d_v, device=dev, dtype=torch.bfloat16, generator=g)
        for x in (q, k, v):
            x.requires_grad_()
        dout = torch.randn(T, heads, d_v, device=dev, dtype=torch.bfloat16, generator=g)
        within = torch.arange(T, device=dev) - offs[:-1].to(dev).repeat_interleave(L)
        positions = within.clamp(max=L - t)
        stamps = torch.randint(0, 1 << 20, (T,), device=dev, generator=g).sort().values
        args = (offs.to(dev), L, 1.0 / d_qk**0.5, float(L), torch.full((B,), t, device=dev))
        args += (positions, stamps, pos_w, time_w)

        def step(q=q, k=k, v=v, dout=dout, args=args):
            out = hstu_attention_triton(q, k, v, *args, check_values=False)
            torch.autograd.backward(out, dout, inputs=[q, k, v])

        secs[i, j] = device_seconds(step, dev, reps=5)
        work[i, j] = mask_aware_flops(lengths, t, heads, d_qk, d_v)
    axes = [[float(x) for x in lens_ax], [float(x) for x in tg_ax]]
    return {"axes": axes, "values": secs.tolist(), "work": work.tolist(), "heads": heads, "d_qk": d_qk, "d_v": d_v}
