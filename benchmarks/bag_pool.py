"""The pooled embedding-bag forward on CUDA: ATen's F.embedding_bag against the Triton bag_pool.

    PYTHONPATH=. python3 -m benchmarks.bag_pool [--device cuda] [--json bag_pool.json]
        [--shapes "820,1000,64,bfloat16;..."] [--mode sum|mean] [--rows 1048576]
        [--configs sweep | --configs "128,64,4;64,64,4"]

Per shape (bags, mean bag length, dim, dtype): bag lengths lognormal (sigma 1) around the mean,
ids uniform over `rows` rows (a table larger than L2, so each gathered row comes from HBM), bags in
position order as a lookup plan builds them. Timed with harness.timers (CUDA events, median of
--reps after --warmup), each on the same inputs:
- embedding_bag:          F.embedding_bag(ids, weight, offsets, include_last_offset=True);
- bag_pool <config>:      roo_ref.kernels.bag_pool.bag_pool with (BLOCK, BLOCK_D, warps); without
                          --configs only DEFAULT_CONFIG, with `--configs sweep` a few around it.
Each config's output is first checked against the fp32-summed reference (one unit in the last
place of the weight's dtype, plus fp32 summation-order rounding).
GB/s = the lookup's byte floor / its time; floor = nnz x dim x elt (each id's row gathered once) +
bags x dim x elt (the output written) + nnz x 8 + (bags + 1) x 8 (ids and offsets). bag_pool also
reads the bag of each position (nnz x 8 more), which the floor leaves out. speedup = embedding_bag's
time / the row's time.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from benchmarks.common import has_cuda, require, write_json
from roo_ref.kernels import interpreting

DEFAULT_SHAPES = "820,1000,64,bfloat16;8052,1000,64,bfloat16;8192,3,128,bfloat16;65536,20,128,bfloat16"
# the scan stages its [BLOCK, BLOCK_D] tile and keys in shared memory (8 bytes an element): at most
# 256 x 64 within an H100's 228 KiB per block
SWEEP = "128,64,4;64,64,4;64,64,2;256,64,8;128,32,4;64,128,4;128,128,8"
DTYPES = ("float32", "bfloat16", "float16")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: the Triton interpreter")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="BAGS,MEAN_LEN,DIM,DTYPE;...")
    p.add_argument("--mode", default="sum", choices=["sum", "mean"])
    p.add_argument("--rows", type=int, default=1 << 20, help="table rows the ids are drawn from")
    p.add_argument("--configs", default="", help="BLOCK,BLOCK_D,warps;... or 'sweep' (default: DEFAULT_CONFIG)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="bag_pool.json", help="where the results go")
    return p


def parse_shapes(text: str) -> list[tuple[int, float, int, str]]:
    out = []
    for item in (s for s in text.split(";") if s.strip()):
        parts = [x.strip() for x in item.split(",")]
        try:
            shape = (int(parts[0]), float(parts[1]), int(parts[2]), parts[3]) if len(parts) == 4 else None
        except ValueError:
            shape = None
        if shape is None or min(shape[:3]) <= 0 or shape[3] not in DTYPES:
            raise SystemExit(f"--shapes={text!r}: want BAGS,MEAN_LEN,DIM,DTYPE;... with DTYPE in {', '.join(DTYPES)}")
        out.append(shape)
    if not out:
        raise SystemExit(f"--shapes={text!r}: want BAGS,MEAN_LEN,DIM,DTYPE;... e.g. 820,1000,64,bfloat16")
    return out


def parse_configs(text: str) -> list[tuple[int, int, int]]:
    from roo_ref.kernels.bag_pool import DEFAULT_CONFIG

    if not text.strip():
        return [DEFAULT_CONFIG]
    text = SWEEP if text.strip() == "sweep" else text
    try:
        cfgs = [tuple(int(x) for x in c.split(",")) for c in text.split(";") if c.strip()]
    except ValueError:
        cfgs = []
    if not cfgs or any(len(c) != 3 or min(c) < 1 for c in cfgs):
        raise SystemExit(f"--configs={text!r}: want BLOCK,BLOCK_D,warps;... e.g. 128,64,4, or sweep")
    return cfgs  # type: ignore[return-value]


def make_lookup(bags: int, mean_len: float, dim: int, dtype: torch.dtype, rows: int, gen, dev):
    """(weight, ids, offsets, bag) of one lookup: lognormal bag lengths around mean_len."""
    sigma = 1.0
    mu = math.log(mean_len) - sigma**2 / 2
    lengths = torch.exp(mu + sigma * torch.randn(bags, generator=gen, device=dev, dtype=torch.float64)).round().long()
    offsets = torch.zeros(bags + 1, dtype=torch.int64, device=dev)
    torch.cumsum(lengths, 0, out=offsets[1:])
    nnz = int(offsets[-1])
    bag = torch.repeat_interleave(torch.arange(bags, device=dev), lengths, output_size=nnz)
    ids = torch.randint(0, rows, (nnz,), generator=gen, device=dev)
    weight = torch.randn(rows, dim, generator=gen, device=dev).to(dtype)
    return weight, ids, offsets, bag


def median_ms(fn, warmup: int, reps: int, device) -> float:
    from harness.timers import time_steps

    return time_steps(fn, warmup=warmup, steps=reps, device=device).stats.median


def _check(got: torch.Tensor, weight, ids, offsets, mode: str) -> int:
    """How many outputs lie outside one ulp of the weight's dtype plus fp32 rounding of the
    fp32-summed reference."""
    ref = torch.nn.functional.embedding_bag(ids, weight.float(), offsets, mode=mode, include_last_offset=True)
    mag = torch.nn.functional.embedding_bag(ids, weight.float().abs(), offsets, mode=mode, include_last_offset=True)
    ref_t = ref.to(weight.dtype).float()
    tol = 1e-5 * mag + ref_t.abs() * (torch.finfo(weight.dtype).eps if weight.dtype != torch.float32 else 0) + 1e-30
    return int(((got.float() - ref_t).abs() > tol).sum())


def run_shape(shape, args, configs, dev) -> dict:
    from roo_ref.kernels.bag_pool import bag_pool

    bags, mean_len, dim, dtype_name = shape
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    weight, ids, offsets, bag = make_lookup(bags, mean_len, dim, getattr(torch, dtype_name), args.rows, gen, dev)
    nnz, elt = ids.numel(), weight.element_size()
    floor_gb = (nnz * dim * elt + bags * dim * elt + nnz * 8 + (bags + 1) * 8) / 1e9
    results = []

    def add(name: str, ms: float) -> None:
        results.append({"name": name, "ms": ms, "gbps": floor_gb / (ms / 1e3)})

    def aten():
        return torch.nn.functional.embedding_bag(ids, weight, offsets, mode=args.mode, include_last_offset=True)

    add("embedding_bag", median_ms(aten, args.warmup, args.reps, dev))
    for cfg in configs:

        def pool(cfg=cfg):
            return bag_pool(weight, ids, offsets, bag, args.mode, config=cfg)

        bad = _check(pool(), weight, ids, offsets, args.mode)
        require(bad == 0, f"bag_pool {cfg} at {shape}: {bad} outputs outside the tolerance")
        add(f"bag_pool {','.join(map(str, cfg))}", median_ms(pool, args.warmup, args.reps, dev))
    require(all(r["ms"] > 0 for r in results), "a timing is not positive")
    for r in results:
        r["speedup"] = results[0]["ms"] / r["ms"]
    lengths = offsets[1:] - offsets[:-1]
    return {
        "bags": bags,
        "mean_len": mean_len,
        "dim": dim,
        "dtype": dtype_name,
        "nnz": nnz,
        "max_len": int(lengths.max()) if bags else 0,
        "floor_gb": floor_gb,
        "results": results,
    }


def run(args, device: str = "cuda") -> dict:
    # imported here: the asv suite imports every module of this package, triton or not
    import triton

    from roo_ref.kernels.bag_pool import DEFAULT_CONFIG

    dev = torch.device(device)
    configs = parse_configs(args.configs)
    return {
        "benchmark": "bag_pool",
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (Triton interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "mode": args.mode,
        "rows": args.rows,
        "default_config": list(DEFAULT_CONFIG),
        "shapes": [run_shape(s, args, configs, dev) for s in parse_shapes(args.shapes)],
    }


def print_table(rec: dict) -> None:
    print(f"{rec['device']}, mode {rec['mode']}, ids over {rec['rows']:,} rows, default config {rec['default_config']}")
    cols = f"{'bags':>6s} {'mean':>5s} {'dim':>4s} {'dtype':9s} {'nnz':>9s}  {'':18s}"
    print(f"{cols} {'ms':>8s} {'GB/s':>7s} {'speedup':>8s}")
    for s in rec["shapes"]:
        head = f"{s['bags']:6d} {s['mean_len']:5g} {s['dim']:4d} {s['dtype']:9s} {s['nnz']:9d}"
        for r in s["results"]:
            print(f"{head}  {r['name']:18s} {r['ms']:8.4f} {r['gbps']:7.0f} {r['speedup']:7.2f}x")
            head = " " * len(head)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.device == "cuda" and not has_cuda():
        print("benchmarks.bag_pool needs a CUDA device (or --device cpu with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    if args.device == "cpu" and not interpreting():
        print("benchmarks.bag_pool --device cpu runs the Triton interpreter: set TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    rec = run(args, device=args.device)
    print_table(rec)
    write_json(rec, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
