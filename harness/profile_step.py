"""Where a training step's time goes: torch.profiler over a few steps of one layout.

`profile_layout(...)` runs warm-up steps, then profiles `steps` steps (CPU + CUDA activities) and
returns a summary per step:
- `wall_ms`: host wall time per step (synchronized at the end of the profiled region);
- `device_busy_ms`: the sum of GPU kernel + memcpy/memset time (what the GPU actually did);
- `launches`, `syncs`: CUDA launch and synchronizing runtime calls (cudaStreamSynchronize,
  cudaDeviceSynchronize, blocking cudaMemcpy) — a host-bound step shows wall >> device_busy;
- `aten_ops`: how many aten operators ran (eager dispatch cost scales with it);
- `top_device` / `top_cpu`: the operators and kernels with the most self time.

The numbers come from the profiler, which itself adds overhead per op (a few µs): use it to find
where the time goes, and harness.run_point (CUDA events, no profiler) for the step time itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LAUNCH_NAMES = (
    "cudaLaunchKernel",
    "cuLaunchKernel",
    "cudaLaunchKernelExC",
    "cuLaunchKernelEx",
    "cudaLaunchCooperativeKernel",
)
SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def self_device_us(evt) -> float:
    """Self GPU time (µs) of a profiler event or key average; 0 where it has none. torch >= 2.4
    names it self_device_time_total, older releases self_cuda_time_total."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        v = getattr(evt, name, None)
        if v is not None:
            return float(v)
    return 0.0


def summarize(prof, steps: int, wall_s: float, top: int = 25) -> dict:
    """A per-step summary of a finished torch.profiler.profile."""
    avgs = prof.key_averages()
    launches = sum(e.count for e in avgs if e.key in LAUNCH_NAMES)
    syncs = sum(e.count for e in avgs if e.key in SYNC_NAMES)
    aten = sum(e.count for e in avgs if e.key.startswith("aten::"))
    # device-side events: kernels, memcpy, memset — but not the GPU-timeline copies of user
    # annotations (e.g. "Optimizer.step#...", which span their kernels and would count them twice)
    device_us = sum(
        float(e.device_time_total or 0.0)
        for e in prof.events()
        if str(getattr(e, "device_type", "")).endswith("CUDA") and not getattr(e, "is_user_annotation", False)
    )
    rows_dev = sorted(avgs, key=self_device_us, reverse=True)[:top]
    rows_cpu = sorted(avgs, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]

    def row(e) -> dict:
        return {
            "name": e.key,
            "calls_per_step": e.count / steps,
            "self_device_ms_per_step": self_device_us(e) / steps / 1e3,
            "self_cpu_ms_per_step": e.self_cpu_time_total / steps / 1e3,
        }

    return {
        "steps": steps,
        "wall_ms": wall_s / steps * 1e3,
        "device_busy_ms": device_us / steps / 1e3,
        "launches": launches / steps,
        "syncs": syncs / steps,
        "aten_ops": aten / steps,
        "top_device": [row(e) for e in rows_dev if self_device_us(e) > 0],
        "top_cpu": [row(e) for e in rows_cpu],
    }


def profile_steps(
    step: Callable[[], object], *, warmup: int, steps: int, cuda: bool, trace_path: str | None = None, top: int = 25
) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts, record_shapes=False) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall = time.perf_counter() - t0
    if trace_path:
        prof.export_chrome_trace(trace_path)
    return summarize(prof, steps, wall, top)


def format_summary(layout: str, s: dict, top: int = 12) -> str:
    lines = [
        f"== {layout}: wall {s['wall_ms']:.2f} ms/step, GPU busy {s['device_busy_ms']:.2f} ms/step, "
        f"{s['launches']:.0f} launches, {s['syncs']:.0f} syncs, {s['aten_ops']:.0f} aten ops per step"
    ]
    if s["top_device"]:
        lines.append("   top self GPU time (ms/step, calls/step):")
        lines += [
            f"   {r['self_device_ms_per_step']:9.3f} {r['calls_per_step']:7.1f}  {r['name'][:100]}"
            for r in s["top_device"][:top]
        ]
    lines.append("   top self CPU time (ms/step, calls/step):")
    lines += [
        f"   {r['self_cpu_ms_per_step']:9.3f} {r['calls_per_step']:7.1f}  {r['name'][:100]}" for r in s["top_cpu"][:top]
    ]
    return "\n".join(lines)
