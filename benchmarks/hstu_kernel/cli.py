"""The kernel benchmark's command line (python -m benchmarks.hstu_kernel; see that package's docstring)."""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks import hstu_kernel
from benchmarks.hstu_kernel.providers import MODES, PROVIDERS, table
from benchmarks.hstu_kernel.variants import VARIANTS, parse_variant, run_once, sweep
from roo_ref.kernels.options import HstuKernelOptions


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=hstu_kernel.__doc__.split("\n")[0])
    p.add_argument("--lengths", default="256,512,1024,2048,4096")
    p.add_argument("--targets", default="0,32")
    p.add_argument("--dists", default="uniform,jagged")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--tokens", type=int, default=131072)
    p.add_argument("--no-autotune", action="store_true", help="use the kernels' default configs")
    p.add_argument("--sweep", action="store_true", help="time kernel variants (configs, dq mode, ...) and exit")
    p.add_argument(
        "--variant",
        action="append",
        help="with --sweep: a registered name (see --list) or NAME:key=value;... (repeatable; default: all registered)",
    )
    p.add_argument(
        "--once",
        type=int,
        default=0,
        metavar="N",
        help="run the Triton fwd+bwd N times on the first length / dist / last target count and exit (for ncu)",
    )
    p.add_argument("--list", action="store_true", help="print the providers and the registered variants and exit")
    p.add_argument("--out", default="bench_hstu.json")
    return p


def _check_names(a) -> str | None:
    """An error message for an unknown provider or a bad variant, before any GPU work."""
    unknown = [p for p in a.providers.split(",") if p not in PROVIDERS]
    if unknown:
        return f"unknown provider {unknown[0]!r}; known: {', '.join(PROVIDERS)}"
    try:
        for v in a.variant or ():
            parse_variant(v)
    except ValueError as e:
        return str(e)
    return None


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if a.list:
        print("providers: " + ", ".join(PROVIDERS))
        for name, changes in VARIANTS.items():
            print(f"variant {name}: {changes or 'the defaults'}")
        return 0
    error = _check_names(a)
    try:
        options = HstuKernelOptions.from_env(os.environ)  # the one place ROO_HSTU_* are read
    except ValueError as e:
        error = error or str(e)
    if error:
        print(f"hstu_kernel: {error}", file=sys.stderr)
        return 2
    if not a.no_autotune and not a.sweep and not a.once:
        # (the sweep times each variant as given: kernels a variant does not name keep their defaults)
        options = options.replace(autotune=True)

    import torch

    if not torch.cuda.is_available():
        print("hstu_kernel needs a CUDA device", file=sys.stderr)
        return 2
    if a.once:
        return run_once(torch, a, options)
    if a.sweep:
        return sweep(torch, a, options)
    return table(torch, a, options)
