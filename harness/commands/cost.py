"""Cost-model commands: `model` (per-component table), `validate` (analytic vs FlopCounterMode and
vs measured storage), `project` (requests/day -> GPU-hours, TB, kWh). See docs/cost-model.md."""

from __future__ import annotations

import json
import math

from workloads.errors import UserError
from workloads.records import flat_view

# validate: reduced sizes so a CPU forward+backward of every preset takes well under a second; the
# formulas do not depend on size, so exactness here is exactness at full size (`--full` checks it).
_REDUCE_COMMON = ("max_table_rows=1000", "embedding_dim=16")
REDUCED_MODEL = {
    "tiny": (),
    "early-ranking": ("dense_arch=[32]", "user_arch=[64,32]", "item_arch=[32]", "top_arch=[32,16]"),
    "late-ranking": ("dense_arch=[32,16]", "user_arch=[64,32]", "item_arch=[32]", "dcn_rank=16", "top_arch=[64,32,16]"),
    "retrieval": ("dense_arch=[32]", "user_arch=[64,32]", "item_arch=[32]", "tower_dim=16"),
    "hstu-ranking": (
        "qk_dim=32",
        "v_dim=32",
        "max_history_len=16",
        "pos_buckets=32",
        "hstu_layers=2",
        "head_arch=[32,16]",
        "normalizer=32",
    ),
}
REDUCED_SPEC = {"hstu-ranking": ("impressions.value=6",)}


