"""`roo-bench calibrate`: measure the matmul and copy roofs of the device at hand."""

from __future__ import annotations

from workloads.records import Kind, emit_flat


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="measure matmul FLOP/s and copy bandwidth on this device")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from harness.devices import calibrate
    from harness.provenance import collect

    res = calibrate(args.device)
    if args.json:
        # the provenance ties the roofs to a host and a session: the report draws a run's roofline
        # with the calibration of the same campaign only
        emit_flat(Kind.CALIBRATION, res, provenance=collect(None, args.device))
    else:
        print(
            f"{res['device_name']}: {res['matmul_dtype']} {res['matmul_n']}^3 matmul "
            f"{res['matmul_flops'] / 1e12:.1f} TFLOP/s; copy {res['copy_bandwidth'] / 1e9:.0f} GB/s"
        )
    return 0
