"""`roo-bench calibrate`: measure the device at hand: the matmul and copy roofs, and the kernel
classes and host terms the step-time model uses (harness.calibration; `--roofs-only` skips them)."""

from __future__ import annotations

from workloads.records import Kind, emit_flat


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="measure matmul FLOP/s, copy bandwidth and the step-time model's kernel classes"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--roofs-only", action="store_true", help="only the two roofs (seconds), no kernel classes")
    p.add_argument(
        "--host-models",
        action="store_true",
        help="also time each model preset's own eager step at a few requests for the host cost per "
        "op (builds every preset's model and compiles its kernels: minutes on a GPU)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from harness.calibration.host import MODEL_PRESETS
    from harness.devices import calibrate
    from harness.provenance import collect
    from workloads.errors import UserError

    if args.host_models and args.roofs_only:
        raise UserError("--host-models prices the kernel classes' host term; it cannot go with --roofs-only")
    models = MODEL_PRESETS if args.host_models else ()
    res = calibrate(args.device, kernels=not args.roofs_only, host_models=models)
    if args.json:
        # the provenance ties the roofs to a host and a session: the report draws a run's roofline
        # with the calibration of the same campaign only
        emit_flat(Kind.CALIBRATION, res, provenance=collect(None, args.device))
    else:
        print(
            f"{res['device_name']}: {res['matmul_dtype']} {res['matmul_n']}^3 matmul "
            f"{res['matmul_flops'] / 1e12:.1f} TFLOP/s; copy {res['copy_bandwidth'] / 1e9:.0f} GB/s"
        )
        kc = res.get("kernel_classes")
        if kc:
            h = kc["host"]
            print(
                f"kernel classes in {sum(kc['benchmark']['seconds'].values()):.1f} s; host: "
                f"{h['per_op_s'] * 1e6:.1f} us/op (eager step), {h['per_launch_s'] * 1e6:.1f} us/launch, "
                f"{h['graph_launch_s'] * 1e6:.1f} us/graph replay, {h['per_sync_s'] * 1e6:.1f} us/sync, "
                f"{h.get('per_triton_launch_s', 0.0) * 1e6:.1f} us/Triton launch"
            )
    return 0
