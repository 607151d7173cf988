"""Benchmark: jagged HSTU attention, Triton kernel vs torch reference vs padded SDPA (tritonbench style).

Providers x inputs; each cell is the CUDA-event median of triton.testing.do_bench:
  torch_ref      roo_ref.attention.hstu_attention_torch (padded explicit matmuls, target-aware mask)
  sdpa_cudnn     F.scaled_dot_product_attention, cuDNN backend, softmax, padded dense [B, H, L, D], causal
  sdpa_flash     same, flash backend
  triton         roo_ref.kernels.hstu_attention, its defaults (dq by fp32 atomics in the dk/dv kernel
                 at L >= 2048, by its own kernel below)
  triton_atomic  same, dq by atomics at every L
  triton_nocheck triton as the HSTU model calls it: check_values=False, no device->host sync per call
Inputs: bf16, H heads, head dim D, ~131k tokens per batch; L x targets x {uniform: all L,
jagged: lengths uniform in [L/2, L]}. SDPA runs on the padded [B, L] batch with a plain causal mask
(it has no target-aware mask) and without the jagged<->padded copies: a lower bound on its cost.

FLOPs (mask-aware, the same count for every provider): per head and allowed (i, j) pair of the
HSTU mask, 2*d_qk (q k^T) + 2*d_v (A v) forward; backward = 2.5x forward; fwd+bwd = 3.5x.
Allowed pairs of a sequence with n tokens, nt targets, h = n - nt: h(h+1)/2 + nt*h + nt.
Also measured in the same run: an 8192^3 bf16 matmul (random data), TFLOP/s = 2*8192^3 / t.
For the Triton providers, also the GPU-only time per forward and per backward from torch.profiler's
device timeline (the HSTU kernels alone, and all GPU work of the call): the gap between a call's
event time and its GPU time is host-side (checks, argument handling, launches).

  PYTHONPATH=. python -m roo_ref.kernels.bench_hstu --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

MODES = ("fwd", "bwd", "fwdbwd")
PROVIDERS = ("torch_ref", "sdpa_cudnn", "sdpa_flash", "triton", "triton_atomic", "triton_nocheck")


def _lengths(L: int, dist: str, tokens: int, gen):
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


def _time(fn, grad_to_none=None):
    import triton

    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median")


def _matmul_rate(torch):
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = _time(lambda: a @ b)
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def _gpu_ms(torch, fn, n=10):
    """(GPU time of the HSTU kernels, GPU time of every kernel/copy/fill) per call of fn, ms, from
    torch.profiler's device timeline: what the call costs on the GPU without its host-side time
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


