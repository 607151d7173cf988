"""The kernel benchmark's inputs and measurements: jagged bf16 batches, the mask-aware FLOP rule,
CUDA-event and profiler timings, and the JSON writer (see benchmarks.hstu_kernel)."""

from __future__ import annotations

import json
import os
import tempfile


def batch_lengths(L: int, dist: str, tokens: int, gen):
    import torch

    if dist == "uniform":
        b = max(1, tokens // L)
        return torch.full((b,), L, dtype=torch.int64)
    b = max(1, round(tokens / (0.75 * L)))
    lens = torch.randint(L // 2, L + 1, (b,), generator=gen, dtype=torch.int64)
    lens[0] = L  # max length is L exactly (same grid as uniform)
    return lens


def mask_pairs(lengths, num_targets) -> int:
    h = lengths - num_targets
    return int((h * (h + 1) // 2 + num_targets * h + num_targets).sum())


def median_ms(fn, grad_to_none=None):
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def matmul_tflops(torch):
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b)
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def gpu_ms(torch, fn, n=10):
    """(GPU time of the HSTU kernels, GPU time of every kernel/copy/fill) per call of fn, ms, from
    torch.profiler's GPU timeline: what the call costs on the GPU without its host-side time
    (the checks' device->host copy, argument handling, launches), which do_bench's events include
    whenever the call synchronizes."""
    from torch.profiler import ProfilerActivity, profile

    from harness.profile_step import self_device_us

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    hstu = total = 0.0
    for e in prof.key_averages():
        t = self_device_us(e)
        total += t
        if e.key.startswith("_hstu"):
            hstu += t
    return hstu / n / 1e3, total / n / 1e3


def table_input(torch, L, dist, nt_val, a, gen) -> tuple[dict, object, object]:
    """(x, lengths, targets): one bf16 batch for the provider table."""
    lens = batch_lengths(L, dist, a.tokens, gen)
    nt = lens.clamp(max=nt_val)
    offs = torch.zeros(lens.numel() + 1, dtype=torch.int64)
    offs[1:] = lens.cumsum(0)
    T, H, D = int(offs[-1]), a.heads, a.dim
    x = dict(
        L=L,
        B=lens.numel(),
        H=H,
        D=D,
        alpha=1.0 / D**0.5,
        offsets=offs.cuda(),
        nt=nt.cuda(),
        q=torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True),
        k=torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True),
        v=torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True),
        dout=torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16),
    )
    return x, lens, nt


def write_json(path, result) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=d, delete=False, suffix=".tmp") as fh:
        json.dump(result, fh, indent=1)
    os.replace(fh.name, path)


def kernel_input(torch, L, dist, nt_val, a, gen):
    """({q, k, v, dout, args}, mask-aware forward FLOPs): one bf16 batch as the model calls the kernel."""
    lens = batch_lengths(L, dist, a.tokens, gen)
    nt = lens.clamp(max=nt_val)
    offs = torch.zeros(lens.numel() + 1, dtype=torch.int64)
    offs[1:] = lens.cumsum(0)
    T, H, D = int(offs[-1]), a.heads, a.dim
    x = {n: torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16) for n in ("q", "k", "v", "dout")}
    for n in ("q", "k", "v"):
        x[n].requires_grad_(True)
    x["args"] = (offs.cuda(), L, 1.0 / D**0.5, float(L), nt.cuda())
    return x, mask_pairs(lens, nt) * H * 4 * D
