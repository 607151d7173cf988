"""Kernel variants: named option sets (VARIANTS, or NAME:key=value;... specs) -> HstuKernelOptions,
the sweep that times each on each input with its compiled kernels' registers / spills / shared
memory, and the single fwd+bwd run a profiler attaches to (see benchmarks.hstu_kernel)."""

from __future__ import annotations

from benchmarks.hstu_kernel.inputs import kernel_input, matmul_tflops, median_ms, write_json
from roo_ref.kernels.options import HstuKernelOptions, parse_config

# ----------------------------------------------------------------------------------------------
# variants for --sweep: name -> the options fields it changes (kernels it does not name keep their
# defaults)

VARIANTS: dict[str, dict] = {
    "default": {},
    "dq-atomic": {"dq_mode": "atomic"},
    "dq-kernel": {"dq_mode": "kernel"},
    "fwd-64x64x4w3": {"fwd_config": (64, 64, 4, 3)},
    "fwd-64x32x4w3": {"fwd_config": (64, 32, 4, 3)},
    "bwd-64x128x8w3": {"bwd_config": (64, 128, 8, 3)},
    "bwd-64x64x4w2": {"bwd_config": (64, 64, 4, 2)},
    "dq-128x64x8w2": {"dq_config": (128, 64, 8, 2)},
}
_VARIANT_KEYS = {
    "dq_mode": ("dq_mode", str),
    "time_grad": ("time_grad", str),
    "silu": ("silu", str),
    "autotune": ("autotune", lambda v: {"1": True, "0": False}.get(v, v)),
}


def parse_variant(text: str, base: HstuKernelOptions | None = None) -> tuple[str, HstuKernelOptions]:
    """A registered variant name, or "name:key=value;..." -> (name, options: base with the changes).
    Keys: dq_mode, time_grad, silu, autotune (0/1), fwd / bwd / dq (a config
    "BLOCK_M,BLOCK_N,num_warps,num_stages"). ValueError on an unknown name, key or value."""
    base = base or HstuKernelOptions()
    if ":" not in text:
        if text not in VARIANTS:
            raise ValueError(f"unknown variant {text!r}; registered: {', '.join(VARIANTS)} (or NAME:key=value;...)")
        return text, base.replace(**VARIANTS[text])
    name, _, body = text.partition(":")
    changes: dict = {}
    for item in filter(None, body.split(";")):
        key, _, val = item.partition("=")
        if key in ("fwd", "bwd", "dq"):
            changes[f"{key}_config"] = parse_config(val, f"variant {name!r} {key}")
        elif key in _VARIANT_KEYS:
            field, conv = _VARIANT_KEYS[key]
            changes[field] = conv(val)
        else:
            keys = ", ".join([*_VARIANT_KEYS, "fwd", "bwd", "dq"])
            raise ValueError(f"variant {text!r}: bad item {item!r}; keys: {keys}")
    try:
        return name or "default", base.replace(**changes)
    except ValueError as e:
        raise ValueError(f"variant {text!r}: {e}") from None


def _compiled_info(compiled: dict, kind: str) -> dict:
    c = compiled.get(kind)
    meta = getattr(c, "metadata", None)
    return dict(
        regs=getattr(c, "n_regs", None), spills=getattr(c, "n_spills", None), smem=getattr(meta, "shared", None)
    )


def _sweep_variant(torch, x, options: HstuKernelOptions) -> dict:
    """fwd and bwd ms of one variant on input x, and each launched kernel's registers / spills /
    shared memory."""
    from roo_ref.kernels.hstu_attention import hstu_attention_triton

    q, k, v, do, args = x["q"], x["k"], x["v"], x["dout"], x["args"]
    compiled: dict = {}

    def call():
        return hstu_attention_triton(q, k, v, *args, check_values=False, options=options, compiled=compiled)

    try:
        with torch.no_grad():
            res = {"fwd_ms": median_ms(call)}
        out = call()
        res["bwd_ms"] = median_ms(lambda: out.backward(do, retain_graph=True), grad_to_none=[q, k, v])
        for kind in ("fwd", "bwd", "dq"):
            res[kind] = _compiled_info(compiled, kind)
        return res
    finally:
        for t in (q, k, v):
            t.grad = None