def _bench_provider(torch, provider, x, modes):
    """Returns {mode: ms or None}."""
    import torch.nn.functional as F

    from roo_ref.attention import hstu_attention_torch
    from roo_ref.kernels import hstu_attention as hk

    res = {}
    dq_mode = hk.DQ_MODE  # triton_atomic overrides it for its own run only
    if provider.startswith("sdpa"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = SDPBackend.CUDNN_ATTENTION if provider == "sdpa_cudnn" else SDPBackend.FLASH_ATTENTION
        B, L, H, D = x["B"], x["L"], x["H"], x["D"]
        qp, kp, vp = (
            torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        )
        dout = torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16)

        def f():
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

        leaves = [qp, kp, vp]
    else:
        q, k, v = x["q"], x["k"], x["v"]
        args = (x["offsets"], x["L"], x["alpha"], float(x["L"]), x["nt"])
        if provider == "torch_ref":

            def f():
                return hstu_attention_torch(q, k, v, *args)
        else:
            if provider == "triton_atomic":
                hk.DQ_MODE = "atomic"
            kw = {"check_values": False} if provider == "triton_nocheck" else {}

            def f():
                return hk.hstu_attention_triton(q, k, v, *args, **kw)

        dout = x["dout"]
        leaves = [q, k, v]
    try:
        out = f()  # warm-up / autotune / compile
        out.backward(dout)
        torch.cuda.synchronize()
        for mode in modes:
            if mode == "fwd":
                with torch.no_grad():
                    res[mode] = _time(f)
            elif mode == "bwd":
                held = f()
                res[mode] = _time(lambda held=held: held.backward(dout, retain_graph=True), grad_to_none=leaves)
                del held
            else:
                res[mode] = _time(lambda: f().backward(dout), grad_to_none=leaves)
        if provider.startswith("triton") and "fwd" in modes and "bwd" in modes:
            # host vs GPU: the kernels alone and all GPU work, per forward and per backward
            try:
                with torch.no_grad():
                    res["fwd_kernel"], res["fwd_gpu"] = _gpu_ms(torch, f)
                held = f()

                def bwd_once():
                    # as do_bench's grad_to_none: no accumulation into .grad (3 extra adds per call)
                    for t in leaves:
                        t.grad = None
                    held.backward(dout, retain_graph=True)

                k, g = _gpu_ms(torch, bwd_once)
                res["bwd_kernel"], res["bwd_gpu"] = k, g
                del held
            except Exception as e:  # noqa: BLE001 - a profiler problem must not lose the timings
                print(f"  {provider}: GPU-only timing failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
    except torch.OutOfMemoryError:
        res = {m: None for m in modes}
    except RuntimeError as e:  # e.g. a backend that refuses the shape
        print(f"  {provider}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        res = {m: None for m in modes}
    finally:
        hk.DQ_MODE = dq_mode
        for t in leaves:
            t.grad = None
        torch.cuda.empty_cache()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="256,512,1024,2048,4096")
    p.add_argument("--targets", default="0,32")
    p.add_argument("--dists", default="uniform,jagged")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--no-autotune", action="store_true", help="use the kernels' default configs")
    p.add_argument("--sweep", action="store_true", help="time kernel variants (configs, loops, dq mode) and exit")
    p.add_argument(
        "--variant", action="append", help="with --sweep: NAME:key=value;... (repeatable; see DEFAULT_VARIANTS)"
    )
    p.add_argument(
        "--once",
        type=int,
        default=0,
        metavar="N",
        help="run the Triton fwd+bwd N times on the first length / dist / last target count and exit (for ncu)",
    )
    p.add_argument("--out", default="bench_hstu.json")
    a = p.parse_args(argv)
    if not a.no_autotune and not a.sweep and not a.once:
        # (the sweep times each variant as given: kernels a variant does not name keep their defaults)
        os.environ["ROO_HSTU_AUTOTUNE"] = "1"

    import torch
    import triton

    from roo_ref.kernels import hstu_attention as hk

    if not torch.cuda.is_available():
        print("bench_hstu needs a CUDA device", file=sys.stderr)
        return 2
    if a.once:
        return run_once(torch, hk, a)
    if a.sweep:
        return sweep(torch, hk, a)
    modes = a.modes.split(",")
    providers = a.providers.split(",")
    gen = torch.Generator().manual_seed(0)
    mm = _matmul_rate(torch)
    print(f"device {torch.cuda.get_device_name()}  bf16 8192^3 matmul {mm:.0f} TFLOP/s", flush=True)
    rows = []
    for L in map(int, a.lengths.split(",")):
        for dist in a.dists.split(","):
            for nt_val in map(int, a.targets.split(",")):
                lens = _lengths(L, dist, a.tokens, gen)
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
                fwd_flops = mask_pairs(lens, nt) * H * (2 * D + 2 * D)
                sdpa_pairs = lens.numel() * L * (L + 1) // 2  # what the padded causal SDPA computes
                mult = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}
                for prov in providers:
                    t0 = time.time()
                    ms = _bench_provider(torch, prov, x, modes)
                    row = dict(
                        L=L,
                        dist=dist,
                        targets=nt_val,
                        B=lens.numel(),
                        tokens=T,
                        provider=prov,
                        fwd_flops=fwd_flops,
                        sdpa_padded_fwd_flops=sdpa_pairs * H * 4 * D,
                    )
                    for m in modes:
                        row[f"{m}_ms"] = ms[m]
                        row[f"{m}_tflops"] = (fwd_flops * mult[m] / (ms[m] * 1e-3) / 1e12) if ms[m] else None
                    for m in ("fwd", "bwd"):
                        for part in ("kernel", "gpu"):
                            if ms.get(f"{m}_{part}") is not None:
                                row[f"{m}_{part}_ms"] = ms[f"{m}_{part}"]
                    rows.append(row)
                    cells = "  ".join(
                        f"{m} {ms[m]:.3f}ms {row[m + '_tflops']:.0f}TF" if ms[m] else f"{m} -" for m in modes
                    )
                    if "fwd_kernel" in ms:
                        cells += (
                            f"  [GPU only: fwd kernel {ms['fwd_kernel']:.3f} / all {ms['fwd_gpu']:.3f} ms,"
                            f" bwd kernels {ms['bwd_kernel']:.3f} / all {ms['bwd_gpu']:.3f} ms]"
                        )
                    print(
                        f"L={L:5d} {dist:8s} nt={nt_val:2d} {prov:14s} {cells}  ({time.time() - t0:.1f}s)",
                        flush=True,
                    )
                del x
                torch.cuda.empty_cache()
                _write(a.out, _result(torch, triton, hk, a, mm, rows))  # partial results survive a timeout
    result = _result(torch, triton, hk, a, mm, rows)
    _write(a.out, result)
    print_table(result)
    return 0


