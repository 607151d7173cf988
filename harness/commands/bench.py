"""`roo-bench bench --preset NAME --layout impression|roo|both [--device cpu|cuda] [--steps N]
[--dtype fp32|bf16] [--set k=v ...] [--json]`: train steps in each layout and report throughput.

Both layouts train on the SAME impressions per step: the impression batch is `to_impressions()` of
the request batch, the model starts from the same weights (same seed), the same optimizer and
dtype. A simple timed loop (warm-up, synchronize, perf_counter per step, median); the harness's
run_point replaces these internals with CUDA-event timing.

`--set key=value`: keys of the model config (roo_ref.model_presets.ModelConfig, e.g.
hstu_layers=2) go to the model; any other dotted key goes to the workload spec (e.g.
requests_per_batch=8, history.length.max=64). `--dtype bf16` = autocast bf16 with fp32 master
weights (mixed-precision training).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time

import torch

from roo_ref.model_presets import ModelConfig
from roo_ref.models import build_model, check_compatible, model_config_for
from roo_ref.train import Trainer
from workloads.errors import SpecError, UserError
from workloads.generator import generate
from workloads.presets import get_preset

LAYOUT_CHOICES = ("impression", "roo", "both")
DTYPES = ("fp32", "bf16")


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="time training steps of a preset model in the impression and ROO layouts"
    )
    p.add_argument("--preset", required=True, help="workload + model preset (see `roo-bench presets`)")
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
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model-config key or a dotted workload-spec key (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def split_overrides(spec_dict: dict, assignments: list[str]) -> tuple[list[str], list[str]]:
    """(model overrides, spec overrides); an unknown top-level key is one clear error."""
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    model, spec = [], []
    for a in assignments:
        if "=" not in a:
            raise SpecError(f"--set {a!r}: expected key=value, e.g. hstu_layers=2 or history.length.max=64")
        key = a.split("=", 1)[0].strip()
        if key in model_keys:
            model.append(a)
        elif key.split(".")[0] in spec_dict:
            spec.append(a)
        else:
            raise SpecError(
                f"--set {key}: unknown key; model keys: {', '.join(sorted(model_keys))}; "
                f"workload keys: {', '.join(sorted(spec_dict))}"
            )
    return model, spec


def resolve_preset(preset: str, sets: list[str]):
    """(spec, model config, model overrides, spec overrides) of a preset with `--set` overrides,
    checked compatible before any data is generated."""
    base = get_preset(preset)
    model_sets, spec_sets = split_overrides(base.to_dict(), sets)
    spec = base.with_overrides(spec_sets) if spec_sets else base
    cfg = model_config_for(spec, preset, model_sets)
    check_compatible(spec, cfg)
    return spec, cfg, model_sets, spec_sets


def _check_args(args) -> tuple[list[str], torch.device]:
    if args.layout not in LAYOUT_CHOICES:
        raise UserError(f"--layout {args.layout!r}; allowed: {', '.join(LAYOUT_CHOICES)}")
    if args.dtype not in DTYPES:
        raise UserError(f"--dtype {args.dtype!r}; allowed: {', '.join(DTYPES)}")
    if args.steps < 1:
        raise UserError(f"--steps {args.steps}: must be >= 1")
    if args.warmup < 0:
        raise UserError(f"--warmup {args.warmup}: must be >= 0")
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"--device {args.device!r}; allowed: cpu, cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda: no CUDA device is available here (torch.cuda.is_available() is False); "
            "use --device cpu"
        )
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: must be >= 0")
    layouts = ["impression", "roo"] if args.layout == "both" else [args.layout]
    return layouts, torch.device(args.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    preset: str,
    layouts: list[str],
    device: torch.device,
    steps: int,
    warmup: int,
    dtype: str,
    sets: list[str],
    seed: int = 0,
) -> dict:
    spec, cfg, model_sets, spec_sets = resolve_preset(preset, sets)
    if cfg.attention_backend == "triton" and cfg.arch == "hstu" and device.type != "cuda":
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            raise UserError("attention_backend=triton needs --device cuda (or TRITON_INTERPRET=1 on CPU)")
    # a few distinct request batches, cycled; both layouts see exactly the same ones
    n_batches = min(warmup + steps, 4)
    req = [generate(spec, spec.requests_per_batch, seed=seed + i).to(device) for i in range(n_batches)]
    per_layout = {"impression": [b.to_impressions() for b in req], "roo": req}
    out = {}
    for layout in layouts:
        model = build_model(spec, preset, model_sets, device=device, seed=seed)
        trainer = Trainer(model, layout, amp_bf16=(dtype == "bf16"), seed=seed)
        batches = per_layout[layout]
        for i in range(warmup):
            trainer.step(batches[i % n_batches])
        _sync(device)
        times, imps, reqs = [], [], []
        for i in range(steps):
            b = req[(warmup + i) % n_batches]
            t0 = time.perf_counter()
            loss = trainer.step(batches[(warmup + i) % n_batches])
            _sync(device)
            times.append(time.perf_counter() - t0)
            imps.append(b.num_impressions_total)
            reqs.append(b.num_requests)
        if not torch.isfinite(loss).all():
            raise UserError(f"layout {layout}: the loss is not finite ({float(loss)}); check the overrides")
        med = statistics.median(times)
        out[layout] = {
            "impressions_per_s": statistics.fmean(imps) / med,
            "requests_per_s": statistics.fmean(reqs) / med,
            "step_ms_median": med * 1e3,
            "step_ms_min": min(times) * 1e3,
            "impressions_per_step": statistics.fmean(imps),
            "requests_per_step": statistics.fmean(reqs),
            "steps": steps,
            "warmup": warmup,
        }
        del model, trainer
    speedup = None
    if "impression" in out and "roo" in out:
        speedup = out["roo"]["impressions_per_s"] / out["impression"]["impressions_per_s"]
    return {
        "preset": preset,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype,
        "model": cfg.to_dict(),
        "spec_overrides": spec_sets,
        "layouts": out,
        "speedup": speedup,
    }


def _run(args) -> int:
    layouts, device = _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = bench(args.preset, layouts, device, args.steps, args.warmup, args.dtype, args.set, args.seed)
    if args.json:
        print(json.dumps(res))
        return 0
    for layout, r in res["layouts"].items():
        print(
            f"{res['preset']} {layout:>10}: {r['impressions_per_s']:12.1f} impressions/s "
            f"{r['requests_per_s']:10.1f} requests/s  "
            f"step {r['step_ms_median']:.2f} ms (median of {r['steps']})"
        )
    if res["speedup"] is not None:
        print(f"ROO / impression throughput: {res['speedup']:.2f}x")
    return 0
