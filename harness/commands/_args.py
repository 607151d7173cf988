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
    if getattr(args, "graph", False) and args.device != "cuda":
        raise UserError(f"--graph captures CUDA graphs and needs --device cuda (got --device {args.device})")
    return parse_layouts(args.layout), torch.device(args.device)


def add_workload_args(p) -> None:
    """`--preset NAME | --spec FILE`, `--model NAME` and `--set KEY=VALUE` (bench, profile)."""
    p.add_argument("--preset", default=None, help="workload + model preset (see `roo-bench presets`)")
    p.add_argument(
        "--spec", default=None, metavar="FILE", help="workload spec file (TOML/JSON, e.g. from `roo-bench fit`)"
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="model preset: tiny, retrieval, early-ranking, late-ranking, hstu-ranking "
        "(default: the workload's own; a spec file not named like one needs it)",
    )


def workload_config(w) -> dict:
    """The keys of a harness.measure.Workload a bench/profile record carries as its inputs."""
    return {
        "preset": w.preset,
        "spec_file": w.spec_file,
        "workload": w.name,
        "spec": w.spec.to_dict(),
        "spec_overrides": w.spec_overrides,
        "model_preset": w.model_preset,
        "model_overrides": w.model_overrides,
        "model": w.model_config.to_dict(),
    }


def step_provenance(seed: int, device: str, graph: bool = False) -> dict:
    """The provenance of a bench/profile record (harness.provenance.collect, with the kernel options
    of the ROO_HSTU_* variables in force, and whether the steps were CUDA-graph replays)."""
    from harness.measure import kernel_options_from_env
    from harness.provenance import collect

    return {**collect(seed, device, kernel_options=kernel_options_from_env()), "cuda_graph": graph}


# The inputs of a bench/profile run, its record's config (the hash tells two runs apart, a spec
# file's content included); everything else is a measurement.
STEP_CONFIG_KEYS = (
    "preset",
    "spec_file",
    "workload",
    "spec",
    "spec_overrides",
    "model_preset",
    "model_overrides",
    "model",
    "device",
    "dtype",
    "graph",
    "seed",
    "steps",
    "warmup",
)


def emit_step_record(kind, res: dict, args) -> None:
    """Print a bench/profile result as a record of `kind`: its inputs as config, the rest as metrics."""
    from workloads.records import emit

    # graph only when on: eager records keep the config hashes they had before the option
    config = {k: res[k] for k in STEP_CONFIG_KEYS if k != "graph" or res.get("graph")}
    metrics = {k: v for k, v in res.items() if k not in STEP_CONFIG_KEYS}
    emit(kind, config, metrics, provenance=step_provenance(args.seed, args.device, bool(res.get("graph"))))