def run_once(torch, a, options: HstuKernelOptions) -> int:
    """The Triton kernels' forward and backward, a.once times, on the first L and lengths of a.lengths /
    a.dists with the last of a.targets, and nothing else on the GPU: a short program for a profiler
    (e.g. ncu --kernel-name regex:_hstu) or compute-sanitizer to attach to."""
    from roo_ref.kernels.hstu_attention import hstu_attention_triton

    L, dist = int(a.lengths.split(",")[0]), a.dists.split(",")[0]
    x, fl = kernel_input(torch, L, dist, int(a.targets.split(",")[-1]), a, torch.Generator().manual_seed(0))
    for _ in range(a.once):
        out = hstu_attention_triton(x["q"], x["k"], x["v"], *x["args"], check_values=False, options=options)
        out.backward(x["dout"])
    torch.cuda.synchronize()
    print(f"once: L={L} {dist} {a.once}x fwd+bwd, {fl / 1e9:.1f} GFLOP forward (mask-aware)", flush=True)
    return 0


def _sweep_row(torch, x, fl, L, dist, nt_val, name, options, mm) -> dict:
    row = dict(L=L, dist=dist, targets=nt_val, variant=name, fwd_flops=fl)
    try:
        row.update(_sweep_variant(torch, x, options))
    except Exception as e:  # noqa: BLE001 - one failing variant must not end the sweep
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"sweep L={L} {dist:8s} {name:18s} FAILED {row['error']}", flush=True)
        return row
    row["fwd_tflops"] = fl / row["fwd_ms"] / 1e9
    row["bwd_tflops"] = 2.5 * fl / row["bwd_ms"] / 1e9
    row["fwdbwd_tflops"] = 3.5 * fl / (row["fwd_ms"] + row["bwd_ms"]) / 1e9
    row["fwdbwd_pct_matmul"] = 100 * row["fwdbwd_tflops"] / mm
    f, bw = row["fwd"], row["bwd"]
    print(
        f"sweep L={L} {dist:8s} {name:18s} fwd {row['fwd_ms']:.3f}ms {row['fwd_tflops']:.0f}TF"
        f"  bwd {row['bwd_ms']:.3f}ms {row['bwd_tflops']:.0f}TF"
        f"  fwd+bwd {row['fwdbwd_tflops']:.0f}TF ({row['fwdbwd_pct_matmul']:.0f}%)"
        f"  regs/spills/smem fwd {f['regs']}/{f['spills']}/{f['smem']}"
        f" bwd {bw['regs']}/{bw['spills']}/{bw['smem']}",
        flush=True,
    )
    return row


def sweep(torch, a, base: HstuKernelOptions) -> int:
    """Each kernel variant (configs, dq mode, silu, ...) on each (L, lengths) input with the last of
    a.targets: fwd and bwd ms (CUDA-event median, called as the model calls the kernel:
    check_values=False), TFLOP/s, and each compiled kernel's registers, spills and shared memory.
    Writes a.out (JSON) after every input."""
    specs = a.variant or list(VARIANTS)
    variants = [parse_variant(v, base) for v in specs]
    gen = torch.Generator().manual_seed(0)
    mm = matmul_tflops(torch)
    print(f"device {torch.cuda.get_device_name()}  bf16 8192^3 matmul {mm:.0f} TFLOP/s", flush=True)
    nt_val = int(a.targets.split(",")[-1])
    rows = []
    for L in map(int, a.lengths.split(",")):
        for dist in a.dists.split(","):
            x, fl = kernel_input(torch, L, dist, nt_val, a, gen)
            if not rows:
                # a discarded first run: the first variant timed runs 10-70% slow in the forward
                # (docs/notebook/perf.md), as if the GPU were still warming up
                _sweep_variant(torch, x, variants[0][1])
            rows += [_sweep_row(torch, x, fl, L, dist, nt_val, name, opts, mm) for name, opts in variants]
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
                variant_options={name: opts.to_dict() for name, opts in variants},
                rows=rows,
            )
            write_json(a.out, result)
    return 0
