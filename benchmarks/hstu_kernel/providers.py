"""The provider table: each named implementation (PROVIDERS) on each input, fwd / bwd / fwd+bwd
CUDA-event medians and TFLOP/s, and the Triton providers' GPU-only times (see benchmarks.hstu_kernel)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.hstu_kernel.inputs import gpu_ms, mask_pairs, matmul_tflops, median_ms, table_input, write_json
from roo_ref.kernels.options import HstuKernelOptions

MODES = ("fwd", "bwd", "fwdbwd")
_MULT = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}  # FLOPs of a mode, in forwards


# ----------------------------------------------------------------------------------------------
# providers: name -> how to build the call on one input


@dataclass(frozen=True)
class Provider:
    """A named implementation. build(torch, x, options) -> (f, leaves, dout): f() runs the forward,
    leaves are the tensors whose .grad the timing resets, dout the output gradient. gpu_split: also
    take the GPU-only forward / backward time from the profiler (the Triton providers)."""

    name: str
    build: Callable
    gpu_split: bool = False


def _sdpa(backend_name: str) -> Callable:
    def build(torch, x, options):
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)
        B, L, H, D = x["B"], x["L"], x["H"], x["D"]
        qp, kp, vp = (
            torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        )
        dout = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)

        def f():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

        return f, [qp, kp, vp], dout

    return build


def _hstu_args(x) -> tuple:
    return (x["offsets"], x["L"], x["alpha"], float(x["L"]), x["nt"])


def _torch_ref(torch, x, options):
    from roo_ref.attention import hstu_attention_torch

    q, k, v, args = x["q"], x["k"], x["v"], _hstu_args(x)
    return (lambda: hstu_attention_torch(q, k, v, *args)), [q, k, v], x["dout"]


def _triton(dq_mode: str | None = None, check_values: bool = True) -> Callable:
    def build(torch, x, options):
        from roo_ref.kernels.hstu_attention import hstu_attention_triton

        opts = options if dq_mode is None else options.replace(dq_mode=dq_mode)
        q, k, v, args = x["q"], x["k"], x["v"], _hstu_args(x)

        def f():
            return hstu_attention_triton(q, k, v, *args, check_values=check_values, options=opts)

        return f, [q, k, v], x["dout"]

    return build


PROVIDERS = {
    p.name: p
    for p in (
        Provider("torch_ref", _torch_ref),
        Provider("sdpa_cudnn", _sdpa("CUDNN_ATTENTION")),
        Provider("sdpa_flash", _sdpa("FLASH_ATTENTION")),
        Provider("triton", _triton(), gpu_split=True),
        Provider("triton_atomic", _triton(dq_mode="atomic"), gpu_split=True),
        Provider("triton_nocheck", _triton(check_values=False), gpu_split=True),
    )
}


# ----------------------------------------------------------------------------------------------
# the provider table


def _time_modes(torch, f, leaves, dout, modes) -> dict:
    """{mode: ms}: a warm-up (autotune / compile) call, then each mode's CUDA-event median."""
    res = {}
    out = f()
    out.backward(dout)
    torch.cuda.synchronize()
    for mode in modes:
        if mode == "fwd":
            with torch.no_grad():
                res[mode] = median_ms(f)
        elif mode == "bwd":
            held = f()
            res[mode] = median_ms(lambda held=held: held.backward(dout, retain_graph=True), grad_to_none=leaves)
            del held
        else:
            res[mode] = median_ms(lambda: f().backward(dout), grad_to_none=leaves)
    return res


