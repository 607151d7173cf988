"""Arguments shared by the training-step commands (`bench`, `profile`): their checks, one line each.

Not a command: harness.cli skips modules named `_*` when it discovers the commands."""

from __future__ import annotations

from harness.measure import DTYPES
from workloads.errors import UserError
from workloads.layout import LAYOUT_CHOICES, Layout, parse_layouts


def check_step_args(args) -> tuple[tuple[Layout, ...], object]:
    """(layouts, torch.device) of a bench/profile command line; every bad value is one UserError."""
    if str(args.layout).strip().lower() not in (*LAYOUT_CHOICES, "request"):
        raise UserError(f"--layout {args.layout!r}; allowed: {', '.join(LAYOUT_CHOICES)}")
    if args.dtype not in DTYPES:
        raise UserError(f"--dtype {args.dtype!r}; allowed: {', '.join(DTYPES)}")
    if args.steps < 1:
        raise UserError(f"--steps {args.steps}: must be >= 1")
    if args.warmup < 0:
        raise UserError(f"--warmup {args.warmup}: must be >= 0")
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"--device {args.device!r}; allowed: cpu, cuda")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); use --device cpu"
        )
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: must be >= 0")
    return parse_layouts(args.layout), torch.device(args.device)
