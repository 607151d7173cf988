"""Timing of one kernel-sized call on the device: its kernel time, not the host's issue rate.

A call that takes long (>= `LONG_S`) is timed eagerly with CUDA events over a few calls; a short
one is captured `reps` times in a CUDA graph and replayed, so the host's launch cost (which the
time model prices separately, as host terms) does not hide in it. A short call that cannot be
captured (e.g. a non-capturable optimizer step) is timed by the profiler's GPU timeline: the sum
of its kernels' times, again without the host's gaps between them. On the CPU there is no split:
wall time over repeated calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

LONG_S = 300e-6


def _wall(fn: Callable[[], object], reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _events(torch, fn: Callable[[], object], reps: int) -> float:
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3 / reps


def _graph(torch, fn: Callable[[], object], reps: int) -> float | None:
    """Seconds per call replaying a graph of `reps` calls (None: the call cannot be captured)."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(reps):
                fn()
    except Exception:  # noqa: BLE001 - any capture failure: time it eagerly instead
        torch.cuda.synchronize()
        return None
    g.replay()
    times = [_events(torch, g.replay, 1) / reps for _ in range(3)]
    del g
    return statistics.median(times)


def _profiled(torch, fn: Callable[[], object], reps: int) -> float:
    """Seconds of GPU work (kernels, copies, fills) per call, from the profiler's GPU timeline."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    us = sum(
        float(e.device_time_total or 0.0)
        for e in prof.events()
        if str(getattr(e, "device_type", "")).endswith("CUDA") and not getattr(e, "is_user_annotation", False)
    )
    return us / 1e6 / reps


def device_seconds(fn: Callable[[], object], device, reps: int = 20) -> float:
    """Median seconds of one call of `fn` on `device` (after one untimed warm-up call)."""
    import torch

    fn()
    if torch.device(device).type != "cuda":
        first = _wall(fn, 1)
        if first >= 1e-3:
            return statistics.median([first, _wall(fn, 1), _wall(fn, 1)])
        return statistics.median(_wall(fn, max(1, reps // 4)) for _ in range(3))
    first = _events(torch, fn, 1)
    if first >= LONG_S:
        return statistics.median([first] + [_events(torch, fn, 1) for _ in range(2)])
    t = _graph(torch, fn, reps)
    if t is not None:
        return t
    try:
        t = _profiled(torch, fn, reps)
    except Exception:  # noqa: BLE001 - no profiler here: events, host gaps included
        t = 0.0
    return t if t > 0 else statistics.median(_events(torch, fn, reps) for _ in range(3))


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
