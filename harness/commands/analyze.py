"""`roo-bench analyze LOG --request-key COL --out DIR`: what ROO saves on your own log, end to end.

One command for what otherwise takes convert, storage, fit, model, project and report: the log is
converted to request level, measured in both layouts on its own bytes, fitted to a spec, priced
by the cost model and projected to a day of traffic; DIR gets report.html, analyze.json (one
`analyze` record), spec.toml, records/ (storage, model, project) and request/ (the request-level
dataset). The work is harness.analyze's; this module parses arguments and prints.
"""

from __future__ import annotations

from workloads.errors import UserError
from workloads.records import print_record

MODEL_FAMILIES = ("early-ranking", "late-ranking", "retrieval", "hstu-ranking")


def add_role_arguments(p) -> None:
    """The column-role options `fit` and `analyze` share (spelled as `convert`'s --ro-columns)."""
    p.add_argument("--roles", default="auto", help="auto: infer every role not given below | explicit (default auto)")
    p.add_argument(
        "--ro-columns", default="auto", help="request-only columns: auto (constant within every request) or a,b,c"
    )
    p.add_argument("--label-columns", default="auto", help="label columns: auto (0/1 columns that vary) or a,b")
    p.add_argument("--timestamp", default="auto", help="the event-time column: auto (named timestamp/ts/...) or COL")
    p.add_argument(
        "--sequence-columns",
        default="auto",
        help="history list columns, item ids first (then timestamps/actions): auto or a,b",
    )
    p.add_argument("--on-conflict", default="error", help="error | first: an RO column differing within a request")


def role_options(args):
    from workloads.roles import RoleOptions

    return RoleOptions.parse(args.roles, args.ro_columns, args.label_columns, args.timestamp, args.sequence_columns)


def register(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="what ROO saves on your impression-level Parquet log: storage, fit, cost model, projection, report",
        description="Convert an impression-level Parquet log (any column names and row order) to request level, "
        "measure both layouts on its bytes, fit a workload spec, price it with the cost model, project a day of "
        "traffic, and write one HTML report plus one JSON record into --out.",
    )
    p.add_argument("input", metavar="LOG", help="impression-level Parquet file, or a directory of Parquet files")
    p.add_argument("--request-key", required=True, help="column that identifies the request")
    add_role_arguments(p)
    p.add_argument("--model", default="early-ranking", help=f"model family: {' | '.join(MODEL_FAMILIES)}")
    p.add_argument("--requests-per-day", type=float, default=1e9, help="traffic to project (default 1e9)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs training, for the projection (default 8)")
    p.add_argument("--hardware", default="h100", help="datasheet entry to price on: h100 | h200 | a100 | cpu")
    p.add_argument("--dtype", default="bf16", help="bf16 | fp32 (default bf16)")
    p.add_argument(
        "--batch-requests", type=int, default=None, help="requests per training step priced (default: the family's)"
    )
    p.add_argument("--sort-budget-mb", type=int, default=64, help="input MB per sort partition (bounds memory)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--json", action="store_true", help="print the analyze record")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from harness.analyze import AnalyzeConfig, analyze

    if args.on_conflict not in ("error", "first"):
        raise UserError(f"--on-conflict {args.on_conflict!r}; allowed: error, first")
    cfg = AnalyzeConfig(
        log=args.input,
        request_key=args.request_key,
        out=args.out,
        roles=role_options(args),
        on_conflict=args.on_conflict,
        model=args.model,
        hardware=args.hardware,
        dtype=args.dtype,
        requests_per_day=args.requests_per_day,
        gpus=args.gpus,
        sort_budget_mb=args.sort_budget_mb,
        batch_requests=args.batch_requests,
    )
    rec = analyze(cfg, progress=not args.json)
    if args.json:
        print_record(rec)
        return 0
    m = rec["metrics"]
    print("column roles (correct them with --ro-columns/--label-columns/--timestamp/--sequence-columns):")
    for line in m["mapping"]:
        print(f"  {line}")
    for n in m["roles"]["notes"]:
        print(f"note: {n}")
    st, sv = m["storage"], m["savings"]
    conf = m["conflicts"]
    print(
        f"{m['log']['requests']} requests, {m['log']['rows']} impressions; RO conflicts {conf['total']} "
        f"(--on-conflict {conf['policy']})"
    )
    print(
        f"storage impression/request: {st['measured_uncompressed_ratio']:.2f}x uncompressed (counted), "
        + ", ".join(f"{k} files {v:.2f}x" for k, v in st["file_ratios"].items())
        + f"; fitted spec predicts {st['predicted_uncompressed_ratio']:.2f}x"
    )
    print(
        f"{args.model} on {args.hardware}: predicted ROO speedup {m['model']['predicted_speedup']:.2f}x, "
        f"saves FLOPs {_pct(sv.get('flops'))}, GPU-hours/day {_pct(sv.get('gpu_hours_per_day'))}, "
        f"energy/day {_pct(sv.get('energy_kwh_per_day'))} (negative: costs more)"
    )
    print(f"report: {m['files']['report']}")
    return 0


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"
