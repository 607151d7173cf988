"""`roo-bench bench --preset NAME | --spec FILE [--model NAME] --layout impression|roo|both
[--device cpu|cuda] [--steps N] [--dtype fp32|bf16] [--graph] [--set k=v ...] [--json]`: train steps
in each layout and report throughput.

`--spec FILE` runs a workload spec file (e.g. one `roo-bench fit` wrote) instead of a preset; the
model is the model preset `--model NAME` (tiny, retrieval, early-ranking, late-ranking,
hstu-ranking), which a spec not named like a model preset needs (it is never guessed).

Both layouts train on the SAME impressions per step: the impression batch is `to_impressions()` of
the request batch, the model starts from the same weights (same seed), the same optimizer and
dtype. The timed loop is harness.measure's (the one sweep points use): warm-up, one dropped step,
CUDA events on a GPU or perf_counter on the CPU; every median comes with its spread, and the
speedup with its 95% interval.

`--graph` (CUDA only): each step is a CUDA-graph replay (roo_ref.graph_step): batches are padded
to a bucket (impressions, sparse values, history tokens rounded up on a 1/16-octave grid) and one
graph per bucket is captured before the timed steps; the record lists the buckets per layout.

`--set key=value`: keys of the model config (roo_ref.model_presets.ModelConfig, e.g.
hstu_layers=2) go to the model; any other dotted key goes to the workload spec (e.g.
requests_per_batch=8, history.length.max=64). `--dtype bf16` = autocast bf16 with fp32 master
weights (mixed-precision training).

torch is imported by the handler only: `roo-bench --help` starts without it.
"""

from __future__ import annotations

from harness.commands._args import add_workload_args, check_step_args, emit_step_record, workload_config
from workloads.records import Kind


def register(sub) -> None:
    p = sub.add_parser("bench", help="time training steps of a preset model in the impression and ROO layouts")
    add_workload_args(p)
    p.add_argument("--layout", default="both", help="impression, roo or both (default both)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per layout (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--dtype", default="fp32", help="fp32 or bf16 (autocast; default fp32)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (default 0: torch's default); 1 is steadier on a busy host",
    )
    p.add_argument("--seed", type=int, default=0, help="data and weight seed (default 0)")
    p.add_argument(
        "--graph",
        action="store_true",
        help="CUDA-graph steps: pad batches to buckets, capture once per bucket, time replays (cuda only)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model-config key or a dotted workload-spec key (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _layout_result(r, steps: int, warmup: int) -> dict:
    s = r.stats
    graph = {"graph_buckets": r.extra["graph_buckets"]} if "graph_buckets" in r.extra else {}
    return {
        **graph,
        "impressions_per_s": r.impressions_per_s,
        "requests_per_s": r.requests_per_s,
        "step_ms_median": s.median,
        "step_ms_min": s.min,
        "step_ms_iqr": s.iqr,
        "step_ms_p25": s.p25,
        "step_ms_p75": s.p75,
        "step_ms_dropped": r.timing.dropped_ms,
        "timer": r.timing.method,
        "impressions_per_step": r.impressions_per_step,
        "requests_per_step": r.requests_per_step,
        "steps": steps,
        "warmup": warmup,
    }


def bench(
    workload, layouts, device, steps: int, warmup: int, dtype: str, sets=(), seed: int = 0, graph: bool = False
) -> dict:
    """`roo-bench bench --json`'s object: per-layout throughput and step-time spread, and the
    ROO speedup (median impression step / median ROO step) with its 95% interval. `workload`: a
    harness.measure.Workload, or a preset name with `sets` as its `--set` overrides. `graph`:
    CUDA-graph steps (harness.measure)."""
    import torch

    from harness.measure import measure_preset

    pm = measure_preset(workload, layouts, device, steps, warmup, dtype, sets, seed, graph=graph)
    device = torch.device(device)
    ci = pm.measurement.speedup_interval(seed=seed)
    return {
        **workload_config(pm.workload),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype,
        "graph": graph,
        "seed": seed,
        "steps": steps,
        "warmup": warmup,
        "layouts": {str(k): _layout_result(r, steps, warmup) for k, r in pm.measurement.layouts.items()},
        "speedup": ci["ratio"] if ci else None,
        "speedup_ci": [ci["lo"], ci["hi"]] if ci else None,
        "speedup_ci_method": ci["method"] if ci else None,
        "speedup_ci_confidence": ci["confidence"] if ci else None,
    }


def format_text(res: dict) -> list[str]:
    lines = []
    for layout, r in res["layouts"].items():
        lines.append(
            f"{res['workload']} {layout:>10}: {r['impressions_per_s']:12.1f} impressions/s "
            f"{r['requests_per_s']:10.1f} requests/s  "
            f"step {r['step_ms_median']:.2f} ms (median; IQR {r['step_ms_iqr']:.2f}, n={r['steps']})"
        )
    if res["speedup"] is not None:
        lo, hi = res["speedup_ci"]
        if lo is None:
            spread = "no interval: fewer than 2 steps"
        else:
            spread = f"{res['speedup_ci_confidence']:.0%} CI {lo:.2f}-{hi:.2f}, {res['speedup_ci_method']}"
        lines.append(f"ROO / impression throughput: {res['speedup']:.2f}x ({spread})")
    return lines


def _run(args) -> int:
    from harness.measure import resolve_workload

    layouts, device = check_step_args(args)
    workload = resolve_workload(args.preset, args.set, args.spec, args.model)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = bench(workload, layouts, device, args.steps, args.warmup, args.dtype, seed=args.seed, graph=args.graph)
    if args.json:
        emit_step_record(Kind.BENCH, res, args)
        return 0
    print("\n".join(format_text(res)))
    return 0
