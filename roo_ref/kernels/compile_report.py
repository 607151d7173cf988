"""Registers, spills and shared memory of the HSTU attention kernels, compiled for a GPU without one.

Triton compiles a kernel for a target it is told about (here sm_90, an H100); ptxas -v then reports
what the GPU's own compile would report at launch (LAST_COMPILED's n_regs / n_spills). That is
enough to see a register-starved config or one whose shared memory exceeds the SM's 227 KB before
spending device time on it (docs/perf.md, exp. 12). Pointer arguments are declared 16-byte aligned
and strides divisible by 16, as a real launch specializes them; without that Triton cannot
vectorize the loads and the numbers are meaningless.

The Triton on this machine may differ from the GPU machine's (3.9 here, 3.6 there): register and
spill counts agree in order of magnitude, not exactly, and shared memory can differ a lot (3.9
sizes the default backward config at 256 KB, which 3.6 launched on the H100); exp. 12 compares.

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

KINDS = ("fwd", "bwd", "dq")
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


def compile_report(
    kind: str,
    config: tuple[int, int, int, int],
    *,
    head_dim: int = 128,
    rab: bool = False,
    time_reduce: bool = True,
    atomic_dq: bool = False,
    one_loop: bool = True,
    fast: str = "1",
) -> dict:
    """Compile one kernel for sm_90 and return {"regs", "spill_store_bytes", "spill_load_bytes",
    "shared_bytes", "fits_smem"} (ValueError on a bad kind; RuntimeError if no ptxas is found)."""
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
    bm, bn, warps, stages = config
    consts = dict(
        D_QK=head_dim,
        D_V=head_dim,
        HAS_POS=rab,
        HAS_TIME=rab,
        PREC="tf32",
        BLOCK_M=bm,
        BLOCK_N=bn,
        # bf16 uses tanh.approx (fast as ROO_HSTU_FAST); the backward with bias gradients the exact sigmoid
        FAST=0 if (rab and kind == "bwd") else {"1": 1, "0": 0, "sigmoid": 3}[fast],
        ONE_LOOP=one_loop,
    )
    if kind == "bwd":
        consts.update(
            GRAD_POS=rab,
            GRAD_TIME=rab,
            ATOMIC_DQ=atomic_dq,
            N_COPIES=hk.RAB_GRAD_COPIES,
            TIME_REDUCE=rab and time_reduce,
        )
    consts = {k: v for k, v in consts.items() if k in fn.arg_names}
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
        "time_reduce": time_reduce and rab,
        "atomic_dq": atomic_dq,
        "one_loop": one_loop,
        "fast": fast,
        "regs": int(regs.group(1)),
        "spill_store_bytes": int(spills.group(1)),
        "spill_load_bytes": int(spills.group(2)),
        "shared_bytes": shared,
        "fits_smem": shared <= SMEM_LIMIT_SM90,
        "triton": triton.__version__,
    }


def _config(text: str) -> tuple[int, int, int, int]:
    from roo_ref.kernels.hstu_attention import parse_config

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
        help="bwd with --rab: the time-bucket gradient mode (ROO_HSTU_TIME_GRAD; default reduce)",
    )
    p.add_argument("--atomic-dq", action="store_true", help="bwd: dq by atomics in the dk/dv kernel")
    p.add_argument("--loop-per-range", action="store_true", help="ROO_HSTU_ONE_LOOP=0")
    p.add_argument(
        "--fast",
        choices=("1", "0", "sigmoid"),
        default="1",
        help="silu as ROO_HSTU_FAST: 1 tanh form (default), sigmoid (tanh.approx, sigmoid form), 0 exact",
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from roo_ref.kernels import hstu_attention as hk

    configs = a.config or hk._configs(a.kind, a.atomic_dq)[:1]
    rows = []
    for cfg in configs:
        try:
            r = compile_report(
                a.kind,
                cfg,
                head_dim=a.head_dim,
                rab=a.rab,
                time_reduce=a.time_grad == "reduce",
                atomic_dq=a.atomic_dq,
                one_loop=not a.loop_per_range,
                fast=a.fast,
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
