"""`roo-bench profile --preset NAME | --spec FILE [--model NAME] [--layout both] [--device cuda]
[--dtype bf16] [--steps 5] [--graph] [--set k=v ...] [--trace-dir DIR] [--json]`: torch.profiler over
training steps of each layout — host wall vs GPU busy time per step, launches, syncs, aten ops, and
the top operators/kernels (harness.profile_step). The workload, step data and models are resolved
and built exactly as `roo-bench bench` does.

`--graph` profiles CUDA-graph replays (roo_ref.graph_step): the profiler sees the replayed kernels,
so the busy time stands, but no Python runs in a replay, so the models' roo/* ranges and with them
the split by component are absent (`components_reason` says so)."""

from __future__ import annotations

import os

from harness.commands._args import add_workload_args, check_step_args, emit_step_record, workload_config
from workloads.errors import UserError
from workloads.layout import LAYOUT_CHOICES, Layout
from workloads.records import Kind

GRAPH_COMPONENTS_REASON = (
    "CUDA-graph replay: no Python runs in a replay, so the roo/* ranges are absent; "
    "profile without --graph for the split by component"
)


def register(sub) -> None:
    p = sub.add_parser("profile", help="torch.profiler summary of training steps: where the step time goes")
    add_workload_args(p)
    p.add_argument("--layout", default="both", help=f"{', '.join(LAYOUT_CHOICES)} (default both)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default="fp32", help="fp32 or bf16 (default fp32)")
    p.add_argument("--steps", type=int, default=5, help="profiled steps per layout (default 5)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled steps first (default 3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--graph", action="store_true", help="profile CUDA-graph replays (cuda only)")
    p.add_argument("--top", type=int, default=25, help="operators listed per table (default 25)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model-config or dotted workload-spec override (repeatable)",
    )
    p.add_argument("--trace-dir", default=None, help="also write one Chrome trace per layout here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import torch

    from harness.measure import resolve_workload
    from harness.profile_step import format_summary, profile_steps
    from roo_ref.graph_step import GraphTrainer
    from roo_ref.models import build_model
    from roo_ref.train import Trainer
    from workloads.generator import generate

    layouts, device = check_step_args(args)
    if args.top < 1:
        raise UserError(f"--top {args.top}: must be >= 1")
    w = resolve_workload(args.preset, args.set, args.spec, args.model)  # a mistake here writes nothing
    if args.trace_dir:
        os.makedirs(args.trace_dir, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = w.spec
    req = generate(spec, spec.requests_per_batch, seed=args.seed).to(device)
    out = {
        **workload_config(w),
        "device": device.type,
        "dtype": args.dtype,
        "graph": args.graph,
        "seed": args.seed,
        "steps": args.steps,
        "warmup": args.warmup,
        "impressions_per_step": req.num_impressions_total,
        "requests_per_step": req.num_requests,
        "layouts": {},
    }
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    for layout in layouts:
        batch = req if layout is Layout.ROO else req.to_impressions()
        model = build_model(spec, w.model_preset, w.model_overrides, device=device, seed=args.seed)
        trainer = Trainer(model, layout, amp_bf16=args.dtype == "bf16", seed=args.seed)
        if args.graph:
            trainer = GraphTrainer(trainer)
        batch = trainer.prepare(batch)  # the per-batch bookkeeping, outside the profiled steps
        if args.graph:
            trainer.capture([batch])
        trace = os.path.join(args.trace_dir, f"trace-{w.name}-{layout}.json") if args.trace_dir else None
        s = profile_steps(
            lambda t=trainer, b=batch: t.step(b),
            warmup=args.warmup,
            steps=args.steps,
            cuda=device.type == "cuda",
            trace_path=trace,
            top=args.top,
        )
        if args.graph:
            s["components_reason"] = GRAPH_COMPONENTS_REASON
            trainer.close()
        out["layouts"][str(layout)] = s
        if not args.json:
            print(format_summary(layout, s, args.top))
        del model, trainer, batch
    if args.json:
        emit_step_record(Kind.PROFILE, out, args)
    return 0
