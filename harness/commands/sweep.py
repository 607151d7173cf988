"""`roo-bench sweep FILE.toml --out DIR [--resume] [--device D] [--timeout S] [--json]`."""

from __future__ import annotations

import json
import sys

from workloads.records import Kind, emit_flat


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of points (both layouts each) into DIR/results.jsonl; resumable",
        description="Run every point of a sweep file, each in its own process; a crash or OOM becomes a "
        "record with status oom/error. One sweep writes an --out directory at a time: a second one "
        "exits 2. Format: see harness/sweep.py; examples in harness/sweeps/.",
    )
    p.add_argument("file", help="sweep file (TOML)")
    p.add_argument("--out", required=True, help="output directory (results.jsonl + sweep.meta.json)")
    p.add_argument("--resume", action="store_true", help="skip points that already have a record in --out")
    p.add_argument("--device", default=None, help="run every point on this device (cpu, cuda, cuda:N)")
    p.add_argument("--timeout", type=float, default=None, help="per-point timeout in seconds (default: the file's)")
    p.add_argument("--dry-run", action="store_true", help="list the points (hash, axes) and write nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object with the point counts")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from harness.sweep import load_sweep, run_sweep
    from workloads.errors import UserError

    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout {args.timeout:g} must be > 0")
    if args.dry_run:
        sw = load_sweep(args.file, args.device)
        pts = [{"config_hash": p.config_hash, "axes": p.axes} for p in sw.points]
        if args.json:
            emit_flat(Kind.SWEEP, {"sweep": sw.name, "points_total": len(pts), "points": pts})
        else:
            for p in pts:
                print(p["config_hash"], json.dumps(p["axes"], sort_keys=True))
            print(f"{sw.name}: {len(pts)} point(s)", file=sys.stderr)
        return 0
    res = run_sweep(args.file, args.out, resume=args.resume, device=args.device, quiet=False, timeout_s=args.timeout)
    if args.json:
        emit_flat(Kind.SWEEP, res)
    else:
        print(
            f"{res['sweep']}: {res['points_done']} point(s) run ({res['points_failed']} failed: "
            f"{res['points_oom']} oom), {res['points_skipped']} skipped of {res['points_total']} "
            f"-> {res['results']}"
        )
    return 0
