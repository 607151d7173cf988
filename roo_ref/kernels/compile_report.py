"""Registers, spills and shared memory of the HSTU attention kernels, compiled for a GPU without one.

Triton compiles a kernel for a target it is told about (here sm_90, an H100); ptxas -v then reports
what the GPU's own compile would report at launch (the n_regs / n_spills of the compiled kernels
that hstu_attention_triton(compiled=...) hands back). That is enough to see a register-starved
config or one whose shared memory exceeds the SM's 227 KB before running it on a GPU
(docs/notebook/perf.md). Pointer arguments are declared 16-byte aligned and strides divisible by 16, as a
real launch specializes them; without that Triton cannot vectorize the loads and the numbers are
meaningless.

The Triton on this machine may differ from the GPU machine's (3.9 here, 3.6 there): register and
spill counts agree in order of magnitude, not exactly, and shared memory can differ a lot (3.9
sizes the default backward config at 256 KB, which 3.6 launched on the H100); docs/notebook/perf.md compares.
The kernel options (HstuKernelOptions: silu form, time-gradient mode) are arguments, as at a launch.

  python -m roo_ref.kernels.compile_report --kind bwd --config 64,128,8,3 --config 32,128,8,2 --rab
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from roo_ref.kernels.options import HstuKernelOptions, parse_config

KINDS = ("fwd", "bwd", "dq")
# the kernels' FAST constexpr for options.silu on a bf16 GPU launch (see hstu_attention._fast)
_FAST = {"fast": 1, "exact": 0, "tanh_exact": 2}
SMEM_LIMIT_SM90 = 232448  # bytes of shared memory one block may use on an H100 (227 KB)


def _ptxas() -> str | None:
    """A ptxas that reads the PTX this Triton writes: Triton's bundled ones (newest first), then PATH."""
    import triton

    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name in ("ptxas-blackwell", "ptxas"):
        p = os.path.join(bindir, name)
        if os.access(p, os.X_OK):
            return p
    return shutil.which("ptxas")


def _signature(fn, constexprs: dict) -> tuple[dict, dict]:
    """Triton argument types for the kernel's arguments, and the alignment attributes of a launch."""
    ints = {"P", "T", "max_len", "max_len_bucket"}
    ptr_types = {"seq_info": "*i64", "POS": "*i64", "TS": "*i64"}
    fp32_ptrs = {"PW", "TW", "DQA", "DPW", "DTW"}
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ("alpha", "inv_norm"):
            sig[name] = "fp32"
        elif name in ints or name.startswith("stride"):
            sig[name] = "i32"
        elif name in ptr_types:
            sig[name] = ptr_types[name]
        elif name in fp32_ptrs:
            sig[name] = "*fp32"
        else:  # Q, K, V, O, DO, DK, DV, DQ: the bf16 activations
            sig[name] = "*bf16"
        if sig[name].startswith("*") or name.startswith("stride"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def _constexprs(kind, config, arg_names, head_dim, rab, atomic_dq, options, copies) -> dict:
    """The kernel's constexpr arguments as a bf16 launch with these options sets them."""
    bm, bn, _, _ = config
    consts = dict(
        D_QK=head_dim,
        D_V=head_dim,
        HAS_POS=rab,
        HAS_TIME=rab,
        PREC="tf32",
        BLOCK_M=bm,
        BLOCK_N=bn,
        # bf16 uses tanh.approx (options.silu "fast"); the backward with bias gradients the exact sigmoid
        FAST=0 if (rab and kind == "bwd") else _FAST[options.silu],
    )
    if kind == "bwd":
        consts.update(
            GRAD_POS=rab,
            GRAD_TIME=rab,
            ATOMIC_DQ=atomic_dq,
            N_COPIES=copies,
            TIME_REDUCE=rab and options.time_grad == "reduce",
        )
    return {k: v for k, v in consts.items() if k in arg_names}


def compile_report(
    kind: str,
    config: tuple[int, int, int, int],
    *,
    head_dim: int = 128,
    rab: bool = False,
    atomic_dq: bool = False,
    options: HstuKernelOptions | None = None,
) -> dict:
    """Compile one kernel for sm_90 as a bf16 launch with these options (None: the defaults) and
    return {"regs", "spill_store_bytes", "spill_load_bytes", "shared_bytes", "fits_smem", ...}
    (ValueError on a bad kind; RuntimeError if no ptxas is found)."""
    options = options or HstuKernelOptions()
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}; allowed: {', '.join(KINDS)}")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from roo_ref.kernels import hstu_attention as hk

    ptxas = _ptxas()
    if ptxas is None:
        raise RuntimeError("no ptxas found (Triton's nvidia backend ships one; is this a CPU-only Triton?)")
    fn = hk.KERNELS[kind]
    _, _, warps, stages = config
    consts = _constexprs(kind, config, fn.arg_names, head_dim, rab, atomic_dq, options, hk.RAB_GRAD_COPIES)
    sig, attrs = _signature(fn, consts)
    src = ASTSource(
        fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}, attrs=attrs
    )
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        with open(path, "w") as fh:
            fh.write(compiled.asm["ptx"])
        res = subprocess.run(
            [ptxas, "-v", "--gpu-name=sm_90a", path, "-o", os.path.join(d, "k.cubin")], capture_output=True, text=True
        )
    text = res.stdout + res.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if res.returncode != 0 or regs is None or spills is None:
        raise RuntimeError(f"ptxas failed ({ptxas}): {text.strip()[:500]}")
    shared = int(compiled.metadata.shared)
    return {
        "kind": kind,
        "config": list(config),
        "rab": rab,
        "time_reduce": options.time_grad == "reduce" and rab,
        "atomic_dq": atomic_dq,
        "silu": options.silu,
        "regs": int(regs.group(1)),
        "spill_store_bytes": int(spills.group(1)),
        "spill_load_bytes": int(spills.group(2)),
        "shared_bytes": shared,
        "fits_smem": shared <= SMEM_LIMIT_SM90,
        "triton": triton.__version__,
    }