def _result(torch, triton, hk, a, mm, rows) -> dict:
    tuned = {}
    for key, kern in hk._cache.items():
        if hasattr(kern, "cache") and kern.cache:
            tuned[key[0]] = {str(k): str(v) for k, v in kern.cache.items()}
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
        dq_mode_default=hk.DQ_MODE,
        defaults={
            **hk._DEFAULTS,
            "bwd (dq kernel)": hk._DEFAULT_BWD_DQ_KERNEL,
            f"fwd (L < {hk.SHORT_LEN})": hk._DEFAULT_FWD_SHORT,
        },
        rows=rows,
    )


def _write(path, result) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=d, delete=False, suffix=".tmp") as fh:
        json.dump(result, fh, indent=1)
    os.replace(fh.name, path)


# Kernel variants for --sweep: "name:key=value;key=value". Keys: one_loop (0/1), dq_mode
# (kernel/atomic), fast (1 / sigmoid / 0: silu in the tanh form, tanh.approx in the sigmoid form,
# exact: ROO_HSTU_FAST), fwd / bwd / dq (a config
# "BLOCK_M,BLOCK_N,num_warps,num_stages"). Unset keys keep the module's defaults.
DEFAULT_VARIANTS = (
    "default:",
    "loop-per-range:one_loop=0",
    "sigmoid:fast=sigmoid",
    "dq-atomic:dq_mode=atomic",
    "dq-kernel:dq_mode=kernel",
    "fwd-64x64x4w3:fwd=64,64,4,3",
    "fwd-64x32x4w3:fwd=64,32,4,3",
    "bwd-64x128x8w3:bwd=64,128,8,3",
    "bwd-64x64x4w2:bwd=64,64,4,2",
    "dq-128x64x8w2:dq=128,64,8,2",
)


