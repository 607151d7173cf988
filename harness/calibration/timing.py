"""Timing of one kernel-sized call on the device: its kernel time, not the host's issue rate.

A call that takes long (>= `LONG_S` on a first timing, host issue included) is timed eagerly with
CUDA events behind a spin kernel (`torch.cuda._sleep`) twice as long as that first timing: the host
issues the call while the device spins, so the events see the call's kernels back to back and not
the host's issue (a call of many small kernels, such as the embedding update or the HSTU attention's
forward + backward, issues for longer than its kernels run). A short call is captured `reps` times
in a CUDA graph and replayed, so the host's launch cost (which the time model prices separately, as
host terms) does not hide in it. A short call that cannot be
captured (e.g. a non-capturable optimizer step) is timed by the profiler's GPU timeline: the sum
of its kernels' times, again without the host's gaps between them. On the CPU there is no split:
wall time over repeated calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from roo_ref.cost.kernel_classes import EVENTS_TIMED_S

LONG_S = EVENTS_TIMED_S
TIMING = "device"  # the records' `timing`: no host issue inside a table's times
_SPIN_CYCLES = 1 << 22
_cycles_per_s: dict[int, float] = {}


def _wall(fn: Callable[[], object], reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def _events(torch, fn: Callable[[], object], reps: int, spin_cycles: int = 0) -> float:
    """Seconds per call between two events; a `spin_cycles` device spin queued first lets the host
    issue the calls while the device waits, so their issue stays out of the time."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    if spin_cycles:
        torch.cuda._sleep(spin_cycles)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3 / reps


def _spin_rate(torch) -> float:
    """Cycles per second of torch.cuda._sleep on this device (measured once per process)."""
    if id(torch) not in _cycles_per_s:
        _cycles_per_s[id(torch)] = _SPIN_CYCLES / _events(torch, lambda: torch.cuda._sleep(_SPIN_CYCLES), 1)
    return _cycles_per_s[id(torch)]


def _events_ahead(torch, fn: Callable[[], object], reps: int, spin_s: float) -> float:
    """Seconds per call between two events with a `spin_s` spin queued before the first: the
    host issues the calls while the device spins, so their issue stays out of the time."""
    return _events(torch, fn, reps, spin_cycles=int(spin_s * _spin_rate(torch)) + 1)


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

    return _device_seconds(torch, fn, torch.device(device).type == "cuda", reps)


def _device_seconds(torch, fn: Callable[[], object], cuda: bool, reps: int) -> float:
    fn()
    if not cuda:
        first = _wall(fn, 1)
        if first >= 1e-3:
            return statistics.median([first, _wall(fn, 1), _wall(fn, 1)])
        return statistics.median(_wall(fn, max(1, reps // 4)) for _ in range(3))
    first = _events(torch, fn, 1)  # host issue included: at least the call's kernel time
    if first >= LONG_S:
        return statistics.median(_events_ahead(torch, fn, 1, 2 * first) for _ in range(3))
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
