"""`roo-bench comm-project`: the embedding all-to-all projected to W = 2 ... 1024 ranks on paper.

The alpha-beta model of roo_ref.cost.comm_project on a two-level topology (NVLink inside a node of
--gpus-per-node GPUs, --network-gbps per GPU across nodes): bytes, collective time and its share of
the step (one rank's analytic compute step on --hardware) per layout, and ROO's savings.
"""

from __future__ import annotations

import sys

from workloads.records import Kind, emit_flat


def register(sub) -> None:
    p = sub.add_parser(
        "comm-project", help="the embedding all-to-all projected to W = 2..1024 ranks (two-level alpha-beta model)"
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def add_arguments(p) -> None:
    """The command's options (the demo parses its own argv with them)."""
    p.add_argument("--preset", default="early-ranking", help="workload preset (default early-ranking)")
    p.add_argument("--hardware", default="h100", help="datasheet of one rank's compute step (roo_ref.hardware)")
    p.add_argument("--sharding", default="table", help="table (table-wise) or row (row-wise)")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--row-cap", type=int, default=None, help="rows per table at most (default as `roo-bench comm`)")
    p.add_argument("--requests", type=float, default=None, help="requests per rank per step (default the preset's)")
    p.add_argument("--comm-dtype", default="fp32", help="dtype of the exchanged embeddings: fp32|bf16|fp16")
    p.add_argument("--max-history", type=int, default=0, help="history events exchanged per request (HSTU)")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nvlink-gbps", type=float, default=241.0, help="all-to-all bus bandwidth inside a node, GB/s")
    p.add_argument("--network-gbps", type=float, default=50.0, help="per-GPU bandwidth across nodes, GB/s")
    p.add_argument("--nvlink-latency-us", type=float, default=20.0, help="per collective inside a node")
    p.add_argument("--network-latency-us", type=float, default=40.0, help="per collective spanning nodes")
    p.add_argument("--world-sizes", default=None, help="comma-separated W (default 2,4,...,1024)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _world_sizes(raw: str | None) -> tuple[int, ...]:
    from roo_ref.cost.comm_project import WORLD_SIZES
    from workloads.errors import UserError

    if raw is None:
        return WORLD_SIZES
    try:
        return tuple(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--world-sizes={raw!r}: give comma-separated integers, e.g. 2,4,8") from None


def _compute_s(preset: str, hardware: str, requests: float) -> dict | None:
    """One rank's analytic compute step per layout (s), or None where the preset has no model."""
    from roo_ref.cost.step import model_cost
    from roo_ref.model_presets import MODEL_PRESETS, get_model_config
    from workloads.presets import get_preset

    if preset not in MODEL_PRESETS:
        return None
    cost = model_cost(get_preset(preset), get_model_config(preset), requests=requests, device=hardware)
    return {lay: float(c.step_s) for lay, c in cost["layouts"].items()}


def build(args) -> dict:
    """The flat `comm-project` object (raises UserError on a bad argument)."""
    from harness.comm.config import COMM_DTYPES
    from roo_ref.cost import comm as comm_cost
    from roo_ref.cost.comm_project import Topology, project
    from roo_ref.hardware import get_device
    from workloads.errors import UserError
    from workloads.presets import get_preset

    spec = get_preset(args.preset)
    get_device(args.hardware)
    if args.comm_dtype not in COMM_DTYPES:
        raise UserError(f"--comm-dtype={args.comm_dtype!r}; allowed: {', '.join(COMM_DTYPES)}")
    if args.requests is not None and not args.requests > 0:
        raise UserError(f"--requests={args.requests} must be > 0")
    topo = Topology(
        args.gpus_per_node,
        args.nvlink_gbps * 1e9,
        args.network_gbps * 1e9,
        args.nvlink_latency_us * 1e-6,
        args.network_latency_us * 1e-6,
    )
    requests = float(args.requests or spec.requests_per_batch)
    rows = project(
        spec,
        topo,
        _world_sizes(args.world_sizes),
        requests,
        args.sharding,
        args.embedding_dim,
        {"fp32": 4, "bf16": 2, "fp16": 2}[args.comm_dtype],
        comm_cost.DEFAULT_ROW_CAP if args.row_cap is None else args.row_cap,
        args.max_history,
        _compute_s(args.preset, args.hardware, requests),
    )
    return {
        "projection": True,
        "preset": args.preset,
        "hardware": args.hardware,
        "sharding": args.sharding,
        "embedding_dim": args.embedding_dim,
        "comm_dtype": args.comm_dtype,
        "requests_per_rank": requests,
        "max_history": args.max_history,
        "topology": topo.to_dict(),
        "collectives_per_step": comm_cost.COLLECTIVES_PER_STEP,
        "rows": rows,
    }


def _run(args) -> int:
    obj = build(args)
    if args.json:
        emit_flat(Kind.COMM, obj)  # a comm record of the model, told apart by "projection": true
        return 0
    t = obj["topology"]
    print(
        f"{obj['preset']} {obj['sharding']}-wise, {t['gpus_per_node']} GPUs/node, NVLink {t['nvlink_gbps']:g} GB/s, "
        f"network {t['network_gbps']:g} GB/s per GPU"
    )
    print(f"{'W':>5} {'imp MB':>9} {'roo MB':>9} {'imp ms':>8} {'roo ms':>8} {'byte sav':>9} {'time sav':>9}")
    for r in obj["rows"]:
        imp, roo = r["layouts"]["impression"], r["layouts"]["roo"]
        print(
            f"{r['world_size']:>5} {imp['cross_bytes_per_step'] / 1e6:>9.1f} {roo['cross_bytes_per_step'] / 1e6:>9.1f} "
            f"{imp['comm_ms']:>8.3f} {roo['comm_ms']:>8.3f} {100 * r['saving_bytes']:>8.1f}% "
            f"{100 * (r['saving_comm_ms'] or 0):>8.1f}%",
            file=sys.stdout,
        )
    return 0