def parse_variant(text: str, hk) -> tuple[str, dict]:
    """ "name:key=value;..." -> (name, {module attribute: value}); ValueError on an unknown key."""
    name, _, body = text.partition(":")
    cfg = {}
    attrs: dict = {}
    for item in filter(None, body.split(";")):
        key, _, val = item.partition("=")
        if key == "one_loop" and val in ("0", "1"):
            attrs["ONE_LOOP"] = val == "1"
        elif key == "dq_mode" and val in ("kernel", "atomic", "auto"):
            attrs["DQ_MODE"] = val
        elif key == "fast" and val in ("0", "1", "sigmoid"):
            attrs["env:ROO_HSTU_FAST"] = val
        elif key in ("fwd", "bwd", "dq"):
            cfg[key] = hk.parse_config(val, f"variant {name!r} {key}")
        else:
            raise ValueError(f"variant {text!r}: bad item {item!r}; keys: one_loop, dq_mode, fast, fwd, bwd, dq")
    attrs["FORCE_CONFIG"] = cfg or None  # kinds not named keep their defaults
    return name or "default", attrs


def _compiled_info(hk, kind):
    c = hk.LAST_COMPILED.get(kind)
    meta = getattr(c, "metadata", None)
    return dict(
        regs=getattr(c, "n_regs", None), spills=getattr(c, "n_spills", None), smem=getattr(meta, "shared", None)
    )


def _sweep_variant(torch, hk, x, attrs) -> dict:
    """fwd and bwd ms of one variant on input x (module attributes / env set from attrs, restored)."""
    saved = {k: getattr(hk, k) for k in attrs if not k.startswith("env:")}
    q, k, v, do, args = x["q"], x["k"], x["v"], x["dout"], x["args"]

    def call():
        return hk.hstu_attention_triton(q, k, v, *args, check_values=False)

    try:
        for key, val in attrs.items():
            if key.startswith("env:"):
                os.environ[key[4:]] = val
            else:
                setattr(hk, key, val)
        with torch.no_grad():
            res = {"fwd_ms": _time(call)}
        out = call()
        res["bwd_ms"] = _time(lambda: out.backward(do, retain_graph=True), grad_to_none=[q, k, v])
        for kind in ("fwd", "bwd", "dq"):
            res[kind] = _compiled_info(hk, kind)
        return res
    finally:
        for key in attrs:
            if key.startswith("env:"):
                os.environ.pop(key[4:], None)
        for key, val in saved.items():
            setattr(hk, key, val)
        hk.LAST_COMPILED.clear()
        for t in (q, k, v):
            t.grad = None


def _kernel_input(torch, L, dist, nt_val, a, gen):
    """({q, k, v, dout, args}, mask-aware forward FLOPs): one bf16 batch as the model calls the kernel."""
    lens = _lengths(L, dist, a.tokens, gen)
    nt = lens.clamp(max=nt_val)
    offs = torch.zeros(lens.numel() + 1, dtype=torch.int64)
    offs[1:] = lens.cumsum(0)
    T, H, D = int(offs[-1]), a.heads, a.dim
    x = {n: torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16) for n in ("q", "k", "v", "dout")}
    for n in ("q", "k", "v"):
        x[n].requires_grad_(True)
    x["args"] = (offs.cuda(), L, 1.0 / D**0.5, float(L), nt.cuda())
    return x, mask_pairs(lens, nt) * H * 4 * D


def run_once(torch, hk, a) -> int:
    """The Triton kernels' forward and backward, a.once times, on the first L and lengths of a.lengths /
    a.dists with the last of a.targets, and nothing else on the GPU: a short program for a profiler
    (e.g. ncu --kernel-name regex:_hstu) or compute-sanitizer to attach to."""
    L, dist = int(a.lengths.split(",")[0]), a.dists.split(",")[0]
    x, fl = _kernel_input(torch, L, dist, int(a.targets.split(",")[-1]), a, torch.Generator().manual_seed(0))
    for _ in range(a.once):
        out = hk.hstu_attention_triton(x["q"], x["k"], x["v"], *x["args"], check_values=False)
        out.backward(x["dout"])
    torch.cuda.synchronize()
    print(f"once: L={L} {dist} {a.once}x fwd+bwd, {fl / 1e9:.1f} GFLOP forward (mask-aware)", flush=True)
    return 0