def register(sub) -> None:
    p = sub.add_parser("model", help="analytic cost per model component, both layouts, and the predicted speedup")
    _spec_args(p)
    p.add_argument("--requests", type=float, default=None, help="requests per step (default: the spec's batch)")
    p.add_argument("--exact", action="store_true", help="price a generated batch exactly instead of expected values")
    p.add_argument("--seed", type=int, default=None, help="seed of the --exact batch (default: the spec's)")
    p.add_argument("--world-size", type=int, default=1, help="ranks for the all-to-all/all-reduce rows (default 1)")
    p.add_argument("--bus-bw", type=float, default=None, help="bytes/s busbw: add comm time to the step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_model)

    p = sub.add_parser("validate", help="analytic vs FlopCounterMode FLOPs per component, analytic vs measured storage")
    p.add_argument("--preset", default="all", help="a preset name or all (default all)")
    p.add_argument("--requests", type=int, default=4, help="requests in the counted batch (default 4)")
    p.add_argument("--storage-requests", type=int, default=64, help="requests in the storage batch (default 64)")
    p.add_argument("--full", action="store_true", help="the presets' full model sizes (slow on a CPU)")
    p.add_argument("--no-storage", action="store_true", help="skip the storage comparison")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_validate)

    p = sub.add_parser("project", help="requests/day -> GPU-hours, storage, all-to-all and energy per day")
    _spec_args(p)
    p.add_argument("--requests-per-day", type=float, required=True, help="requests per day (> 0)")
    p.add_argument("--gpus", type=int, required=True, help="GPUs training (>= 1; also the all-to-all world size)")
    p.add_argument("--power-w", type=float, default=None, help="measured board power (default: the device table's)")
    p.add_argument("--bus-bw", type=float, default=None, help="bytes/s busbw: add comm time to the step")
    p.add_argument("--storage", default=None, help="a `roo-bench storage --json` file: use its measured bytes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_project)


def _spec_args(p) -> None:
    p.add_argument("--preset", default=None, help="workload preset (and, by default, its model preset)")
    p.add_argument("--spec", default=None, help="workload spec file (TOML/JSON) instead of --preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="workload spec override (repeatable)",
    )
    p.add_argument("--model", dest="model_preset", default=None, help="model preset (default: the workload's)")
    p.add_argument(
        "--model-set",
        dest="model_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config override (repeatable)",
    )
    p.add_argument("--device", default="h100", help="device table key: h100 | h200 | a100 | cpu (default h100)")
    p.add_argument("--dtype", default="bf16", help="bf16 | fp32 (default bf16)")


def _resolve(args):
    from harness.devices import get_device
    from roo_ref import cost
    from roo_ref.models import model_config_for
    from workloads.presets import resolve_spec

    spec = resolve_spec(args.preset, args.spec, args.overrides)
    cfg = model_config_for(spec, args.model_preset, args.model_overrides)
    dev = get_device(args.device)
    if args.dtype not in ("bf16", "fp32"):
        raise UserError(f"--dtype {args.dtype!r}; allowed: bf16, fp32")
    cost.check_priceable(spec, cfg)
    return spec, cfg, dev


def _num(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def model_report(
    spec, cfg, dev, dtype="bf16", requests=None, batch=None, world_size=1, bus_bw=None, device_key="h100"
) -> dict:
    """The `roo-bench model --json` object."""
    from roo_ref import cost

    if world_size < 1:
        raise UserError(f"--world-size {world_size} must be >= 1")
    if requests is not None and not requests > 0:
        raise UserError(f"--requests {requests} must be > 0")
    mc = cost.model_cost(
        spec, cfg, batch=batch, requests=requests, dtype=dtype, device=dev, world_size=world_size, bus_bw=bus_bw
    )
    comps = []
    for lc in mc["layouts"].values():
        for c in lc.components:
            d = c.to_dict()
            d["time_ms"] = float(cost.component_time_s(c, dev, dtype, mc["attention"])) * 1e3
            comps.append({k: _num(v) for k, v in d.items()})
    return {
        "preset": spec.name,
        "device": device_key,
        "device_name": dev.name,
        "device_source": dev.source,
        "dtype": dtype,
        "exact": mc["exact"],
        "attention": mc["attention"],
        "world_size": world_size,
        "components": comps,
        "totals": {lay: lc.totals() for lay, lc in mc["layouts"].items()},
        "predicted_speedup": float(mc["predicted_speedup"]),
        "f_u": float(mc["f_u"]),
        "mean_impressions_per_request": float(mc["mean_impressions_per_request"]),
        "ideal_speedup": float(mc["ideal_speedup"]),
        "model": cfg.to_dict(),
    }


def _model(args) -> int:
    spec, cfg, dev = _resolve(args)
    batch = None
    if args.exact:
        from workloads.generator import generate

        n = int(args.requests) if args.requests is not None else spec.requests_per_batch
        if n < 1:
            raise UserError(f"--requests {args.requests} must be >= 1")
        batch = generate(spec, n, seed=args.seed)
    rep = model_report(
        spec,
        cfg,
        dev,
        args.dtype,
        None if args.exact else args.requests,
        batch,
        args.world_size,
        args.bus_bw,
        args.device.lower(),
    )
    if args.json:
        print(json.dumps(rep))
        return 0
    print(
        f"{spec.name}: {dev.name} ({dev.source}), {args.dtype}, "
        f"{'exact batch' if rep['exact'] else 'expected values'}, attention priced {rep['attention']}"
    )
    hdr = f"{'component':40s} {'layout':10s} {'fwd GFLOP':>11s} {'bwd GFLOP':>11s} {'MB moved':>10s} {'ms':>8s}"
    print(hdr)
    print("-" * len(hdr))
    for c in sorted(rep["components"], key=lambda c: (c["layout"] != "impression", 0)):
        print(
            f"{c['name']:40s} {c['layout']:10s} {c['fwd_flops'] / 1e9:11.3f} {c['bwd_flops'] / 1e9:11.3f} "
            f"{c['bytes'] / 1e6:10.2f} {c['time_ms']:8.3f}"
        )
    for lay, t in rep["totals"].items():
        print(
            f"total {lay:10s}: {t['flops'] / 1e9:.3f} GFLOP counted ({t['flops_mask_aware'] / 1e9:.3f} "
            f"mask-aware), {t['bytes'] / 1e6:.1f} MB, step {t['predicted_step_ms']:.3f} ms, "
            f"all-to-all {t['alltoall_bytes'] / 1e6:.2f} MB, storage {t['storage_bytes_per_impression']:.0f} B/imp"
        )
    print(
        f"predicted ROO speedup {rep['predicted_speedup']:.2f}x; f_u = {rep['f_u']:.3f}, "
        f"k = {rep['mean_impressions_per_request']:.2f}, ideal 1/(f_u/k + 1 - f_u) = {rep['ideal_speedup']:.2f}x"
    )
    return 0


def validate_preset(name: str, requests: int = 4, full: bool = False, seed: int = 0) -> dict:
    """Count FLOPs of forward+backward with roo_ref.flops on CPU and compare with the analytic ones."""
    from roo_ref import cost
    from roo_ref.flops import count_flops
    from roo_ref.models import build_model
    from workloads.generator import generate
    from workloads.presets import get_preset

    spec = get_preset(name)
    model_over = () if full else (*_REDUCE_COMMON, *REDUCED_MODEL.get(name, ()))
    if not full and name in REDUCED_SPEC:
        spec = spec.with_overrides(list(REDUCED_SPEC[name]))
    model = build_model(spec, preset=name, overrides=model_over, seed=seed)
    batch = generate(spec, requests, seed=seed)
    st = cost.batch_stats(batch, model.config)
    records, comps = [], []
    for layout in cost.LAYOUTS:
        b = batch if layout == "roo" else batch.to_impressions()
        model.zero_grad(set_to_none=True)
        counted = count_flops(model, b, layout)
        rows = cost.layout_components(spec, model.config, st, layout, "fp32")
        analytic = sum(c.flops for c in rows)
        total = counted["total"]
        records.append(
            {
                "preset": name,
                "layout": layout,
                "analytic_flops": analytic,
                "counted_flops": total,
                "rel_error": abs(analytic - total) / total if total else float(analytic != 0),
                "analytic_flops_mask_aware": sum(c.flops_mask_aware for c in rows),
                "requests": batch.num_requests,
                "impressions": batch.num_impressions_total,
            }
        )
        for c in rows:
            cnt = sum(counted["by_module"].get(m, 0) for m in c.modules)
            comps.append(
                {
                    "preset": name,
                    "layout": layout,
                    "name": c.name,
                    "analytic_flops": c.flops,
                    "counted_flops": cnt,
                    "modules": list(c.modules),
                }
            )
    return {"records": records, "components": comps, "model_overrides": list(model_over)}


def validate_storage(name: str, requests: int = 64, seed: int = 0) -> list[dict]:
    """Analytic uncompressed bytes (exact from the batch, and expected from the spec) vs the
    in-memory Arrow bytes workloads.storage.measure writes to Parquet (codec none)."""
    from roo_ref.cost import batch_storage_bytes
    from workloads.generator import generate
    from workloads.presets import get_preset
    from workloads.storage import measure, uncompressed_bytes_per_impression

    spec = get_preset(name)
    batch = generate(spec, requests, seed=seed)
    m = measure(batch, spec, codecs=("none",), orders=("grouped",))
    exact = batch_storage_bytes(batch, spec)
    n = batch.num_impressions_total
    parquet = {
        ("roo" if f["layout"] == "request" else "impression"): f["parquet_uncompressed_bytes"] for f in m["formats"]
    }
    out = []
    for layout, key in (("impression", "impression"), ("roo", "request")):
        meas = m["uncompressed_bytes"][key]
        out.append(
            {
                "preset": name,
                "layout": layout,
                "analytic_bytes": exact[layout],
                "measured_bytes": meas,
                "rel_error": abs(exact[layout] - meas) / meas,
                "expected_bytes": uncompressed_bytes_per_impression(spec, key) * n,
                "parquet_encoded_bytes": parquet.get(layout),
            }
        )
    return out


def _validate(args) -> int:
    from workloads.presets import PRESETS

    names = list(PRESETS) if args.preset == "all" else [args.preset]
    for n in names:
        if n not in PRESETS:
            raise UserError(f"unknown preset {n!r}; choose one of: {', '.join(PRESETS)} or all")
    if args.requests < 1 or args.storage_requests < 1:
        raise UserError("--requests and --storage-requests must be >= 1")
    recs, comps, storage = [], [], []
    for n in names:
        v = validate_preset(n, args.requests, args.full, args.seed)
        recs += v["records"]
        comps += v["components"]
        if not args.no_storage:
            storage += validate_storage(n, args.storage_requests, args.seed)
    max_err = max(r["rel_error"] for r in recs)
    out = {
        "presets": recs,
        "max_rel_error": max_err,
        "components": comps,
        "storage": storage,
        "max_storage_rel_error": max((s["rel_error"] for s in storage), default=None),
        "reduced": not args.full,
    }
    ok = max_err <= 1e-3 and (not storage or out["max_storage_rel_error"] <= 0.05)
    if args.json:
        print(json.dumps(out))
        return 0 if ok else 1
    print(f"{'preset':14s} {'layout':10s} {'analytic FLOP':>16s} {'counted FLOP':>16s} {'rel err':>9s}")
    for r in recs:
        print(
            f"{r['preset']:14s} {r['layout']:10s} {r['analytic_flops']:16d} {r['counted_flops']:16d} "
            f"{r['rel_error']:9.2e}"
        )
    bad = [c for c in comps if c["analytic_flops"] != c["counted_flops"]]
    print(f"components: {len(comps)} compared, {len(bad)} differ")
    for c in bad:
        print(f"  {c['preset']} {c['layout']} {c['name']}: analytic {c['analytic_flops']} counted {c['counted_flops']}")
    for s in storage:
        print(
            f"storage {s['preset']:14s} {s['layout']:10s} analytic {s['analytic_bytes']:.0f} B, "
            f"measured {s['measured_bytes']} B (rel err {s['rel_error']:.2e}); spec expectation "
            f"{s['expected_bytes']:.0f} B"
        )
    print(
        f"max FLOP rel error {max_err:.3g}"
        + (f"; max storage rel error {out['max_storage_rel_error']:.3g}" if storage else "")
    )
    return 0 if ok else 1


def _project(args) -> int:
    from harness.project import project

    spec, cfg, dev = _resolve(args)
    if not args.requests_per_day > 0 or math.isinf(args.requests_per_day):
        raise UserError(f"--requests-per-day {args.requests_per_day} must be > 0")
    if args.gpus < 1:
        raise UserError(f"--gpus {args.gpus} must be >= 1")
    storage = None
    if args.storage:
        try:
            with open(args.storage) as f:
                storage = json.load(f)
            storage = flat_view(storage) if isinstance(storage, dict) else storage
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--storage {args.storage}: cannot read a storage JSON: {e}") from None
        if not isinstance(storage, dict) or not isinstance(storage.get("formats"), list):
            raise UserError(f"--storage {args.storage}: not a `roo-bench storage --json` output (no formats)")
    res = project(spec, cfg, args.requests_per_day, args.gpus, dev, args.dtype, args.power_w, args.bus_bw, storage)
    res["device_key"] = args.device.lower()
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"{spec.name}: {args.requests_per_day:.3g} requests/day on {args.gpus} x {dev.name} ({args.dtype}), "
        f"{res['impressions_per_request']:.2f} impressions/request"
    )
    print(f"{'per day':24s} {'impression':>14s} {'roo':>14s} {'saving':>8s}")
    for key, label in (
        ("gpu_hours_per_day", "GPU-hours"),
        ("storage_tb_per_day", "storage TB (uncompr.)"),
        ("alltoall_tb_per_day", "all-to-all TB"),
        ("energy_kwh_per_day", "energy kWh"),
    ):
        i, r = res["layouts"]["impression"][key], res["layouts"]["roo"][key]
        print(f"{label:24s} {i:14.4g} {r:14.4g} {res['savings'][key]:8.1%}")
    for codec in res["storage_codecs"]:
        i = res["layouts"]["impression"]["storage_tb_per_day_by_codec"][codec]
        r = res["layouts"]["roo"]["storage_tb_per_day_by_codec"][codec]
        if i is not None and r is not None:
            print(f"  storage TB, {codec:28s} {i:10.4g} {r:10.4g} {1 - r / i:8.1%}")
    for lay, fits in res["fits_in_day"].items():
        if not fits:
            print(f"note: {lay} needs {res['layouts'][lay]['wall_hours_per_day']:.1f} h/day on {args.gpus} GPUs")
    return 0
