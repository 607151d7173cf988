"""Cost-model commands: `model` (per-component table), `validate` (analytic vs FlopCounterMode and
vs measured storage), `project` (requests/day -> GPU-hours, TB, kWh). The work is roo_ref.cost's;
this module parses arguments and prints. See docs/cost-model.md.

`model` and `project` price a datasheet entry (`--hardware h100`); `--device` names a torch device
(cpu | cuda) in the commands that run one, so here it is refused with a pointer to `--hardware`."""

from __future__ import annotations

import argparse
import json
import math

from roo_ref.hardware import DEVICES
from workloads.errors import UserError
from workloads.records import Kind, emit_flat, flat_view


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
    p.add_argument(
        "--hardware", default="h100", help=f"datasheet entry to price on: {' | '.join(DEVICES)} (default h100)"
    )
    p.add_argument("--device", dest="torch_device", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bf16", help="bf16 | fp32 (default bf16)")
    p.add_argument(
        "--calibration",
        default=None,
        help="a `roo-bench calibrate --json` file: step times by its kernel classes (default: the roofs)",
    )
    p.add_argument(
        "--time-error",
        default=None,
        metavar="FILE",
        help="a `roo-bench validate-time --json` file: its step errors become the step's interval",
    )


def _provenance(seed: int | None) -> dict:
    """Which code, host and versions computed a record (the cost model and the counting run on this
    host's CPU); collected only for `--json`, so the text output stays quick."""
    from harness.provenance import collect

    return collect(seed, "cpu")


def _resolve(args):
    from roo_ref.cost import check_priceable, get_device
    from roo_ref.models import model_config_for
    from workloads.presets import resolve_spec

    if args.torch_device is not None:
        raise UserError(
            f"--device is not an option of `{args.command}`: the datasheet entry to price on is "
            f"--hardware {' | '.join(DEVICES)} (--device names a torch device in bench, sweep and comm)"
        )
    spec = resolve_spec(args.preset, args.spec, args.overrides)
    cfg = model_config_for(spec, args.model_preset, args.model_overrides)
    dev = get_device(args.hardware)
    if args.dtype not in ("bf16", "fp32"):
        raise UserError(f"--dtype {args.dtype!r}; allowed: bf16, fp32")
    check_priceable(spec, cfg)
    return spec, cfg, dev


def _time_model(args, spec, cfg, dev, requests, batch) -> dict:
    """The kernel-class time model's block: the --calibration's classes, else the roofs of `dev`."""
    from roo_ref.cost.report import time_model_report
    from roo_ref.cost.time_model import from_device_spec, load_calibration

    tm = load_calibration(args.calibration) if args.calibration else from_device_spec(dev)
    error = None
    if args.time_error:
        try:
            with open(args.time_error) as f:
                v = flat_view(json.load(f))
            error = v["time_model"]["summary"]["step"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"--time-error {args.time_error}: not a validate-time --json output ({e})") from None
    return time_model_report(spec, cfg, tm, args.dtype, requests, batch, dev.peak_flops(args.dtype), error)


def _print_time_model(tmr: dict) -> None:
    err = tmr["validated_error"]
    note = "not validated" if not err else f"validated geomean |error| {err['geomean_abs_error']:.1%}"
    print(f"step-time model ({tmr['source']}; {note}):")
    for lay, t in tmr["layouts"].items():
        iv = t.get("step_ms_interval")
        span = f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""
        mfu = "n/a" if t["mfu"] is None else f"{t['mfu']:.1%}"
        print(
            f"  {lay:10s} step {t['step_ms']:.3f} ms{span} (device {t['device_ms']:.3f}, host "
            f"{t['host_ms']:.3f}), GPU busy {t['device_busy_share']:.0%}, MFU {mfu}"
        )
    print(f"  predicted ROO speedup {tmr['predicted_speedup']:.2f}x")


def _model(args) -> int:
    from roo_ref.cost import model_report

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
        args.hardware.lower(),
    )
    rep["time_model"] = _time_model(args, spec, cfg, dev, None if args.exact else args.requests, batch)
    if args.json:
        emit_flat(Kind.MODEL, rep, provenance=_provenance(spec.seed if args.seed is None else args.seed))
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
    _print_time_model(rep["time_model"])
    return 0


def _validate(args) -> int:
    from roo_ref.cost import validate_all

    out, ok = validate_all(args.preset, args.requests, args.storage_requests, args.full, not args.no_storage, args.seed)
    if args.json:
        emit_flat(Kind.VALIDATE, out, provenance=_provenance(args.seed))
        return 0 if ok else 1
    recs, comps, storage = out["presets"], out["components"], out["storage"]
    max_err = out["max_rel_error"]
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
    from roo_ref.cost import project

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
    res["device_key"] = args.hardware.lower()
    res["time_model"] = tmr = _time_model(args, spec, cfg, dev, None, None)
    per_step_h = args.requests_per_day / tmr["requests_per_step"] / 3600 / 1e3
    for t in tmr["layouts"].values():  # GPU-hours/day at the spec's batch per GPU, by this model
        t["gpu_hours_per_day"] = t["step_ms"] * per_step_h
        if t.get("step_ms_interval"):
            t["gpu_hours_per_day_interval"] = [x * per_step_h for x in t["step_ms_interval"]]
    if args.json:
        emit_flat(Kind.PROJECT, res, provenance=_provenance(spec.seed))
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
    tl = tmr["layouts"]
    print(
        f"{'GPU-hours (time model)':24s} {tl['impression']['gpu_hours_per_day']:14.4g} "
        f"{tl['roo']['gpu_hours_per_day']:14.4g} {1 - 1 / tmr['predicted_speedup']:8.1%}  ({tmr['source']})"
    )
    for lay, fits in res["fits_in_day"].items():
        if not fits:
            print(f"note: {lay} needs {res['layouts'][lay]['wall_hours_per_day']:.1f} h/day on {args.gpus} GPUs")
    return 0