def _gpu_split(torch, name, f, leaves, dout) -> dict:
    """Host vs GPU: the kernels alone and all GPU work, per forward and per backward ({} if the
    profiler fails: that must not lose the timings)."""
    res = {}
    try:
        with torch.no_grad():
            res["fwd_kernel"], res["fwd_gpu"] = gpu_ms(torch, f)
        held = f()

        def bwd_once():
            # as do_bench's grad_to_none: no accumulation into .grad (3 extra adds per call)
            for t in leaves:
                t.grad = None
            held.backward(dout, retain_graph=True)

        res["bwd_kernel"], res["bwd_gpu"] = gpu_ms(torch, bwd_once)  # (held is freed on return)
    except Exception as e:  # noqa: BLE001 - a profiler problem must not lose the timings
        print(f"  {name}: GPU-only timing failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
    return res


def _bench_provider(torch, provider: Provider, x, modes, options: HstuKernelOptions) -> dict:
    """{mode: ms or None} (and the GPU-only times of the Triton providers)."""
    f, leaves, dout = provider.build(torch, x, options)
    try:
        res = _time_modes(torch, f, leaves, dout, modes)
        if provider.gpu_split and "fwd" in modes and "bwd" in modes:
            res.update(_gpu_split(torch, provider.name, f, leaves, dout))
    except torch.OutOfMemoryError:
        res = {m: None for m in modes}
    except RuntimeError as e:  # e.g. a backend that refuses the shape
        print(f"  {provider.name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        res = {m: None for m in modes}
    finally:
        for t in leaves:
            t.grad = None
        torch.cuda.empty_cache()
    return res


def _table_row(x, lens, nt, dist, nt_val, prov, ms, modes) -> dict:
    H, D, L = x["H"], x["D"], x["L"]
    fwd_flops = mask_pairs(lens, nt) * H * (2 * D + 2 * D)
    sdpa_pairs = lens.numel() * L * (L + 1) // 2  # what the padded causal SDPA computes
    row = dict(
        L=L,
        dist=dist,
        targets=nt_val,
        B=lens.numel(),
        tokens=int(x["q"].shape[0]),
        provider=prov,
        fwd_flops=fwd_flops,
        sdpa_padded_fwd_flops=sdpa_pairs * H * 4 * D,
    )
    for m in modes:
        row[f"{m}_ms"] = ms[m]
        row[f"{m}_tflops"] = (fwd_flops * _MULT[m] / (ms[m] * 1e-3) / 1e12) if ms[m] else None
    for m in ("fwd", "bwd"):
        for part in ("kernel", "gpu"):
            if ms.get(f"{m}_{part}") is not None:
                row[f"{m}_{part}_ms"] = ms[f"{m}_{part}"]
    return row


def _print_table_row(row, ms, modes, t0) -> None:
    cells = "  ".join(f"{m} {ms[m]:.3f}ms {row[m + '_tflops']:.0f}TF" if ms[m] else f"{m} -" for m in modes)
    if "fwd_kernel" in ms:
        cells += (
            f"  [GPU only: fwd kernel {ms['fwd_kernel']:.3f} / all {ms['fwd_gpu']:.3f} ms,"
            f" bwd kernels {ms['bwd_kernel']:.3f} / all {ms['bwd_gpu']:.3f} ms]"
        )
    print(
        f"L={row['L']:5d} {row['dist']:8s} nt={row['targets']:2d} {row['provider']:14s} {cells}"
        f"  ({time.time() - t0:.1f}s)",
        flush=True,
    )


def table(torch, a, options: HstuKernelOptions) -> int:
    """Every provider on every (L, lengths, targets) input; writes a.out after each input."""
    import triton

    modes = a.modes.split(",")
    providers = [PROVIDERS[p] for p in a.providers.split(",")]
    gen = torch.Generator().manual_seed(0)
    mm = matmul_tflops(torch)
    print(f"device {torch.cuda.get_device_name()}  bf16 8192^3 matmul {mm:.0f} TFLOP/s", flush=True)
    rows = []
    for L in map(int, a.lengths.split(",")):
        for dist in a.dists.split(","):
            for nt_val in map(int, a.targets.split(",")):
                x, lens, nt = table_input(torch, L, dist, nt_val, a, gen)
                for prov in providers:
                    t0 = time.time()
                    ms = _bench_provider(torch, prov, x, modes, options)
                    rows.append(_table_row(x, lens, nt, dist, nt_val, prov.name, ms, modes))
                    _print_table_row(rows[-1], ms, modes, t0)
                del x
                torch.cuda.empty_cache()
                write_json(a.out, _result(torch, triton, a, mm, rows, options))  # partial results survive a timeout
    result = _result(torch, triton, a, mm, rows, options)
    write_json(a.out, result)
    print_table(result)
    return 0


def _result(torch, triton, a, mm, rows, options: HstuKernelOptions) -> dict:
    from roo_ref.kernels import hstu_attention as hk

    return dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        matmul_bf16_8192_tflops=mm,
        heads=a.heads,
        dim=a.dim,
        tokens_per_batch=a.tokens,
        dtype="bfloat16",
        flops_rule="mask-aware: per head and allowed (i,j) pair 2*d_qk + 2*d_v forward; bwd = 2.5x fwd",
        autotune=not a.no_autotune,
        dq_mode_default=options.dq_mode,
        kernel_options=options.to_dict(),
        defaults=hk.default_configs(),
        rows=rows,
    )


def print_table(result) -> None:
    """Per (L, lengths, targets): each provider's fwd / bwd / fwd+bwd TFLOP/s from CUDA-event times,
    then Triton's fwd+bwd as a percentage of the same-run matmul, from the event time and from the GPU
    time (torch.profiler's GPU timeline: the forward's and the backward's GPU work summed). The
    second is the robust one for short calls: a 0.2-0.4 ms forward's event time also counts its host
    side, which jumped 1.5-3x between runs on the H100 while its GPU time moved 1-2% (docs/notebook/perf.md)."""
    rows = result["rows"]
    mm = result["matmul_bf16_8192_tflops"]
    provs = list(dict.fromkeys(r["provider"] for r in rows))
    print(f"\n{result['device']}: TFLOP/s (mask-aware), fwd / bwd / fwd+bwd; matmul {mm:.0f} TFLOP/s")
    print("L     dist     nt | " + " | ".join(f"{p:>20s}" for p in provs) + " | triton %mm event / GPU time")
    keys = list(dict.fromkeys((r["L"], r["dist"], r["targets"]) for r in rows))
    for key in keys:
        cells = []
        tri = tri_gpu = None
        for p in provs:
            r = next((r for r in rows if (r["L"], r["dist"], r["targets"], r["provider"]) == (*key, p)), None)
            vals = [r.get(f"{m}_tflops") if r else None for m in MODES]
            cells.append("/".join(f"{v:.0f}" if v else "-" for v in vals).rjust(20))
            if p in ("triton", "triton_nocheck") and r and r.get("fwdbwd_tflops"):  # as called by the model if run
                tri = r["fwdbwd_tflops"]
                if r.get("fwd_gpu_ms") and r.get("bwd_gpu_ms"):
                    tri_gpu = 3.5 * r["fwd_flops"] / ((r["fwd_gpu_ms"] + r["bwd_gpu_ms"]) * 1e-3) / 1e12
        pct = " / ".join(f"{100 * t / mm:.0f}%" if t else "-" for t in (tri, tri_gpu))
        print(f"{key[0]:<5d} {key[1]:8s} {key[2]:2d} | " + " | ".join(cells) + f" | {pct}")