def _config(text: str) -> tuple[int, int, int, int]:
    try:
        return parse_config(text, "--config")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=KINDS, default="bwd")
    p.add_argument(
        "--config",
        type=_config,
        action="append",
        help="BLOCK_M,BLOCK_N,num_warps,num_stages (repeatable; default: the kernel's default)",
    )
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--rab", action="store_true", help="relative attention bias (with its gradients in bwd)")
    p.add_argument(
        "--time-grad",
        choices=("reduce", "atomic"),
        default="reduce",
        help="bwd with --rab: the time-bucket gradient mode (HstuKernelOptions.time_grad; default reduce)",
    )
    p.add_argument("--atomic-dq", action="store_true", help="bwd: dq by atomics in the dk/dv kernel")
    p.add_argument(
        "--silu",
        choices=tuple(_FAST),
        default="fast",
        help="HstuKernelOptions.silu: fast (tanh form, tanh.approx; default), exact (sigmoid), tanh_exact",
    )
    p.add_argument("--fast", choices=("1", "0"), help="the same as --silu fast (1) / exact (0)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from roo_ref.kernels import hstu_attention as hk

    silu = {"1": "fast", "0": "exact"}[a.fast] if a.fast else a.silu
    options = HstuKernelOptions(time_grad=a.time_grad, silu=silu)
    configs = a.config or hk._configs(a.kind, options, a.atomic_dq)[:1]
    rows = []
    for cfg in configs:
        try:
            r = compile_report(
                a.kind,
                cfg,
                head_dim=a.head_dim,
                rab=a.rab,
                atomic_dq=a.atomic_dq,
                options=options,
            )
        except (RuntimeError, ValueError) as e:
            print(f"compile_report: {e}", file=sys.stderr)
            return 2
        rows.append(r)
        if not a.json:
            print(
                f"{a.kind} {cfg}: {r['regs']} registers, spills {r['spill_store_bytes']} B stored / "
                f"{r['spill_load_bytes']} B loaded, shared {r['shared_bytes'] / 1024:.0f} KB"
                f"{'' if r['fits_smem'] else ' (over the 227 KB an H100 block may use, as this Triton sizes it)'}",
                flush=True,
            )
    if a.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
