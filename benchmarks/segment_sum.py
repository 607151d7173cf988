"""The embedding gradient reduction on CUDA: ATen's index_add_ against the Triton segmented sum.

    PYTHONPATH=. python3 -m benchmarks.segment_sum [--nnz 4194304 --dim 128 --rows 1048576]
        [--zipf 1.05 --pooling 16 --dtype float32 --configs "128,64,4;64,128,8"] [--out segment_sum.json]

One table's step: nnz Zipf-distributed ids over `rows` rows, pooled into bags of `pooling` ids (the
row gradient of an id is its bag's output gradient, [nnz / pooling, dim]). Timed with CUDA events
(median of --reps after --warmup), each on the same inputs:
- sum index_add_:      the old reduction, `zeros([nnz, dim]).index_add_(0, inverse, rows)` on the
                       materialized rows (their gather not counted);
- sum triton <config>: roo_ref.kernels.segment_sum.segment_sum from the sorted order (gathers the
                       bags' gradient itself);
- update torch / update triton: the whole row-wise Adagrad update of roo_ref.sparse_optim from the
                       lookup's gradient source (sort, segments, sums, state and weight), per backend.
GB/s of a sum = its byte floor / its time; floor = nnz x dim x the gradient's element size (each id's
row read once, from an L2-resident [bags, dim] gradient) + u x dim x 4 (the fp32 sums written).
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import has_cuda, require, write_json
from roo_ref.sparse_optim import RowGradSource, _sorted_segments, rowwise_adagrad_update, segment_rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nnz", type=int, default=1 << 22)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rows", type=int, default=1 << 20)
    p.add_argument("--zipf", type=float, default=1.05, help="P(rank r) ~ 1 / r^a")
    p.add_argument("--pooling", type=int, default=16, help="ids per bag")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--configs", default="128,64,4;64,128,8;256,32,8", help="BLOCK,BLOCK_D,warps;...")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="segment_sum.json")
    return p


def zipf_ids(n: int, rows: int, a: float, gen: torch.Generator, device) -> torch.Tensor:
    p = 1.0 / torch.arange(1, rows + 1, dtype=torch.float64, device=device) ** a
    ranks = torch.multinomial(p.float(), n, replacement=True, generator=gen)
    return torch.randperm(rows, generator=gen, device=device)[ranks]


def median_ms(fn, warmup: int, reps: int, device) -> float:
    """Median ms of `fn` over `reps` calls (harness.timers: CUDA events on a GPU, the host clock
    otherwise, as in the interpreter smoke test)."""
    from harness.timers import time_steps

    return time_steps(fn, warmup=warmup, steps=reps, device=device).stats.median


def parse_configs(text: str) -> list[tuple[int, int, int]]:
    try:
        cfgs = [tuple(int(x) for x in c.split(",")) for c in text.split(";") if c.strip()]
    except ValueError:
        cfgs = []
    if not cfgs or any(len(c) != 3 or min(c) < 1 for c in cfgs):
        raise SystemExit(f"--configs={text!r}: want BLOCK,BLOCK_D,warps;... e.g. 128,64,4")
    return cfgs  # type: ignore[return-value]


def run(args, device: str = "cuda") -> dict:
    # imported here: the asv suite imports every module of this package, triton or not
    from roo_ref.kernels.segment_sum import DEFAULT_CONFIG, segment_sum

    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    ids = zipf_ids(args.nnz, args.rows, args.zipf, gen, dev)
    bags = max(1, args.nnz // args.pooling)
    bag = torch.sort(torch.randint(0, bags, (args.nnz,), generator=gen, device=dev)).values
    grad = torch.randn(bags, args.dim, generator=gen, device=dev).to(dtype)
    source = RowGradSource(ids, grad, bag)
    sorted_ids, perm, seg = _sorted_segments(ids)
    u = int(seg[-1]) + 1
    floor_gb = (args.nnz * args.dim * grad.element_size() + u * args.dim * 4) / 1e9
    rows = source.rows(torch.float32)
    _, inverse, _ = segment_rows(ids)
    results = []

    def add(name: str, ms: float, floor: float | None) -> None:
        results.append({"name": name, "ms": ms, "gbps": floor / (ms / 1e3) if floor else None})

    def old_sum():
        return torch.zeros(args.nnz, args.dim, device=dev).index_add_(0, inverse, rows)

    add("sum index_add_", median_ms(old_sum, args.warmup, args.reps, dev), floor_gb)
    # the exact sums (fp64) and, per element, the fp32 summation error any order may make: a few
    # units in the last place of the sum of the terms' magnitudes, times sqrt(run length)
    rows64 = rows.double()
    exact = torch.zeros(args.nnz, args.dim, device=dev, dtype=torch.float64).index_add_(0, inverse, rows64)
    mag = torch.zeros_like(exact).index_add_(0, inverse, rows64.abs())
    run = torch.bincount(inverse, minlength=args.nnz).double().clamp_min(1).sqrt()[:, None]
    tol = 4 * 2**-24 * mag * run + 1e-30
    del rows64
    for cfg in parse_configs(args.configs):
        got, _ = segment_sum(grad, bag, None, perm, seg, sorted_ids, config=cfg)
        bad = ((got[:u].double() - exact[:u]).abs() > tol[:u]).sum()
        require(int(bad) == 0, f"segment_sum {cfg}: {int(bad)} sums outside the fp32 summation error")
        ms = median_ms(
            lambda cfg=cfg: segment_sum(grad, bag, None, perm, seg, sorted_ids, config=cfg), args.warmup, args.reps, dev
        )
        add(f"sum triton {','.join(map(str, cfg))}", ms, floor_gb)
    weight = torch.randn(args.rows, args.dim, generator=gen, device=dev)
    state = torch.zeros(args.rows, device=dev)
    for backend in ("torch", "triton"):

        def update(b=backend) -> None:
            rowwise_adagrad_update(weight, state, [source], 1e-3, 1e-8, b)

        ms = median_ms(update, 1, args.reps, dev)
        add(f"update {backend}", ms, None)
    require(all(r["ms"] > 0 for r in results), "a timing is not positive")
    return {
        "benchmark": "segment_sum",
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (Triton interpreter)",
        "torch": torch.__version__,
        "nnz": args.nnz,
        "dim": args.dim,
        "rows": args.rows,
        "distinct": u,
        "zipf": args.zipf,
        "pooling": args.pooling,
        "dtype": args.dtype,
        "default_config": list(DEFAULT_CONFIG),
        "floor_gb": floor_gb,
        "results": results,
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not has_cuda():
        print("benchmarks.segment_sum needs a CUDA device", file=sys.stderr)
        return 2
    rec = run(args)
    print(f"nnz {rec['nnz']:,}, dim {rec['dim']}, {rec['distinct']:,} distinct of {rec['rows']:,} rows, {rec['dtype']}")
    print(f"{'':24s} {'ms':>9s} {'GB/s (floor)':>13s}")
    for r in rec["results"]:
        gbps = f"{r['gbps']:13.0f}" if r["gbps"] else f"{'':13s}"
        print(f"{r['name']:24s} {r['ms']:9.3f} {gbps}")
    write_json(rec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
