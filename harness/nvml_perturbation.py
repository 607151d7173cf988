"""Does the NVML sampler perturb what it measures? Same workload, sampler off vs on, in one run.

    python -m harness.nvml_perturbation --device cuda [--workload matmul|PRESET] [--json] [--out FILE.jsonl]

Blocks alternate off, on, off, on, ... (so clock and thermal drift hit both conditions alike); each
block is `time_steps` (CUDA events) with the sampler enclosing the timed steps in "on" blocks.
Reported: median step time of each condition, the relative difference on/off - 1 with a bootstrap
interval (harness.timers.ratio_interval), and whether it is under the 1% target. With `--out`, a
`kind="calibration"` record is appended (provenance included) for reports/data/<device>/.

Workloads: `matmul` (a chain of n x n matmuls, bf16 on GPU: steady, compute-bound, the case where a
sampling thread could steal the most launch time relative to the step) or a preset name (the ROO
training step of that preset's reference model).
"""

from __future__ import annotations

import argparse
import json
import sys

from workloads.errors import UserError

TARGET = 0.01


def _matmul_step(device: str, n: int, chain: int):
    import torch

    dt = torch.bfloat16 if device.startswith("cuda") else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=g) / n**0.5
    b = torch.randn(n, n, device=device, dtype=dt, generator=g) / n**0.5

    def step():
        x = a
        for _ in range(chain):
            x = x @ b
        return x

    return step, {"n": n, "chain": chain, "dtype": str(dt).replace("torch.", "")}


def _preset_step(device: str, preset: str, dtype: str):
    from harness.run_point import PointConfig, default_builder
    from workloads.generator import generate

    pc = PointConfig(preset=preset, device=device, dtype=dtype)
    spec = pc.resolve_spec()
    rb = generate(spec, spec.requests_per_batch, seed=0).to(device)
    _, trainer = default_builder(spec, pc, "roo")
    prepared = trainer.prepare(rb)  # the per-batch bookkeeping, outside the measured steps
    return (lambda: trainer.step(prepared)), {"preset": preset, "dtype": dtype, "layout": "roo"}


def measure(
    device: str = "cuda",
    workload: str = "matmul",
    steps: int = 50,
    blocks: int = 6,
    interval_ms: float = 20.0,
    n: int | None = None,
    chain: int = 8,
    dtype: str = "bf16",
) -> dict:
    """Alternating off/on blocks of the same step; returns the comparison (see module docstring)."""
    from harness.nvml import NvmlSampler
    from harness.run_point import check_device
    from harness.timers import Stats, ratio_interval, time_steps

    check_device(device)
    if steps < 5 or blocks < 2 or blocks % 2:
        raise UserError(f"steps={steps} must be >= 5 and blocks={blocks} an even number >= 2")
    cuda = device.startswith("cuda")
    if workload == "matmul":
        step, desc = _matmul_step(device, n or (4096 if cuda else 256), chain)
    else:
        step, desc = _preset_step(device, workload, dtype)
    samples: dict[str, list[float]] = {"off": [], "on": []}
    n_samples, reason, available = 0, None, False
    for i in range(blocks):
        cond = "off" if i % 2 == 0 else "on"
        sampler = NvmlSampler(device, interval_ms, enabled=cond == "on")
        try:
            t = time_steps(
                step,
                warmup=5 if i == 0 else 1,
                steps=steps,
                device=device,
                region=(lambda s=sampler: s) if cond == "on" else None,
            )
        finally:
            sampler.close()
        samples[cond].extend(t.samples_ms)
        if cond == "on":
            summ = sampler.summary(steps)
            n_samples += summ["n_samples"]
            available, reason = summ["available"], summ["reason"]
    ci = ratio_interval(samples["on"], samples["off"], seed=0)
    rel = ci["ratio"] - 1.0
    return {
        "device": device,
        "workload": workload,
        "workload_detail": desc,
        "interval_ms": interval_ms,
        "steps_per_block": steps,
        "blocks": blocks,
        "off_ms": Stats.from_samples(samples["off"]).to_dict(),
        "on_ms": Stats.from_samples(samples["on"]).to_dict(),
        "rel_diff": rel,
        "rel_diff_ci": [None if ci["lo"] is None else ci["lo"] - 1, None if ci["hi"] is None else ci["hi"] - 1],
        "ci_method": ci["method"],
        "target": TARGET,
        "within_target": abs(rel) < TARGET,
        "nvml_available": available,
        "nvml_reason": reason,
        "nvml_samples": n_samples,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.nvml_perturbation", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--workload", default="matmul", help="matmul or a preset name (default matmul)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per block (default 50)")
    p.add_argument("--blocks", type=int, default=6, help="alternating off/on blocks, even (default 6)")
    p.add_argument("--interval-ms", type=float, default=20.0)
    p.add_argument("--n", type=int, default=None, help="matmul size (default 4096 on GPU, 256 on CPU)")
    p.add_argument("--dtype", default="bf16", help="for a preset workload: fp32 or bf16")
    p.add_argument("--out", default=None, help="append a kind=calibration record to this JSONL file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    try:
        res = measure(args.device, args.workload, args.steps, args.blocks, args.interval_ms, args.n, dtype=args.dtype)
    except UserError as e:
        print(f"nvml_perturbation: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        from harness import provenance
        from harness.results import append_record, make_record

        cfg = {
            "measurement": "nvml_perturbation",
            "device": args.device,
            "workload": args.workload,
            "steps": args.steps,
            "blocks": args.blocks,
            "interval_ms": args.interval_ms,
            "n": args.n,
        }
        append_record(args.out, make_record("calibration", cfg, res, provenance=provenance.collect(0, args.device)))
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['workload']} on {res['device']}: sampler off {res['off_ms']['median']:.3f} ms, "
            f"on {res['on_ms']['median']:.3f} ms -> {100 * res['rel_diff']:+.2f}% "
            f"({'within' if res['within_target'] else 'OVER'} the {100 * TARGET:.0f}% target; "
            f"{res['nvml_samples']} NVML samples"
            f"{'' if res['nvml_available'] else ', NVML: ' + str(res['nvml_reason'])})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