def sweep(torch, hk, a) -> int:
    """Each kernel variant (configs, one loop or a loop per mask range, dq mode, silu) on each
    (L, lengths) input with the last of a.targets: fwd and bwd ms (CUDA-event median, called as the
    model calls the kernel: check_values=False), TFLOP/s, and each compiled kernel's registers,
    spills and shared memory. Writes a.out (JSON) after every input."""
    specs = a.variant or list(DEFAULT_VARIANTS)
    variants = [parse_variant(v, hk) for v in specs]
    gen = torch.Generator().manual_seed(0)
    mm = _matmul_rate(torch)
    print(f"device {torch.cuda.get_device_name()}  bf16 8192^3 matmul {mm:.0f} TFLOP/s", flush=True)
    nt_val = int(a.targets.split(",")[-1])
    rows = []
    for L in map(int, a.lengths.split(",")):
        for dist in a.dists.split(","):
            x, fl = _kernel_input(torch, L, dist, nt_val, a, gen)
            if not rows:
                # a discarded first run: the first variant timed ran 10-70% slow in the forward
                # (campaign 5 calls 1-2, docs/perf.md exp. 17), as if the GPU were still warming up
                _sweep_variant(torch, hk, x, variants[0][1])
            for name, attrs in variants:
                row = dict(L=L, dist=dist, targets=nt_val, variant=name, fwd_flops=fl)
                try:
                    row.update(_sweep_variant(torch, hk, x, attrs))
                except Exception as e:  # noqa: BLE001 - one failing variant must not end the sweep
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                    print(f"sweep L={L} {dist:8s} {name:18s} FAILED {row['error']}", flush=True)
                    rows.append(row)
                    continue
                row["fwd_tflops"] = fl / row["fwd_ms"] / 1e9
                row["bwd_tflops"] = 2.5 * fl / row["bwd_ms"] / 1e9
                row["fwdbwd_tflops"] = 3.5 * fl / (row["fwd_ms"] + row["bwd_ms"]) / 1e9
                row["fwdbwd_pct_matmul"] = 100 * row["fwdbwd_tflops"] / mm
                rows.append(row)
                f, bw = row["fwd"], row["bwd"]
                print(
                    f"sweep L={L} {dist:8s} {name:18s} fwd {row['fwd_ms']:.3f}ms {row['fwd_tflops']:.0f}TF"
                    f"  bwd {row['bwd_ms']:.3f}ms {row['bwd_tflops']:.0f}TF"
                    f"  fwd+bwd {row['fwdbwd_tflops']:.0f}TF ({row['fwdbwd_pct_matmul']:.0f}%)"
                    f"  regs/spills/smem fwd {f['regs']}/{f['spills']}/{f['smem']}"
                    f" bwd {bw['regs']}/{bw['spills']}/{bw['smem']}",
                    flush=True,
                )
            del x
            torch.cuda.empty_cache()
            result = dict(
                device=torch.cuda.get_device_name(),
                torch=torch.__version__,
                matmul_bf16_8192_tflops=mm,
                heads=a.heads,
                dim=a.dim,
                tokens_per_batch=a.tokens,
                variants=specs,
                rows=rows,
            )
            _write(a.out, result)
    return 0


def print_table(result) -> None:
    """Per (L, lengths, targets): each provider's fwd / bwd / fwd+bwd TFLOP/s from CUDA-event times,
    then Triton's fwd+bwd as a percentage of the same-run matmul, from the event time and from the GPU
    time (torch.profiler's device timeline: the forward's and the backward's GPU work summed). The
    second is the robust one for short calls: a 0.2-0.4 ms forward's event time also counts its host
    side, which jumped 1.5-3x between runs on the H100 while its GPU time moved 1-2% (docs/perf.md,
    exp. 19)."""
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


if __name__ == "__main__":
    sys.exit(main())
